"""Scoring with a trained model: the champion scores every active subscriber as of a day.

`rescore(store, as_of, model)` builds the features of the store's active subscribers with the
model's own feature definition and scores them (`serving.scoring.score`), one subscriber
partition at a time: each partition's features are scored where they were built (in this
process, or on a dask worker) and only its scores and the drift bin counts of its features
travel back. The job that writes the scores
file and syncs it is `lapse.jobs.rescore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features import schema as s
from features.build import Progress
from features.cluster import Workplace
from features.from_store import (
    check_span,
    check_store,
    nobody_active,
    partition_features,
    plan_partitions,
)
from features.settings import FeatureConfig
from serving.scoring import score
from training.drift import DriftReport, feature_counts, stability_of_counts

__all__ = ["MAX_STALE_DAYS", "RescoreResult", "rescore"]

#: Days the newest stored event may lag `as_of` before rescoring refuses (a stalled ingest).
MAX_STALE_DAYS = 7.0


@dataclass(frozen=True)
class RescoreResult:
    """A scores frame and what it took: events read and the active subscribers found; the
    drift of the scored population from the model's training data."""

    scores: pd.DataFrame
    as_of: pd.Timestamp
    events: int
    drift: DriftReport
    partitions: int = 1
    ran_on: str = "in-process"
    dashboard: str | None = None


@dataclass(frozen=True)
class PartitionScores:
    """One partition's scores and the bin counts of its features against the model's drift
    reference (counts add up over partitions; the features stay where they were built)."""

    scores: pd.DataFrame
    counts: dict[str, np.ndarray]


def score_partition(
    index: int, *, store: str, as_of: pd.Timestamp, count: int, model
) -> PartitionScores:
    """The scores of partition ``index`` of ``count``: its features, built with the model's
    definition, scored where they were built (a task for ``Workplace.map``)."""
    config = model.feature_definition
    features = partition_features(index, store=store, as_of=as_of, config=config, count=count)
    if not len(features):
        return PartitionScores(pd.DataFrame(), {})
    return PartitionScores(score(model, features), feature_counts(model.drift_reference, features))


def rescore(
    store: str | Path,
    as_of: date | datetime | str | pd.Timestamp,
    model,
    max_stale_days: float = MAX_STALE_DAYS,
    progress: Progress | None = None,
    psi_threshold: float = 0.2,
    where: Workplace | None = None,
    split: FeatureConfig | None = None,
    drift_exempt: Sequence[str] = (),
) -> RescoreResult:
    """Score every subscriber active at `as_of` from the events stored before it, with the
    features the model was trained on, and measure their drift (PSI) from the model's training
    data; refuses (StaleStoreError) when the newest of those events is more than
    `max_stale_days` older (the store was not fed). The work is split into subscriber
    partitions as `split` says (`features.max_memory_gib`, `partitions`; default: the
    defaults) and runs at `where` (default: this process). Features in `drift_exempt` are
    reported but never flagged (`monitoring.drift_exempt`)."""
    from features.timeline import to_timestamp

    when = to_timestamp(as_of)
    where = where or Workplace("in-process")
    config = model.feature_definition
    check_store(store)  # before any progress is shown
    report = progress or (lambda stage, done, total: None)
    report("load", 0, 1)
    events, first, last = check_span(store, when, config, max_stale_days)
    report("load", 1, 1)
    count = plan_partitions(store, split or FeatureConfig(), where)
    parts: list[pd.DataFrame] = []
    counts: dict[str, np.ndarray] = {}
    tasks = where.map(
        score_partition, range(count), store=str(store), as_of=when, count=count, model=model
    )
    for i, part in enumerate(tasks):
        if len(part.scores):  # a partition without active subscribers scores nobody
            parts.append(part.scores)
            for name, c in part.counts.items():
                counts[name] = counts[name] + c if name in counts else c
        report("partitions", i + 1, count)
    if not parts:
        raise nobody_active(store, when, events, first, last)
    scores = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        key = list(s.SUBSCRIBER_INDEX)
        scores = scores.sort_values(key, kind="stable", ignore_index=True)
    drift = stability_of_counts(
        model.drift_reference,
        counts,
        len(scores),
        scores[s.CHURN_PROBABILITY].to_numpy(),
        psi_threshold,
        drift_exempt,
    )
    return RescoreResult(scores, when, events, drift, count, where.label, where.dashboard)
