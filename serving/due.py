"""When the served model is due for retraining (`lapse train --if-due`, scheduled weekly).

``retrain_due`` is the decision, a pure function of what is known: the champion (version, when
it was trained), the newest backtest run (realised ROC AUC and ECE of its newest complete
scoring day) and the newest drift record (``serving.drift``). It is due when there is no
champion; when the champion is ``max_age_days`` old; when the backtest shows a realised ROC AUC
below ``min_roc_auc`` or an ECE above ``max_ece``; or when the newest rescore flagged drift.
A backtest run that started before the champion was trained or whose newest complete day was
scored by another model version, or a drift record written with another model version, judged
an earlier model and does not count. The readers below fetch
those facts from MLflow and the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from base import LapseError, safe_url, sqlite_file
from serving.drift import DriftRecord
from training.registry import champion_uri, champion_version, model_info

__all__ = [
    "BACKTEST_KIND",
    "Backtest",
    "Champion",
    "DueCheckError",
    "DueDecision",
    "champion_of",
    "newest_backtest",
    "retrain_due",
]

#: The tag (and its value) that marks a backtest run in the monitoring experiment.
BACKTEST_KIND = ("lapse.kind", "backtest")
#: The backtest run's metrics for its newest complete scoring day.
ROC_AUC, ECE = "realised_roc_auc", "realised_ece"
#: The backtest run's tag naming the model version that scored its newest complete day.
NEWEST_MODEL_TAG = "backtest.newest_model"


class DueCheckError(LapseError):
    """MLflow could not be asked (unreachable, refused): whether retraining is due is unknown,
    which is not the same as "there is no champion"."""


def _unreachable(tracking_uri: str, exc: Exception) -> DueCheckError:
    message = (getattr(exc, "message", None) or str(exc)).splitlines()[0]
    return DueCheckError(
        f"MLflow at {safe_url(tracking_uri)} (mlflow.tracking_uri): cannot tell whether the "
        f"champion is due ({message})"
    )


@dataclass(frozen=True)
class Champion:
    """The served model: registered version and when its training run started (UTC)."""

    version: str
    trained_at: datetime


@dataclass(frozen=True)
class Backtest:
    """The newest backtest run: when it started, what it realised (None: not logged) and the
    model version that scored the day it realised them on (None: not tagged)."""

    run_id: str
    started: datetime
    roc_auc: float | None
    ece: float | None
    model_version: str | None = None


@dataclass(frozen=True)
class DueDecision:
    """Whether to retrain; ``reasons`` are the conditions that made it due, ``notes`` what was
    checked and found fine or could not be checked (why nothing was done)."""

    due: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...]


def retrain_due(
    now: datetime,
    champion: Champion | None,
    backtest: Backtest | None,
    drift: DriftRecord | None,
    *,
    max_age_days: int,
    min_roc_auc: float,
    max_ece: float,
) -> DueDecision:
    """Decide from the facts given (nothing here reads a clock, MLflow or the store)."""
    if champion is None:
        return DueDecision(True, ("there is no champion yet",), ())
    reasons: list[str] = []
    notes: list[str] = []
    age = now - champion.trained_at
    days = age / timedelta(days=1)
    if age >= timedelta(days=max_age_days):
        reasons.append(
            f"the champion (version {champion.version}) was trained {days:.1f} days ago, "
            f"training.max_age_days is {max_age_days}"
        )
    else:
        notes.append(
            f"the champion (version {champion.version}) is {days:.1f} days old "
            f"(retrained at {max_age_days})"
        )
    if backtest is None:
        notes.append("no backtest run yet (lapse backtest)")
    elif backtest.started < champion.trained_at:
        notes.append(
            f"the newest backtest (run {backtest.run_id}) predates the champion; not counted"
        )
    elif backtest.model_version is not None and backtest.model_version != champion.version:
        # right after a retrain every complete scoring day was scored by the previous model
        notes.append(
            f"the newest backtest (run {backtest.run_id}) measured model version "
            f"{backtest.model_version}, not the champion's; not counted"
        )
    else:
        where = f"the newest backtest (run {backtest.run_id})"
        if backtest.roc_auc is None or math.isnan(backtest.roc_auc):
            notes.append(f"{where} logged no {ROC_AUC}")
        elif backtest.roc_auc < min_roc_auc:
            reasons.append(
                f"{where} realised ROC AUC {backtest.roc_auc:.4f}, below "
                f"monitoring.min_roc_auc {min_roc_auc:g}"
            )
        else:
            notes.append(f"{where} realised ROC AUC {backtest.roc_auc:.4f} (>= {min_roc_auc:g})")
        if backtest.ece is None or math.isnan(backtest.ece):
            notes.append(f"{where} logged no {ECE}")
        elif backtest.ece > max_ece:
            reasons.append(
                f"{where} realised ECE {backtest.ece:.4f}, above monitoring.max_ece {max_ece:g}"
            )
        else:
            notes.append(f"{where} realised ECE {backtest.ece:.4f} (<= {max_ece:g})")
    if drift is None:
        notes.append("no drift record yet (lapse rescore keeps one)")
    elif drift.model_version != champion.version:
        notes.append(
            f"the newest drift record ({drift.as_of}) is of model version "
            f"{drift.model_version}, not the champion's; not counted"
        )
    elif not drift.report.available:
        notes.append(f"drift on {drift.as_of} unavailable: {drift.report.reason}")
    elif drift.report.drifted:
        flagged = ", ".join(drift.report.flagged)
        reasons.append(
            f"the rescore of {drift.as_of} flagged drift (PSI > {drift.report.threshold:g}): "
            f"{flagged}"
        )
    else:
        notes.append(f"no drift in the rescore of {drift.as_of}")
    return DueDecision(bool(reasons), tuple(reasons), tuple(notes))


def champion_of(tracking_uri: str, registered_model: str) -> Champion | None:
    """The champion's version and training time, or None when there is none (or no registry)."""
    database = sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        return None
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    try:  # model_info reads any failure as "unknown"; an unreachable server must not be "none"
        if champion_version(MlflowClient(), registered_model) is None:
            return None
    except MlflowException as exc:
        raise _unreachable(tracking_uri, exc) from None
    info = model_info(tracking_uri, champion_uri(registered_model))
    if info.version is None or info.trained_at is None:
        return None
    return Champion(info.version, datetime.fromisoformat(info.trained_at))


def newest_backtest(tracking_uri: str, experiment: str) -> Backtest | None:
    """The newest finished run tagged ``lapse.kind=backtest`` in ``experiment``, or None."""
    import mlflow
    from mlflow.tracking import MlflowClient

    database = sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        return None
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    key, value = BACKTEST_KIND
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{key}` = '{value}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except MlflowException as exc:
        raise _unreachable(tracking_uri, exc) from None
    if not runs:
        return None
    run = runs[0]
    metrics = run.data.metrics
    scored_by = run.data.tags.get(NEWEST_MODEL_TAG, "")  # "<name> version <N>"
    return Backtest(
        run_id=run.info.run_id,
        started=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        roc_auc=metrics.get(ROC_AUC),
        ece=metrics.get(ECE),
        model_version=scored_by.rpartition(" version ")[2] if " version " in scored_by else None,
    )
