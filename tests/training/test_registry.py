"""training.registry: the champion gate on the same hold-out rows; the served model's fidelity."""

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features import schema
from tests.training.conftest import COUNTRY, TENURE
from training.evaluate import score_metrics
from training.pipeline import ChurnModel
from training.registry import CHAMPION, publish
from training.splits import time_split

NAME = "gate-test"
METRIC = "holdout_pr_auc"


@pytest.fixture(scope="module")
def models(snapshots):
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    X, y, Xv, yv, Xh, yh = [], [], [], [], [], []
    (train, valid, hold) = (split.part(frame, n) for n in ("train", "valid", "holdout"))
    X, y = train.drop(columns=schema.CHURNED), train[schema.CHURNED].astype(int)
    Xv, yv = valid.drop(columns=schema.CHURNED), valid[schema.CHURNED].astype(int)
    Xh, yh = hold.drop(columns=schema.CHURNED), hold[schema.CHURNED].astype(int)
    params = {"num_leaves": 7, "learning_rate": 0.1}
    strong = ChurnModel(params, seed=1).fit(X, y, X_valid=Xv, y_valid=yv)
    weak_cols = [COUNTRY, TENURE]
    weak = ChurnModel(params, seed=1).fit(X[weak_cols], y, X_valid=Xv[weak_cols], y_valid=yv)
    return strong, weak, Xh, yh


def test_gate_moves_champion_only_for_a_better_model(models, mlflow_env) -> None:
    strong, weak, Xh, yh = models
    _, artifacts = mlflow_env
    experiment = mlflow.create_experiment("gate", artifact_location=artifacts)
    score = {m: score_metrics(yh, m.predict_proba(Xh)[:, 1], "holdout")[METRIC] for m in models[:2]}
    assert score[strong] > score[weak]

    decisions = []
    for model in (weak, strong, weak):
        with mlflow.start_run(experiment_id=experiment):
            decisions.append(publish(model, Xh, yh, NAME, METRIC))
    first, second, third = decisions
    assert (first.moved, first.champion, first.reason) == (True, None, "no champion yet")
    assert second.moved and second.champion_version == "1"
    assert second.champion == pytest.approx(score[weak])  # the champion scored on these rows
    assert second.candidate == pytest.approx(score[strong])
    assert not third.moved and third.champion == pytest.approx(score[strong])
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "2"
    assert len(client.search_model_versions(f"name='{NAME}'")) == 3
    run = client.get_run(client.get_model_version(NAME, "3").run_id)
    assert run.data.tags["gate.moved"] == "false"
    assert run.data.metrics[f"gate_champion_{METRIC}"] == pytest.approx(score[strong])

    served = mlflow.sklearn.load_model(f"models:/{NAME}@{CHAMPION}")
    np.testing.assert_array_equal(served.predict_proba(Xh), strong.predict_proba(Xh))
    np.testing.assert_array_equal(
        served.buckets(served.predict_proba(Xh)[:, 1]),
        strong.buckets(strong.predict_proba(Xh)[:, 1]),
    )
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    np.testing.assert_allclose(
        np.asarray(pyfunc.predict(Xh.head(20)))[:, 1], strong.predict_proba(Xh.head(20))[:, 1]
    )


def test_a_champion_that_cannot_score_the_new_hold_out_is_replaced_with_the_reason(
    models, snapshots, mlflow_env
) -> None:
    """A champion trained on a column the data no longer has (the features changed) cannot be
    compared; the new model takes the alias and the decision says why."""
    strong, _, Xh, yh = models
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    train, valid = split.part(frame, "train"), split.part(frame, "valid")
    extra = {"retired_feature": 1.0}
    old = ChurnModel({"num_leaves": 7, "learning_rate": 0.1}, seed=1).fit(
        train.drop(columns=schema.CHURNED).assign(**extra),
        train[schema.CHURNED].astype(int),
        X_valid=valid.drop(columns=schema.CHURNED).assign(**extra),
        y_valid=valid[schema.CHURNED].astype(int),
    )
    _, artifacts = mlflow_env
    experiment = mlflow.create_experiment("gate-changed", artifact_location=artifacts)
    name = "gate-changed-features"
    with mlflow.start_run(experiment_id=experiment):
        assert publish(old, Xh.assign(**extra), yh, name, METRIC).moved
    with mlflow.start_run(experiment_id=experiment):
        decision = publish(strong, Xh, yh, name, METRIC)
    assert decision.moved and decision.champion is None and decision.champion_version == "1"
    assert decision.reason.startswith("the champion could not score the hold-out")
    assert "retired_feature" in decision.reason
    alias = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    assert str(alias.version) == "2"


