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
from serving.scoring import score

__all__ = ["MAX_STALE_DAYS", "RescoreResult", "rescore"]

#: Days the newest stored event may lag `as_of` before rescoring refuses (a stalled ingest).
MAX_STALE_DAYS = 7.0


@dataclass(frozen=True)
class RescoreResult:
    """A scores frame and what it took: events read and the active subscribers found."""

    scores: pd.DataFrame
    as_of: pd.Timestamp
    events: int


def rescore(
    store: str | Path,
    as_of: date | datetime | str | pd.Timestamp,
    model,
    max_stale_days: float = MAX_STALE_DAYS,
    progress: Progress | None = None,
) -> RescoreResult:
    """Score every subscriber active at `as_of` from the events stored before it, with the
    features the model was trained on; refuses (StaleStoreError) when the newest of those
    events is more than `max_stale_days` older (the store was not fed)."""
    built = store_features(
        store, as_of, model.feature_definition, progress=progress, max_stale_days=max_stale_days
    )
    return RescoreResult(score(model, built.frame), built.as_of, built.events)
