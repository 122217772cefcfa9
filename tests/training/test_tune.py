"""training.tune: TPE + pruning on SQLite and PostgreSQL, resuming, nested MLflow runs."""

import uuid

import mlflow
import optuna
import psycopg
import pytest

from base import safe_url
from features import schema
from training.pipeline import feature_types, preprocessor
from training.settings import OptunaSettings, TrainingSettings
from training.splits import time_split
from training.tune import (
    TuneConfig,
    TuningError,
    first_trial,
    max_child_samples,
    storage,
    tune,
)


def tune_config(url: str, name: str, n_trials: int, seed: int = 0, stop: int = 50) -> TuneConfig:
    training = TrainingSettings(seed=seed, early_stopping_rounds=stop)
    return TuneConfig(OptunaSettings(storage=url, n_trials=n_trials), name, training)


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def prepared(snapshots):
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    train, valid = split.part(frame, "train"), split.part(frame, "valid")
    X, y = train.drop(columns=schema.CHURNED), train[schema.CHURNED].astype(int)
    Xv, yv = valid.drop(columns=schema.CHURNED), valid[schema.CHURNED].astype(int)
    pre = preprocessor(feature_types(X)).fit(X, y)
    return pre.transform(X), y, pre.transform(Xv), yv


def test_sqlite_study_resumes_to_the_trial_budget(prepared, tmp_path) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    seen = []
    config = tune_config(url, "s", 3, seed=1, stop=10)
    result = tune(*prepared, config, progress=lambda *a: seen.append(a))
    assert result.finished == 3
    assert seen[0] == ("tune", 0, 3) and seen[-1] == ("tune", 3, 3)
    assert 0.6 < result.best_value <= 1.0
    assert result.best_iteration >= 1 and "num_leaves" in result.best_params
    more = tune(*prepared, tune_config(url, "s", 5, seed=1, stop=10))
    assert more.finished == 5
    assert more.best_value >= result.best_value
    assert stored_trials(url, "s") == 5


def stored_trials(url: str, name: str) -> int:
    rdb = storage(url)
    try:
        return len(optuna.load_study(study_name=name, storage=rdb).trials)
    finally:
        rdb.engine.dispose()


def test_trials_are_nested_mlflow_runs(prepared, tmp_path, mlflow_env) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    _, artifacts = mlflow_env
    experiment = mlflow.create_experiment("tune-test", artifact_location=artifacts)
    with mlflow.start_run(experiment_id=experiment) as parent:
        tune(*prepared, tune_config(url, "n", 2, stop=5))
    runs = mlflow.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(runs["tags.mlflow.runName"]) == ["trial-0", "trial-1"]
    assert runs["params.num_leaves"].notna().all()


def test_a_new_study_starts_from_the_safe_point_sized_to_the_rows(prepared, tmp_path) -> None:
    Xt, y, *_ = prepared
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    tune(*prepared, tune_config(url, "first", 2, stop=5))
    rdb = storage(url)
    trials = optuna.load_study(study_name="first", storage=rdb).get_trials()
    rdb.engine.dispose()
    start = first_trial(len(y))
    assert {k: trials[0].params[k] for k in start} == start
    assert len(y) == 1800 and start["min_child_samples"] == 18  # a hundredth of the rows
    assert trials[1].params != trials[0].params  # then the search proper
    # a leaf of a small app may need no more than an eighth of its rows; large apps keep 800
    assert (max_child_samples(2400), max_child_samples(100), max_child_samples(10**6)) == (
        300,
        20,
        800,
    )


def test_postgresql_storage(prepared) -> None:
    try:
        with psycopg.connect(POSTGRES.replace("+psycopg", ""), connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES}: {exc}")
    name = f"lapse-test-{uuid.uuid4().hex}"
    try:
        study = tune(
            *prepared,
            tune_config(POSTGRES, name, 2, stop=5),
        )
        assert stored_trials(POSTGRES, name) == 2
        assert study.finished == 2 and study.best_value > 0.6
    finally:
        rdb = storage(POSTGRES)
        optuna.delete_study(study_name=name, storage=rdb)
        rdb.engine.dispose()


def test_no_completed_trial_is_an_error(prepared, tmp_path) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    config = tune_config(url, "pruned-only", 1)
    rdb = storage(url)
    study = optuna.create_study(study_name=config.study_name, storage=rdb, direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    rdb.engine.dispose()
    with pytest.raises(TuningError, match="'pruned-only' in sqlite:///.* no completed trial"):
        tune(*prepared, config)


def test_safe_url_masks_the_password() -> None:
    assert (
        safe_url("postgresql+psycopg://u:secret@db/optuna")
        == "postgresql+psycopg://u:***@db/optuna"
    )