def test_a_model_that_does_not_beat_the_rule_is_registered_but_never_served(
    models, mlflow_env
) -> None:
    strong, weak, Xh, yh = models
    _, artifacts = mlflow_env
    experiment = mlflow.create_experiment("gate-floor", artifact_location=artifacts)
    name = "gate-floor"
    strong_score = score_metrics(yh, strong.predict_proba(Xh)[:, 1], "holdout")[METRIC]
    with mlflow.start_run(experiment_id=experiment):
        decision = publish(weak, Xh, yh, name, METRIC, floor=strong_score)
    assert not decision.moved and decision.version == "1" and decision.champion_version is None
    assert decision.reason.startswith("it does not beat the CRM rule on the same hold-out")
    with pytest.raises(MlflowException):
        MlflowClient().get_model_version_by_alias(name, CHAMPION)
    with mlflow.start_run(experiment_id=experiment):  # one that beats the floor is served
        assert publish(strong, Xh, yh, name, METRIC, floor=strong_score - 0.01).moved


def test_a_refitted_champion_without_its_time_split_model_is_scored_itself(
    models, mlflow_env
) -> None:
    """A refitted champion whose time-split model's artifacts were deleted is scored by the
    champion itself (the reason says so): the alias does not go to a worse new model."""
    import shutil
    from urllib.parse import urlparse

    from training.registry import EVALUATION_TAG

    strong, weak, Xh, yh = models
    _, artifacts = mlflow_env
    experiment = mlflow.create_experiment("gate-refit", artifact_location=artifacts)
    name = "gate-refit-twin"
    with mlflow.start_run(experiment_id=experiment) as run:
        assert publish(strong, Xh, yh, name, METRIC, evaluation=strong).moved
    uri = MlflowClient().get_run(run.info.run_id).data.tags[EVALUATION_TAG]
    twin = mlflow.get_logged_model(uri.removeprefix("models:/"))
    shutil.rmtree(urlparse(twin.artifact_location).path)
    with mlflow.start_run(experiment_id=experiment):
        decision = publish(weak, Xh, yh, name, METRIC)
    assert not decision.moved and decision.champion_version == "1"
    assert decision.champion == pytest.approx(
        score_metrics(yh, strong.predict_proba(Xh)[:, 1], "holdout")[METRIC]
    )
    assert decision.reason.startswith("scored on the same hold-out rows; its time-split model")
    assert "so the champion itself did" in decision.reason
    assert str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version) == "1"


def test_an_interrupt_right_after_registering_leaves_no_version(
    models, mlflow_env, monkeypatch
) -> None:
    """Ctrl-C (or a scheduler's SIGTERM) between the registry creating the version and
    log_model returning it: the run's version is removed all the same, the alias stays."""
    from training import registry

    strong, weak, Xh, yh = models
    _, artifacts = mlflow_env
    experiment = mlflow.create_experiment("gate-interrupt", artifact_location=artifacts)
    name = "gate-interrupted"
    with mlflow.start_run(experiment_id=experiment):
        assert publish(weak, Xh, yh, name, METRIC).moved
    real = registry.log_model

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "log_model", interrupted)
    with mlflow.start_run(experiment_id=experiment), pytest.raises(KeyboardInterrupt):
        publish(strong, Xh, yh, name, METRIC, evaluation=strong)
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions(f"name='{name}'")] == ["1"]
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
