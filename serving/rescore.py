"""The scheduled rescoring job: the champion scores every active subscriber as of a day.

`score(model, features)` is the pure part (a feature frame in, a scores frame out: the DESIGN.md
scores-file contract plus the platform); `rescore(store, as_of, model)` reads the store around it,
and `load_champion` fetches the model the training gate promoted. The CLI writes the scores file
and hands it to `serving.sync`, so `lapse rescore` is exactly `lapse sync` on fresh scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import FeatureConfig, build_features, load_events
from features import schema as s
from features.timeline import to_timestamp
from serving.buckets import BucketPolicy
from serving.ledger import sqlite_file
from serving.sync import POLICY_METADATA, policy_sidecar

__all__ = ["RescoreError", "RescoreResult", "load_champion", "rescore", "score", "write_scores"]

#: Reasons kept per user in the scores file (the sync sends the first one, if configured).
TOP_REASONS = 3
#: Days the newest stored event may lag `as_of` before rescoring refuses (a stalled ingest).
MAX_STALE_DAYS = 7.0


class RescoreError(ValueError):
    """Rescoring cannot run: no champion model, or nothing to score in the store."""


@dataclass(frozen=True)
class RescoreResult:
    """A scores frame and what it took: events read and the active subscribers found."""

    scores: pd.DataFrame
    as_of: pd.Timestamp
    events: int


def load_champion(tracking_uri: str, name: str, alias: str = "champion"):
    """The registered model `name@alias` (a fitted training ChurnModel), or RescoreError."""
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    uri = f"models:/{name}@{alias}"
    database = sqlite_file(tracking_uri)
    if database is not None and not database.is_file():  # MLflow would create an empty one
        raise RescoreError(
            f"{uri}: no MLflow database at {database} (mlflow.tracking_uri); "
            "run `lapse train` first"
        )
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.sklearn.load_model(uri)
    except MlflowException as exc:
        raise RescoreError(
            f"{uri}: no model to score with at {tracking_uri} ({exc.message.splitlines()[0]}); "
            "run `lapse train` first"
        ) from None


def score(model, features: pd.DataFrame, top_reasons: int = TOP_REASONS) -> pd.DataFrame:
    """Scores for a feature frame indexed by (user_id, platform).

    Columns: user_id, platform, churn_probability (calibrated), bucket (the model's own bounds)
    and reasons (up to `top_reasons` reason groups raising the risk, strongest first).
    """
    from training.reasons import explain

    missing = [c for c in model.features_ if c not in features.columns]
    if missing:
        raise RescoreError(
            f"feature frame lacks {len(missing)} column(s) the model was trained on: "
            f"{missing[:5]}; the store's features and the champion come from different versions"
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
    config: FeatureConfig | None = None,
    max_stale_days: float = MAX_STALE_DAYS,
) -> RescoreResult:
    """Score every subscriber active at `as_of` from the events stored before it; refuse when
    the newest of them is more than `max_stale_days` older (the store was not fed)."""
    config = config or FeatureConfig()
    when = to_timestamp(as_of)
    events = load_events(store, end=when, include_sandbox=config.include_sandbox)
    if len(events):
        newest = events[s.TS].max()
        if when - newest > pd.Timedelta(days=max_stale_days):
            raise RescoreError(
                f"{store}: the newest event before {when:%Y-%m-%d} is from {newest:%Y-%m-%d %H:%M} "
                f"UTC, {(when - newest) / pd.Timedelta(days=1):.1f} days earlier (more than "
                f"{max_stale_days:g}); "
                "scores from stale data would null or mis-bucket real users. Ingest the latest "
                "export first, or pass --as-of inside the stored data"
            )
    features = build_features(events, when, config)
    if features.empty:
        raise RescoreError(
            f"{store}: no subscriber is active at {when:%Y-%m-%d %H:%M} UTC "
            f"({len(events):,} events before it); is --as-of inside the stored data?"
        )
    return RescoreResult(score(model, features), when, len(events))


def write_scores(
    scores: pd.DataFrame, path: str | Path, policy: BucketPolicy | None = None
) -> Path:
    """Write a scores file: Parquet (reasons as a list), or CSV (reasons joined by ';').

    ``policy`` (the model's bucket bounds) is recorded in a Parquet file's metadata, or beside a
    CSV file (``policy_sidecar``), so that ``lapse sync`` on it later (a retry) sends exactly
    the buckets ``lapse rescore`` would have sent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pa.Table.from_pandas(scores, preserve_index=False)
        if policy is not None:
            metadata = {**(table.schema.metadata or {}), POLICY_METADATA: policy.to_json()}
            table = table.replace_schema_metadata(metadata)
        pq.write_table(table, path)
    elif path.name.lower().endswith((".csv", ".csv.gz")):
        flat = scores.assign(**{s.REASONS: [";".join(r) for r in scores[s.REASONS]]})
        flat.to_csv(path, index=False)
        sidecar = policy_sidecar(path)
        if policy is not None:  # CSV has no metadata: the bounds travel beside it
            sidecar.write_text(policy.to_json() + "\n")
        else:
            sidecar.unlink(missing_ok=True)
    else:
        raise RescoreError(f"{path}: expected a .parquet or .csv scores file name")
    return path
