"""Scoring with a trained model: the champion scores every active subscriber as of a day.

`rescore(store, as_of, model)` builds the features of the store's active subscribers with the
model's own feature definition and scores them (`serving.scoring.score`). The job that
writes the scores file and syncs it is `lapse.jobs.rescore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from features.build import Progress
from features.from_store import store_features
from features.schema import CHURN_PROBABILITY
from serving.scoring import score
from training.drift import DriftReport, population_stability

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


def rescore(
    store: str | Path,
    as_of: date | datetime | str | pd.Timestamp,
    model,
    max_stale_days: float = MAX_STALE_DAYS,
    progress: Progress | None = None,
    psi_threshold: float = 0.2,
) -> RescoreResult:
    """Score every subscriber active at `as_of` from the events stored before it, with the
    features the model was trained on, and measure their drift (PSI) from the model's training
    data; refuses (StaleStoreError) when the newest of those events is more than
    `max_stale_days` older (the store was not fed)."""
    built = store_features(
        store, as_of, model.feature_definition, progress=progress, max_stale_days=max_stale_days
    )
    scores = score(model, built.frame)
    drift = population_stability(
        model.drift_reference, built.frame, scores[CHURN_PROBABILITY].to_numpy(), psi_threshold
    )
    return RescoreResult(scores, built.as_of, built.events, drift)
