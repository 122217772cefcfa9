"""`lapse rescore` keeps its scores history; `lapse backtest`: the job's MLflow run (the contract
`lapse train --if-due` reads), the report, the command line and its one-line errors."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from features import schema as s
from lapse import jobs
from lapse.cli import main
from lapse.settings import API_KEY_ENV, ENV_PREFIX, Settings
from serving.backtest import BACKTEST_KIND, KIND_TAG, BacktestError, epoch_day
from serving.emulator import Emulator, EmulatorConfig
from serving.history import append_history, history_days, read_history

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Each test in an empty folder (no ./lapse.toml), with no Lapse or Braze variables."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) or name.upper() == API_KEY_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "120")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Call `lapse.cli.main` in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return (0 if code is None else code), _ANSI.sub("", captured.out), _ANSI.sub("", captured.err)


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _history_only(tmp_path: Path) -> Path:
    """A store folder holding only a scores history of two days (no events needed to fail)."""
    store = tmp_path / "store"
    scores = pd.DataFrame(
        {
            s.USER_ID: ["a", "b"],
            s.PLATFORM: ["ios", "ios"],
            s.CHURN_PROBABILITY: [0.2, 0.7],
            s.BUCKET: ["medium", "high"],
        }
    )
    for day in (date(2026, 3, 2), date(2026, 3, 9)):
        append_history(store, scores, day, "lapse-churn", "1")
    return store


# --- fast: the command line's own checks ---------------------------------------------------------


def test_help_names_the_options(capsys) -> None:
    code, out, _ = invoke(capsys, "backtest", "--help")
    assert code == 0
    for option in ("--since", "--until", "--report", "--store", "YYYY-MM-DD"):
        assert option in out


def test_no_history_is_one_line_saying_to_rescore_first(capsys, tmp_path: Path) -> None:
    code, _, err = invoke(capsys, "backtest", "--store", str(tmp_path / "empty"))
    assert code == 1
    line = _one_line_error(err)
    assert "scores_history: no scores history" in line and "rescore first" in line


def test_since_after_until_is_refused(capsys, tmp_path: Path) -> None:
    store = _history_only(tmp_path)
    code, _, err = invoke(
        capsys, "backtest", "--store", str(store), "--since", "2026-03-09", "--until", "2026-03-02"
    )
    assert code == 1
    assert _one_line_error(err) == (
        "error: --since 2026-03-09 is after --until 2026-03-02; expected since <= until"
    )


def test_dates_that_hold_no_scoring_day_name_what_the_history_holds(capsys, tmp_path) -> None:
    store = _history_only(tmp_path)
    code, _, err = invoke(capsys, "backtest", "--store", str(store), "--since", "2026-04-01")
    assert code == 1
    assert _one_line_error(err) == (
        "error: no scoring day from 2026-04-01 to the end; the scores history holds 2 day(s), "
        "2026-03-02 .. 2026-03-09"
    )


@pytest.mark.parametrize("bad", ["2026-02-30", "yesterday", "09/03/2026"])
def test_a_date_that_is_not_a_day_is_a_usage_error(capsys, tmp_path: Path, bad: str) -> None:
    code, _, err = invoke(capsys, "backtest", "--store", str(tmp_path), "--until", bad)
    assert code == 2
    assert "--until" in err and "YYYY-MM-DD" in err.replace("%Y-%m-%d", "YYYY-MM-DD")


def test_a_report_that_is_not_html_is_refused(tmp_path: Path) -> None:
    settings = Settings().updated(store={"path": _history_only(tmp_path)})
    with pytest.raises(BacktestError, match=r"--report .*report\.pdf: expected an \.html"):
        jobs.backtest(settings, report=tmp_path / "report.pdf")


# --- slow: rescore keeps history; the backtest job, its MLflow run and the command ------------


@pytest.mark.slow
def test_rescore_records_each_day_once_and_a_dry_run_records_nothing(
    rescored_app, tmp_path: Path
) -> None:
    settings, outcomes, holdout = rescored_app
    store = settings.store.path
    assert history_days(store) == sorted(outcomes)
    for day, outcome in outcomes.items():
        assert outcome.history.written and outcome.history.rows == len(outcome.result.scores)
        assert outcome.history.path.parent.name == f"as_of={day}"
        assert outcome.history.path.name == f"lapse-churn-v{outcome.model.version}.parquet"
    before = outcomes[holdout].history.path.read_bytes()
    with Emulator(EmulatorConfig(api_keys=frozenset({"emu-key"}))) as braze:  # a scheduler's retry
        local = settings.updated(
            braze={"url": braze.url},
            ledger={"url": f"sqlite:///{(tmp_path / 'ledger.db').resolve()}"},
        )
        again = jobs.rescore(local, holdout, out=tmp_path / "again.parquet")
    assert not again.history.written and again.history.path == outcomes[holdout].history.path
    assert outcomes[holdout].history.path.read_bytes() == before
    dry = jobs.rescore(settings, date(2026, 4, 27), dry_run=True)
    assert dry.history is None and history_days(store) == sorted(outcomes)
    recorded = read_history(store, since=holdout, until=holdout)
    scored = outcomes[holdout].result.scores
    assert recorded[s.USER_ID].tolist() == scored[s.USER_ID].tolist()
    assert recorded[s.CHURN_PROBABILITY].tolist() == scored[s.CHURN_PROBABILITY].tolist()
    assert recorded[s.BUCKET].tolist() == scored[s.BUCKET].tolist()


@pytest.mark.slow
def test_backtest_logs_one_run_the_retraining_check_can_read(rescored_app, capsys) -> None:
    from mlflow.tracking import MlflowClient

    settings, outcomes, holdout = rescored_app
    config = settings.config_file
    report = Path.cwd() / "out" / "backtest.html"
    code, out, err = invoke(capsys, "--config", str(config), "backtest", "--report", str(report))
    assert code == 0, err
    assert "Backtest of lapse-churn v1 per scoring day" in out
    for day in sorted(outcomes)[:3]:
        assert str(day) in out
    assert "Pending" in out and str(sorted(outcomes)[3]) in out
    assert report.is_file() and report.read_text().count("data:image/png;base64,") == 4
    run_id = re.search(r"MLflow run\s+│?\s*([0-9a-f]{32})", out)[1]

    client = MlflowClient(settings.mlflow.tracking_uri)
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "lapse-monitoring"
    assert run.data.tags[KIND_TAG] == BACKTEST_KIND
    assert run.data.tags["backtest.newest_day"] == str(holdout)
    newest = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = '{BACKTEST_KIND}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert newest.info.run_id == run_id
    # the contract: the newest complete day's realised ROC AUC and ECE, without a step
    stepped = client.get_metric_history(run_id, "v1/realised_roc_auc")
    assert [m.step for m in stepped] == [epoch_day(d) for d in sorted(outcomes)[:3]]
    for name in ("realised_roc_auc", "realised_ece"):
        (logged,) = client.get_metric_history(run_id, name)
        assert logged.step == 0
        by_day = {m.step: m.value for m in client.get_metric_history(run_id, f"v1/{name}")}
        assert logged.value == pytest.approx(by_day[epoch_day(holdout)])
    assert run.data.metrics["days_complete"] == 3 and run.data.metrics["days_pending"] == 1
    buckets = client.get_metric_history(run_id, "v1/realised_churn_rate_high")
    assert len(buckets) == 3
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"backtest.html", "backtest_days.csv", "backtest_pending.csv"} <= artifacts


@pytest.mark.slow
def test_since_and_until_choose_the_days(rescored_app, tmp_path: Path) -> None:
    settings, outcomes, holdout = rescored_app
    days = sorted(outcomes)
    outcome = jobs.backtest(settings, since=days[1], until=days[2], report=tmp_path / "r.html")
    assert [d for d in outcome.result.days[s.AS_OF]] == days[1:3]
    assert outcome.result.pending == ()
    assert (outcome.since, outcome.until) == (days[1], days[2])
    default = jobs.backtest(settings, until=days[0])
    assert default.report == settings.store.path / "reports" / f"backtest-{days[0]}.html"
    assert default.report.is_file()
