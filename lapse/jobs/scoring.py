"""The job that scores: ``rescore`` (the champion on every active subscriber, the scores file,
the history and drift records, then the push to Braze)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from features.cluster import workplace
from lapse.jobs import Progress
from lapse.jobs.braze import SyncOutcome, push
from lapse.settings import Settings
from serving.braze_client import BrazeAuthError
from serving.drift import DriftRecord, write_drift
from serving.history import HistoryWrite, append_history
from serving.rescore import MAX_STALE_DAYS, RescoreResult
from serving.rescore import rescore as score_store
from serving.scores import write_scores
from training.registry import ModelInfo, champion_uri, load_model, model_info

# --- rescore -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RescoreOutcome:
    """The scores, where they were written (None: a dry run without --out), the model's version
    and bucket policy, what the sync did with them, where the scores history keeps them and
    where the drift record went (None: a dry run records neither; the drift itself is
    ``result.drift``)."""

    result: RescoreResult
    path: Path | None
    model: ModelInfo
    sync: SyncOutcome
    drift_path: Path | None = None
    history: HistoryWrite | None = None


def default_scores_path(settings: Settings, as_of: date) -> Path:
    """Where rescore keeps the day's scores: ``<store>/scores/scores-<date>.parquet``."""
    return settings.store.path / "scores" / f"scores-{as_of}.parquet"


def rescore(
    settings: Settings,
    as_of: date,
    out: Path | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RescoreOutcome:
    """Score every subscriber active at the start of ``as_of`` with the champion, write the
    scores file, then push the changed buckets to Braze.

    A dry run writes the file only where asked (``out``): the day's file may be a real run's,
    still waiting for a ``lapse sync`` retry. A real run also records the scores in the store's
    scores history (``serving.history``, once per day and model version) and the drift of the
    scored population from the model's training data (PSI, ``monitoring.psi_threshold``) in
    ``<store>/monitoring/drift/``, both before the push, where ``lapse backtest`` and ``lapse
    train --if-due`` read them.
    """
    if not dry_run and settings.braze.api_key is None:  # say so before the work, not after it
        raise BrazeAuthError(
            "no Braze API key: set the BRAZE_API_KEY environment variable (or use --dry-run)"
        )
    uri = champion_uri(settings.mlflow.registered_model)
    model = load_model(settings.mlflow.tracking_uri, uri)
    with workplace(settings.dask) as where:
        result = score_store(
            settings.store.path,
            as_of,
            model,
            MAX_STALE_DAYS,
            progress,
            psi_threshold=settings.monitoring.psi_threshold,
            drift_exempt=settings.monitoring.drift_exempt,
            where=where,
            split=settings.features,
        )
    info = model_info(settings.mlflow.tracking_uri, uri)
    path = None
    if not (dry_run and out is None):
        provenance = {"as_of": result.as_of.isoformat(), "model": info.uri}
        provenance |= (
            {"model_name": info.name, "model_version": info.version} if info.version else {}
        )
        path = write_scores(
            result.scores,
            out or default_scores_path(settings, as_of),
            model.bucket_policy_,
            provenance,
        )
    drift_path = history = None
    if not dry_run:  # what was scored is history, whether or not the push goes through
        record = DriftRecord(as_of, info.name, info.version, result.drift)
        drift_path = write_drift(settings.store.path, record)
        name, version = history_identity(info)
        history = append_history(settings.store.path, result.scores, result.as_of, name, version)
    pushed = push(settings, result.scores, dry_run, model.bucket_policy_, progress)
    return RescoreOutcome(result, path, info, pushed, drift_path, history)


def history_identity(info: ModelInfo) -> tuple[str, str]:
    """(model name, version) a rescore is recorded under; a model outside the registry (a
    ``runs:/`` URI) is ``model`` with a version made from its URI, so it still never mixes."""
    if info.name and info.version:
        return info.name, info.version
    import hashlib

    return info.name or "model", "uri-" + hashlib.sha256(info.uri.encode()).hexdigest()[:12]
