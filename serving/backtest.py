"""Backtest: every past scoring day set against what really happened.

``backtest(history, events, horizon_days, config)`` takes the scores history
(``serving.history.read_history``) and the store's events, labels every scoring day whose
horizon has ended with the label code training uses (``features.labels.labels_at``), and
measures each (scoring day, model version) with training's own metrics
(``training.evaluate.score_metrics``, ``bucket_table``, ``decile_table``), named
``realised_<metric>``. Days whose horizon has not ended by the newest stored event are pending
(listed with the day their labels complete), never dropped. Time is the store's, not the clock's.

``log_backtest`` logs a result to MLflow: one run per backtest, tagged ``lapse.kind=backtest``,
metrics stepped by scoring day (step = days since 1970-01-01) under ``v<version>/`` (with the
model's name in front when the history holds more than one), and, without a step, the
``realised_*`` metrics of the newest complete scoring day (its newest model version), which is
what ``lapse train --if-due`` reads (``realised_roc_auc``, ``realised_ece``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from base import LapseError
from features import schema as s
from features.labels import labels_at, observed_by, observed_end, to_series
from features.timeline import MICROS_PER_DAY, EventTable, FeatureConfig, to_micros
from training.evaluate import bucket_table, decile_table, score_metrics

__all__ = [
    "BACKTEST_KIND",
    "KIND_TAG",
    "METRIC_PREFIX",
    "BacktestError",
    "BacktestResult",
    "PendingDay",
    "backtest",
    "epoch_day",
    "log_backtest",
]

#: Prefix of every realised metric (``realised_roc_auc`` ...), from ``score_metrics``.
METRIC_PREFIX = "realised"
#: The tag that marks a monitoring run as a backtest (``lapse train --if-due`` looks for it).
KIND_TAG = "lapse.kind"
BACKTEST_KIND = "backtest"
#: Key columns of the per-day tables.
DAY_KEY = (s.AS_OF, s.MODEL_NAME, s.MODEL_VERSION)

Progress = Callable[[str, int, int], None]


class BacktestError(LapseError):
    """Nothing to backtest (no history, or none between the dates asked); says what exists."""


@dataclass(frozen=True)
class PendingDay:
    """A scoring day whose horizon has not ended: its labels complete on ``complete_on``."""

    as_of: date
    model_name: str
    model_version: str
    scored: int
    complete_on: pd.Timestamp


@dataclass(frozen=True)
class BacktestResult:
    """Per (scoring day, model version): realised metrics (``days``), per bucket realised
    against predicted churn (``buckets``), per risk decile (``deciles``); and the days still
    pending, the store's newest event and the label horizon used."""

    days: pd.DataFrame
    buckets: pd.DataFrame
    deciles: pd.DataFrame
    pending: tuple[PendingDay, ...]
    observed_until: pd.Timestamp | None
    horizon_days: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def newest(self) -> pd.Series | None:
        """The newest complete scoring day's row (its newest model version), or None."""
        if self.days.empty:
            return None
        ordered = self.days.assign(_v=_version_order(self.days[s.MODEL_VERSION]))
        return ordered.sort_values([s.AS_OF, "_v"]).drop(columns="_v").iloc[-1]


def _version_order(versions: pd.Series) -> pd.Series:
    """Registry versions are numbers: order them as numbers ("10" after "9")."""
    return pd.to_numeric(versions, errors="coerce").fillna(-1)


