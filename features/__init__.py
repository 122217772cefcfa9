"""Lifecycle features and churn labels from the canonical event store, at any cut-off.

``from features import build_features, churn_labels, snapshots, load_events, ...``: the names
are imported on first use, so ``import features.settings`` (the CLI's start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from base import lazy_names

if TYPE_CHECKING:
    from features.build import build_features
    from features.distributed import build_features_distributed
    from features.ingest.store import load_events, load_quarantine
    from features.labelled import snapshots
    from features.labels import churn_labels
    from features.settings import FeatureConfig
    from features.timeline import FeatureInputError

_HOMES = {
    "FeatureConfig": "features.settings",
    "FeatureInputError": "features.timeline",
    "build_features": "features.build",
    "build_features_distributed": "features.distributed",
    "churn_labels": "features.labels",
    "load_events": "features.ingest.store",
    "load_quarantine": "features.ingest.store",
    "snapshots": "features.labelled",
}
__all__ = [
    "FeatureConfig",
    "FeatureInputError",
    "build_features",
    "build_features_distributed",
    "churn_labels",
    "load_events",
    "load_quarantine",
    "snapshots",
]


__getattr__ = lazy_names(__name__, _HOMES)
