"""Reading training runs back from MLflow: the hold-out metrics of the model against the
baselines and the oracle, the plots a run logged, and what differs between two runs.

What ``notebooks/02-train-and-explain.ipynb`` shows of a run, kept here so it is tested. The
tables are pure functions of a run's metrics and params (``metrics_table``, ``compare``); the
MLflow reads (``read_run``, ``run_plots``) are the edges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from base import LapseError

__all__ = [
    "METRICS",
    "SCORERS",
    "RunComparison",
    "RunError",
    "RunRecord",
    "compare",
    "compare_runs",
    "metrics_table",
    "read_run",
    "run_plots",
]

#: The hold-out metrics every scorer is measured by (DESIGN.md's names without their prefix).
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top10_lift")
#: Each scorer's metric prefix on the run: the model, the two baselines and the oracle.
SCORERS = {
    "model": "holdout_",
    "crm_rule": "baseline_rule_",
    "logistic_regression": "baseline_logreg_",
    "oracle": "oracle_",
}
#: Run-level numbers a comparison shows beside the hold-out metrics.
RUN_METRICS = ("oracle_ratio", "valid_roc_auc", "trials_finished", "seconds_total")
#: Where ``lapse train`` logs its figures inside a run's artifacts.
PLOTS_FOLDER = "plots"


class RunError(LapseError, LookupError):
    """A training run that cannot be read: unknown id, or no such artifact."""


@dataclass(frozen=True)
class RunRecord:
    """What a finished training run logged: its id, status, metrics, params and tags."""

    run_id: str
    status: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


def metrics_table(metrics: Mapping[str, float]) -> pd.DataFrame:
    """The hold-out metrics as metric x scorer (model, crm_rule, logistic_regression, oracle);
    a scorer the run did not measure (no oracle without ground truth) is left out."""
    table = pd.DataFrame(
        {
            scorer: [metrics.get(prefix + name, float("nan")) for name in METRICS]
            for scorer, prefix in SCORERS.items()
        },
        index=pd.Index(METRICS, name="metric"),
    )
    return table.loc[:, table.notna().any()]


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side: their metrics (a, b, b - a) and the params that differ."""

    a: str
    b: str
    metrics: pd.DataFrame
    params: pd.DataFrame


def compare(a: RunRecord, b: RunRecord) -> RunComparison:
    """The hold-out metrics of both models and their run-level numbers, with b - a, and every
    param whose value differs (missing on one side shows as None)."""
    names = [f"{SCORERS['model']}{m}" for m in METRICS] + list(RUN_METRICS)
    names = [n for n in names if n in a.metrics or n in b.metrics]
    metrics = pd.DataFrame(
        {
            "a": [a.metrics.get(n, float("nan")) for n in names],
            "b": [b.metrics.get(n, float("nan")) for n in names],
        },
        index=pd.Index(names, name="metric"),
    )
    metrics["b_minus_a"] = metrics["b"] - metrics["a"]
    keys = sorted(
        k for k in a.params.keys() | b.params.keys() if a.params.get(k) != b.params.get(k)
    )
    params = pd.DataFrame(
        {"a": [a.params.get(k) for k in keys], "b": [b.params.get(k) for k in keys]},
        index=pd.Index(keys, name="param"),
        dtype=object,
    )
    return RunComparison(a.run_id, b.run_id, metrics, params)


def read_run(tracking_uri: str, run_id: str) -> RunRecord:
    """The run's status, metrics, params and tags from the tracking store."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        raise RunError(f"run {run_id!r}: not found in {tracking_uri}") from None
    return RunRecord(
        run.info.run_id,
        run.info.status,
        dict(run.data.metrics),
        dict(run.data.params),
        dict(run.data.tags),
    )


def compare_runs(tracking_uri: str, a: str, b: str) -> RunComparison:
    """``compare`` of two runs read from the tracking store."""
    return compare(read_run(tracking_uri, a), read_run(tracking_uri, b))


def run_plots(tracking_uri: str, run_id: str, dest: str | Path) -> dict[str, Path]:
    """Download the figures the run logged (``plots/*.png``) into ``dest``: name -> file."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    read_run(tracking_uri, run_id)  # an unknown run is named, not a bare MLflow error
    names = [f.path for f in client.list_artifacts(run_id, PLOTS_FOLDER) if not f.is_dir]
    if not names:
        raise RunError(
            f"run {run_id!r}: no figures under {PLOTS_FOLDER}/ (not a `lapse train` run?)"
        )
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    local = Path(client.download_artifacts(run_id, PLOTS_FOLDER, str(folder)))
    return {Path(n).name: local / Path(n).name for n in sorted(names)}
