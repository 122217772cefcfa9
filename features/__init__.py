"""features package."""

from features.build import build_features
from features.labels import churn_labels
from features.snapshots import snapshots
from features.ingest.store import load_events, load_quarantine
from features.timeline import FeatureConfig, FeatureInputError

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


def __getattr__(name: str):
    """Import the dask entry point only when asked for (dask takes a second to import)."""
    if name == "build_features_distributed":
        from features.distributed import build_features_distributed

        return build_features_distributed
    raise AttributeError(f"module 'features' has no attribute {name!r}")
