"""When retraining is due: the pure decision for each condition and their combinations, the
readers of MLflow (a backtest run logged here as `lapse backtest` logs one), and the job."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from serving.drift import DriftRecord
from serving.due import Backtest, Champion, champion_of, newest_backtest, retrain_due
from training.drift import DriftReport

NOW = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
LIMITS = dict(max_age_days=30, min_roc_auc=0.7, max_ece=0.05)


def champion(days_old: float = 3.0, version: str = "4") -> Champion:
    return Champion(version, NOW - timedelta(days=days_old))


def backtest(roc_auc=0.82, ece=0.02, days_ago: float = 1.0) -> Backtest:
    return Backtest("run9", NOW - timedelta(days=days_ago), roc_auc, ece)


def drift(flagged=(), version: str = "4", available: bool = True) -> DriftRecord:
    report = DriftReport(0.2, 500, 0.05, {"network": 0.3 if flagged else 0.01}, tuple(flagged))
    if not available:
        report = DriftReport.unavailable(0.2, 500, "the model carries no training reference")
    return DriftRecord(date(2026, 4, 30), "lapse-churn", version, report)


def test_no_champion_is_due() -> None:
    decision = retrain_due(NOW, None, backtest(), drift(), **LIMITS)
    assert decision.due and decision.reasons == ("there is no champion yet",)


def test_a_healthy_fresh_champion_is_not_due_and_says_why() -> None:
    decision = retrain_due(NOW, champion(), backtest(), drift(), **LIMITS)
    assert not decision.due and decision.reasons == ()
    text = " ".join(decision.notes)
    assert "3.0 days old (retrained at 30)" in text
    assert "realised ROC AUC 0.8200 (>= 0.7)" in text and "realised ECE 0.0200 (<= 0.05)" in text
    assert "no drift in the rescore of 2026-04-30" in text


#: Each condition alone: (champion, backtest, drift) -> the words of its reason.
CONDITIONS = {
    "age": (dict(days_old=30.0), {}, {}, "trained 30.0 days ago, training.max_age_days is 30"),
    "auc": ({}, dict(roc_auc=0.69), {}, "realised ROC AUC 0.6900, below monitoring.min_roc_auc"),
    "ece": ({}, dict(ece=0.051), {}, "realised ECE 0.0510, above monitoring.max_ece 0.05"),
    "drift": ({}, {}, dict(flagged=("network",)), "flagged drift (PSI > 0.2): network"),
}


@pytest.mark.parametrize(
    "names",
    [combo for k in range(1, 5) for combo in itertools.combinations(CONDITIONS, k)],
    ids="+".join,
)
def test_each_condition_and_every_combination_makes_it_due_with_its_reasons(names) -> None:
    kwargs: list[dict] = [{}, {}, {}]
    for name in names:
        for i in range(3):
            kwargs[i] |= CONDITIONS[name][i]
    decision = retrain_due(
        NOW, champion(**kwargs[0]), backtest(**kwargs[1]), drift(**kwargs[2]), **LIMITS
    )
    assert decision.due and len(decision.reasons) == len(names)
    for name in names:
        assert any(CONDITIONS[name][3] in reason for reason in decision.reasons), name
    for name in set(CONDITIONS) - set(names):  # the rest are fine, and said so
        assert not any(CONDITIONS[name][3] in reason for reason in decision.reasons)


def test_thresholds_are_strict_where_documented() -> None:
    at = retrain_due(NOW, champion(29.99), backtest(roc_auc=0.7, ece=0.05), drift(), **LIMITS)
    assert not at.due  # AUC at the floor and ECE at the cap are acceptable; 29.99 days is young


def test_evidence_about_an_earlier_model_does_not_count() -> None:
    """A backtest from before the champion was trained, or drift measured with another version,
    judged the previous model: a retrain that just happened is not due again for it."""
    decision = retrain_due(
        NOW,
        champion(days_old=2),
        backtest(roc_auc=0.55, ece=0.2, days_ago=3),
        drift(flagged=("network",), version="3"),
        **LIMITS,
    )
    assert not decision.due
    text = " ".join(decision.notes)
    assert "predates the champion; not counted" in text
    assert "of model version 3, not the champion's; not counted" in text


def test_a_backtest_of_the_previous_version_does_not_count_after_a_retrain() -> None:
    """Run after the retrain, but every complete scoring day was scored by version 3: its poor
    realised metrics judge version 3, so the new champion (4) is not due again for them."""
    old = Backtest("run9", NOW - timedelta(days=1), 0.55, 0.2, model_version="3")
    decision = retrain_due(NOW, champion(days_old=2), old, drift(), **LIMITS)
    assert not decision.due
    assert "run run9) measured model version 3, not the champion's; not counted" in " ".join(
        decision.notes
    )
    mine = Backtest("run9", NOW - timedelta(days=1), 0.55, 0.02, model_version="4")
    assert retrain_due(NOW, champion(days_old=2), mine, drift(), **LIMITS).due


def test_missing_evidence_is_noted_not_due() -> None:
    decision = retrain_due(NOW, champion(), None, None, **LIMITS)
    assert not decision.due
    assert "no backtest run yet" in decision.notes[1] and "no drift record yet" in decision.notes[2]
    nan = retrain_due(
        NOW, champion(), backtest(float("nan"), None), drift(available=False), **LIMITS
    )
    assert not nan.due
    assert "logged no realised_roc_auc" in " ".join(nan.notes)
    assert "logged no realised_ece" in " ".join(nan.notes)
    assert "unavailable: the model carries no training reference" in " ".join(nan.notes)


@pytest.mark.slow  # an MLflow database of its own (and a registered model): ~30 s here
def test_readers_find_the_newest_finished_backtest_and_the_champion(tmp_path, monkeypatch):
    """A backtest run logged as `lapse backtest` logs it (tag lapse.kind=backtest, unstepped
    realised_roc_auc and realised_ece); other runs and failed ones are not read."""
    import mlflow

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert newest_backtest(uri, "lapse-monitoring") is None  # no database: nothing created
    assert champion_of(uri, "lapse-churn") is None and not (tmp_path / "mlflow.db").exists()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment(
        "lapse-monitoring", (tmp_path / "mlruns").resolve().as_uri()
    )
    assert newest_backtest(uri, "lapse-monitoring") is None
    with mlflow.start_run(experiment_id=experiment, tags={"lapse.kind": "backtest"}):
        mlflow.log_metrics({"realised_roc_auc": 0.81, "realised_ece": 0.03})
    tags = {"lapse.kind": "backtest", "backtest.newest_model": "lapse-churn version 12"}
    with mlflow.start_run(experiment_id=experiment, tags=tags) as newest:
        mlflow.log_metrics({"realised_roc_auc": 0.66, "realised_ece": 0.07})
    with mlflow.start_run(experiment_id=experiment, tags={"lapse.kind": "other"}):
        mlflow.log_metrics({"realised_roc_auc": 0.99})
    with mlflow.start_run(experiment_id=experiment, tags={"lapse.kind": "backtest"}):
        mlflow.log_metric("realised_roc_auc", 0.99)
        mlflow.end_run(status="FAILED")
    found = newest_backtest(uri, "lapse-monitoring")
    assert found.run_id == newest.info.run_id
    assert (found.roc_auc, found.ece, found.model_version) == (0.66, 0.07, "12")
    assert abs(found.started - datetime.now(UTC)) < timedelta(minutes=5)
    assert champion_of(uri, "lapse-churn") is None  # a registry without that model


@pytest.mark.slow  # an MLflow database of its own (and a registered model): ~30 s here
def test_the_job_trains_exactly_when_due(tmp_path, monkeypatch, champion: str) -> None:
    """`jobs.train_if_due`: a fresh healthy champion is left alone; a bad backtest after it, or
    drift measured with it, or age, makes the job train (the training itself is `jobs.train`,
    tested on its own; here it is recorded)."""
    import mlflow

    from lapse import jobs
    from lapse.settings import Settings
    from serving.drift import write_drift

    uri = champion
    trained = []
    monkeypatch.setattr(
        jobs.modelling, "train", lambda settings, progress=None: trained.append(1) or "run"
    )
    settings = Settings(store={"path": tmp_path / "store"}, mlflow={"tracking_uri": uri})
    now = datetime.now(UTC)
    calm = jobs.train_if_due(settings, now)
    assert not calm.decision.due and calm.training is None and trained == []
    assert champion_of(uri, "lapse-churn").version == "1"

    old = jobs.train_if_due(settings, now + timedelta(days=31))
    assert old.decision.due and old.training == "run" and len(trained) == 1
    assert "training.max_age_days is 30" in old.decision.reasons[0]

    write_drift(settings.store.path, drift(flagged=("network",), version="1"))
    drifted = jobs.train_if_due(settings, now)
    assert drifted.decision.due and "network" in drifted.decision.reasons[0] and len(trained) == 2
    write_drift(settings.store.path, drift(version="1"))

    experiment = mlflow.create_experiment(
        "lapse-monitoring", (tmp_path / "mlruns").resolve().as_uri()
    )
    with mlflow.start_run(experiment_id=experiment, tags={"lapse.kind": "backtest"}):
        mlflow.log_metrics({"realised_roc_auc": 0.62, "realised_ece": 0.01})
    weak = jobs.train_if_due(settings, datetime.now(UTC))
    assert weak.decision.due and "ROC AUC 0.6200" in weak.decision.reasons[0]
    assert len(trained) == 3
    tolerant = settings.updated(monitoring={"min_roc_auc": 0.6})
    assert not jobs.train_if_due(tolerant, datetime.now(UTC)).decision.due and len(trained) == 3


@pytest.mark.slow  # an MLflow database of its own (and a registered model): ~30 s here
def test_cli_train_if_due_says_why_it_did_nothing(
    tmp_path, monkeypatch, champion: str, capsys
) -> None:
    from lapse.cli import main

    monkeypatch.setenv("LAPSE_MLFLOW__TRACKING_URI", champion)
    monkeypatch.setenv("LAPSE_STORE__PATH", str(tmp_path / "store"))
    with pytest.raises(SystemExit) as exited:
        main(["train", "--if-due"])
    out = " ".join(capsys.readouterr().out.split())
    assert exited.value.code in (0, None)
    assert "Not due, nothing trained:" in out and "(retrained at 30)" in out
    assert "no backtest run yet" in out


def test_an_unreachable_mlflow_is_an_error_not_no_champion(monkeypatch) -> None:
    """A refused connection must not read as "no champion yet" (which would retrain)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from serving import due

    def refused(*args, **kwargs):
        raise MlflowException("API request to http://mlflow:5000 failed: Connection refused")

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setattr(due, "champion_version", refused)
    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", refused)
    uri = "http://user:secret@mlflow:5000"
    for reader in (champion_of, newest_backtest):
        with pytest.raises(due.DueCheckError) as caught:
            reader(uri, "lapse-churn")
        message = str(caught.value)
        assert "cannot tell whether the champion is due" in message and "refused" in message
        assert "secret" not in message and "\n" not in message