def epoch_day(when: date | pd.Timestamp) -> int:
    """Days since 1970-01-01: the MLflow step of a scoring day."""
    return int(to_micros(when) // MICROS_PER_DAY)


def backtest(
    history: pd.DataFrame,
    events: pd.DataFrame,
    horizon_days: int,
    config: FeatureConfig,
    progress: Progress | None = None,
) -> BacktestResult:
    """Measure every (scoring day, model version) of ``history`` whose horizon has ended by
    the newest of ``events`` against the churn labels of those events; the others are pending."""
    report = progress or (lambda stage, done, total: None)
    table = EventTable(events, config)
    last = table.last_ts()
    observed = observed_end(table, None)
    key = list(s.SUBSCRIBER_INDEX)
    groups = list(history.groupby(list(DAY_KEY), sort=True))
    rows, bucket_parts, decile_parts, pending, notes = [], [], [], [], []
    for i, ((as_of, name, version), scored) in enumerate(groups):
        t = to_micros(as_of)
        day = pd.Timestamp(as_of).date()
        if observed_by(t, horizon_days, config) > observed:
            complete = pd.Timestamp(observed_by(t, horizon_days, config) * 1000, tz="UTC")
            pending.append(PendingDay(day, name, version, len(scored), complete))
            report("backtest", i + 1, len(groups))
            continue
        labels = to_series(labels_at(table, t, horizon_days, config, observed))
        joined = scored.set_index(key).join(labels, how="left")
        labelled = joined[joined[s.CHURNED].notna()]
        y = labelled[s.CHURNED].astype(bool).to_numpy()
        p = labelled[s.CHURN_PROBABILITY].to_numpy(dtype=float)
        row: dict[str, Any] = {
            s.AS_OF: day,
            s.MODEL_NAME: name,
            s.MODEL_VERSION: version,
            "scored": len(scored),
            "labelled": len(labelled),
            "not_active_by_the_label": len(scored) - len(labelled),
            "churners": int(y.sum()),
            "mean_probability": float(p.mean()) if len(p) else np.nan,
            "realised_churn_rate": float(y.mean()) if len(y) else np.nan,
        }
        if len(y) and 0 < y.sum() < len(y):
            row |= score_metrics(y, p, METRIC_PREFIX)
        else:
            notes.append(
                f"{day} v{version}: {len(y)} labelled subscriber(s), {int(y.sum())} churner(s); "
                "the metrics need churners and non-churners, so only the rates are shown"
            )
        if len(scored) > len(labelled):
            notes.append(
                f"{day} v{version}: {len(scored) - len(labelled):,} of {len(scored):,} scored "
                "subscriber(s) were not active by the label's rules at that day, so have no label"
            )
        rows.append(row)
        if len(y):
            buckets = labelled[s.BUCKET].astype("str").to_numpy()
            order = pd.Series(p).groupby(buckets).mean().sort_values(ascending=False).index.tolist()
            part = bucket_table(y, p, buckets, order).reset_index()
            bucket_parts.append(part.assign(**{s.AS_OF: day, s.MODEL_VERSION: version}))
            deciles = decile_table(y, p).reset_index()
            decile_parts.append(deciles.assign(**{s.AS_OF: day, s.MODEL_VERSION: version}))
        report("backtest", i + 1, len(groups))
    observed_until = None if last is None else pd.Timestamp(int(last) * 1000, tz="UTC")
    return BacktestResult(
        days=pd.DataFrame(rows, columns=_day_columns(rows)),
        buckets=_front(bucket_parts, [s.AS_OF, s.MODEL_VERSION]),
        deciles=_front(decile_parts, [s.AS_OF, s.MODEL_VERSION]),
        pending=tuple(pending),
        observed_until=observed_until,
        horizon_days=horizon_days,
        notes=tuple(notes),
    )


def _day_columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns or [*DAY_KEY, "scored", "labelled"]


def _front(parts: list[pd.DataFrame], first: list[str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=first)
    frame = pd.concat(parts, ignore_index=True)
    return frame[first + [c for c in frame.columns if c not in first]]


def _prefix(days: pd.DataFrame) -> Callable[[pd.Series], str]:
    several = days[s.MODEL_NAME].nunique() > 1
    return lambda row: (f"{row[s.MODEL_NAME]}/" if several else "") + f"v{row[s.MODEL_VERSION]}/"


def stepped_metrics(result: BacktestResult) -> list[tuple[str, float, int]]:
    """(name, value, step) of every per-day metric: realised metrics, churn rates, and the
    realised and predicted churn rate of each bucket."""
    out: list[tuple[str, float, int]] = []
    prefix = _prefix(result.days)
    for _, row in result.days.iterrows():
        step, head = epoch_day(row[s.AS_OF]), prefix(row)
        for column in result.days.columns:
            if column.startswith(f"{METRIC_PREFIX}_") or column == "mean_probability":
                value = float(row[column])
                if np.isfinite(value):
                    out.append((head + column, value, step))
        mine = result.buckets[
            (result.buckets[s.AS_OF] == row[s.AS_OF])
            & (result.buckets[s.MODEL_VERSION] == row[s.MODEL_VERSION])
        ]
        for _, bucket in mine.iterrows():
            name = str(bucket[s.BUCKET])
            out.append((f"{head}realised_churn_rate_{name}", bucket["realised_churn_rate"], step))
            out.append((f"{head}predicted_churn_rate_{name}", bucket["mean_probability"], step))
    return out


def log_backtest(
    result: BacktestResult,
    experiment_id: str,
    params: dict[str, Any],
    artifacts: dict[str, str] | None = None,
    files: tuple[Path, ...] = (),
) -> str:
    """Log ``result`` as one run of ``experiment_id`` (see the module's note); ``artifacts``
    are text artifacts by file name, ``files`` are logged as they are. Returns the run id."""
    import time

    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    newest = result.newest
    tags = {KIND_TAG: BACKTEST_KIND, "backtest.horizon_days": str(result.horizon_days)}
    if result.observed_until is not None:
        tags["backtest.observed_until"] = result.observed_until.isoformat()
    if newest is not None:
        tags["backtest.newest_day"] = str(newest[s.AS_OF])
        tags["backtest.newest_model"] = f"{newest[s.MODEL_NAME]} version {newest[s.MODEL_VERSION]}"
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params(params)
        client = MlflowClient()
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v, step in stepped_metrics(result)]
        summary = {
            "days_complete": float(len(result.days)),
            "days_pending": float(len(result.pending)),
        }
        if newest is not None:  # the newest complete day, without a step: --if-due reads these
            summary |= {
                k: float(newest[k])
                for k in result.days.columns
                if k.startswith(f"{METRIC_PREFIX}_") and np.isfinite(float(newest[k]))
            }
        metrics += [Metric(k, v, now, 0) for k, v in summary.items()]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1,000 per batch
            client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
        for name, text in (artifacts or {}).items():
            mlflow.log_text(text, name)
        for path in files:
            mlflow.log_artifact(str(path))
        return run.info.run_id


def result_tables(result: BacktestResult) -> dict[str, str]:
    """The result's tables as CSV text, by artifact file name."""
    pending = pd.DataFrame(
        [
            {
                s.AS_OF: d.as_of,
                s.MODEL_NAME: d.model_name,
                s.MODEL_VERSION: d.model_version,
                "scored": d.scored,
                "complete_on": d.complete_on.isoformat(),
            }
            for d in result.pending
        ]
    )
    return {
        "backtest_days.csv": result.days.to_csv(index=False),
        "backtest_buckets.csv": result.buckets.to_csv(index=False),
        "backtest_deciles.csv": result.deciles.to_csv(index=False),
        "backtest_pending.csv": pending.to_csv(index=False),
    }
