"""Scoring with a trained model: the champion scores every active subscriber as of a day.

`score(model, features)` is the pure part (a feature frame in, a scores frame out: the DESIGN.md
scores-file contract plus the platform); `rescore(store, as_of, model)` builds the features of the
store's active subscribers with the model's own feature definition and scores them. The job that
writes the scores file and syncs it is `lapse.jobs.rescore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from base import LapseError
from features import schema as s
from features.build import Progress
from features.from_store import store_features
from training.reasons import explain

__all__ = ["MAX_STALE_DAYS", "TOP_REASONS", "RescoreError", "RescoreResult", "rescore", "score"]

#: Reasons kept per user in the scores file (the sync sends the first one, if configured).
TOP_REASONS = 3
#: Days the newest stored event may lag `as_of` before rescoring refuses (a stalled ingest).
MAX_STALE_DAYS = 7.0


class RescoreError(LapseError, ValueError):
    """A feature frame the model cannot score (columns it was not trained on)."""


@dataclass(frozen=True)
class RescoreResult:
    """A scores frame and what it took: events read and the active subscribers found."""

    scores: pd.DataFrame
    as_of: pd.Timestamp
    events: int


def score(model, features: pd.DataFrame, top_reasons: int = TOP_REASONS) -> pd.DataFrame:
    """Scores for a feature frame indexed by (user_id, platform).

    Columns: user_id, platform, churn_probability (calibrated), bucket (the model's own bounds)
    and reasons (up to `top_reasons` reason groups raising the risk, strongest first).
    """
    missing = [c for c in model.features_ if c not in features.columns]
    if missing:
        raise RescoreError(
            f"feature frame lacks {len(missing)} column(s) the model was trained on: "
            f"{missing[:5]}; build the features with the model's own definition "
            "(model.feature_definition)"
        )
    X = features[model.features_]
    probability = model.predict_proba(X)[:, 1]
    reasons, _ = explain(model, X, k=top_reasons)
    out = features.index.to_frame(index=False)
    out[s.CHURN_PROBABILITY] = probability.round(6)
    out[s.BUCKET] = model.buckets(probability)
    out[s.REASONS] = reasons.to_numpy()
    return out


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
