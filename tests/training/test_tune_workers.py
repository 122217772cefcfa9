"""`lapse train --workers N`: trials in N processes on one shared PostgreSQL study; SQLite is
refused for that, before any work."""

from __future__ import annotations

import uuid

import mlflow
import optuna
import pytest

from features import schema
from training.pipeline import feature_types, preprocessor
from training.settings import OptunaSettings, TrainingSettings
from training.splits import time_split
from training.tune import TuneConfig, TuningError, check_workers, storage, tune

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


def test_several_workers_on_sqlite_are_refused(prepared, tmp_path) -> None:
    url = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    settings = OptunaSettings(storage=url, n_trials=4, workers=2)
    with pytest.raises(TuningError, match=r"optuna.workers = 2 \(--workers\) needs .* SQLite"):
        tune(*prepared, TuneConfig(settings, "s"))
    assert not (tmp_path / "optuna.db").exists()  # refused before the study was made
    check_workers(OptunaSettings(storage=url, workers=1))  # one process is fine


@pytest.mark.slow
def test_two_processes_share_one_postgres_study(prepared, mlflow_env) -> None:
    """Both processes run trials of the same study (their own process ids), the budget is the
    total, and each trial is a nested run of the parent MLflow run."""
    name = f"workers-{uuid.uuid4().hex[:8]}"
    settings = OptunaSettings(storage=POSTGRES, n_trials=6, workers=2)
    config = TuneConfig(settings, name, TrainingSettings(seed=2, early_stopping_rounds=10))
    seen = []
    with mlflow.start_run() as parent:
        result = tune(*prepared, config, progress=lambda *a: seen.append(a))
    rdb = storage(POSTGRES)
    try:
        trials = optuna.load_study(study_name=name, storage=rdb).trials
    finally:
        rdb.engine.dispose()
    finished = [t for t in trials if t.state.is_finished()]
    assert 6 <= len(finished) <= 7  # MaxTrialsCallback may let one in-flight trial finish
    assert result.finished == len(finished) and 0.6 < result.best_value <= 1.0
    assert seen[-1] == ("tune", 6, 6)
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    assert len(children) == len(trials)
