"""The job that judges past scores: ``backtest`` (the scores history against the churn the
store now shows, an HTML report and an MLflow run)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from features import schema as s
from features.from_store import read_events
from features.settings import feature_definition
from lapse.jobs import Progress, quiet, quiet_mlflow
from lapse.settings import Settings
from serving.backtest import BacktestError, BacktestResult, log_backtest, result_tables
from serving.backtest import backtest as measure_history
from serving.history import history_days, history_root, read_history
from training.registry import experiment_id, model_info

# --- backtest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestOutcome:
    """The backtest, the HTML report it wrote, and its MLflow run (experiment, run id)."""

    result: BacktestResult
    report: Path
    experiment: str
    run_id: str
    since: date | None = None
    until: date | None = None


def default_report_path(settings: Settings, newest_day: date) -> Path:
    """Where the report goes without --report: ``<store>/reports/backtest-<newest day>.html``
    (the newest scoring day asked for; a later backtest of the same days replaces it)."""
    return settings.store.path / "reports" / f"backtest-{newest_day}.html"


def backtest(
    settings: Settings,
    since: date | None = None,
    until: date | None = None,
    report: Path | None = None,
    progress: Progress | None = None,
) -> BacktestOutcome:
    """Set every past scoring day of the scores history (from ``since`` to ``until``, both
    included) against the churn the event store now shows, with the ``[labels]`` rule; days
    whose horizon is not over by the newest stored event are pending. Writes the HTML report
    and logs one run to the ``monitoring.experiment`` MLflow experiment."""
    quiet_mlflow()
    if since is not None and until is not None and since > until:
        raise BacktestError(f"--since {since} is after --until {until}; expected since <= until")
    store = settings.store.path
    days = history_days(store)
    if not days:
        raise BacktestError(
            f"{history_root(store)}: no scores history; every `lapse rescore` records what it "
            "scored there, so rescore first"
        )
    history = read_history(store, since, until)
    if history.empty:
        raise BacktestError(
            f"no scoring day from {since or 'the start'} to {until or 'the end'}; the scores "
            f"history holds {len(days)} day(s), {days[0]} .. {days[-1]}"
        )
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise BacktestError(f"--report {report}: expected an .html file name")
    definition = feature_definition(settings.features, settings.labels)
    report_fn = quiet(progress)
    report_fn("load", 0, 1)
    events = read_events(store, definition)
    report_fn("load", 1, 1)
    result = measure_history(history, events, settings.labels.horizon_days, definition, progress)
    del events
    from serving.backtest_report import report_html

    mlflow_settings = settings.mlflow
    references = {}
    for name, version in result.days[[s.MODEL_NAME, s.MODEL_VERSION]].drop_duplicates().values:
        info = model_info(mlflow_settings.tracking_uri, f"models:/{name}/{version}")
        if info.metrics and "holdout_roc_auc" in info.metrics:
            references[f"{name} v{version}"] = info.metrics["holdout_roc_auc"]
    path = report or default_report_path(settings, max(history[s.AS_OF]).date())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report_html(result, references), encoding="utf-8")
    except OSError as exc:
        raise BacktestError(f"--report {path}: cannot write ({exc.strerror or exc})") from None
    experiment = settings.monitoring.experiment
    exp_id = experiment_id(
        mlflow_settings.tracking_uri, experiment, mlflow_settings.artifact_location
    )
    params = {
        "since": str(since) if since else "",
        "until": str(until) if until else "",
        "store.path": str(store),
        "labels.horizon_days": settings.labels.horizon_days,
        "labels.renewal_leeway_hours": settings.labels.renewal_leeway_hours,
        "history_days": len(set(history[s.AS_OF])),
        "model_versions": ",".join(sorted(set(history[s.MODEL_VERSION]), key=_as_number)),
    }
    run_id = log_backtest(result, exp_id, params, result_tables(result), (path,))
    return BacktestOutcome(result, path, experiment, run_id, since, until)


def _as_number(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)
