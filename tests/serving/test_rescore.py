"""Rescoring: a feature frame becomes the scores-file contract; the champion is found or named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features import load_events
from features import schema as s
from features.from_store import StaleStoreError
from features.ingest import StoreError
from features.registry import REASON_GROUPS
from serving.rescore import rescore
from serving.scores import ScoresFileError, read_scores, read_scores_policy, write_scores
from serving.scoring import ScoringError as RescoreError
from serving.scoring import score
from tests.serving.conftest import planted_features
from training.pipeline import ChurnModel
from training.reasons import OTHER
from training.registry import ModelNotFoundError, champion_uri, load_model


def test_score_is_the_scores_contract(model: ChurnModel) -> None:
    """One row per subscriber: calibrated probability, the model's bucket, rising-risk reasons."""
    X, _ = planted_features(400, 7)
    scores = score(model, X)
    assert list(scores.columns) == [
        s.USER_ID,
        s.PLATFORM,
        s.CHURN_PROBABILITY,
        s.BUCKET,
        s.REASONS,
    ]
    assert scores[s.USER_ID].tolist() == X.index.get_level_values(s.USER_ID).tolist()
    expected = model.predict_proba(X)[:, 1]
    np.testing.assert_allclose(scores[s.CHURN_PROBABILITY], expected, atol=5e-7)
    # the default policy written out: high from 0.5, medium from 0.2
    p = scores[s.CHURN_PROBABILITY].to_numpy()
    rule = np.where(p >= 0.5, "high", np.where(p >= 0.2, "medium", "low"))
    assert scores[s.BUCKET].tolist() == rule.tolist()
    assert {"high", "medium", "low"} <= set(rule)
    allowed = set(REASON_GROUPS) | {OTHER}
    assert all(set(r) <= allowed and len(r) <= 3 for r in scores[s.REASONS])
    # users with auto-renew off have it among their reasons far more often than the others
    has_reason = scores[s.REASONS].map(lambda r: "auto_renew_off" in r).to_numpy()
    off = X["auto_renew_off"].to_numpy() == 1
    assert p[off].mean() > 2 * p[~off].mean()  # the planted signal, not just the model's echo
    assert has_reason[off].mean() > 0.9 > has_reason[~off].mean()


def test_score_names_missing_columns(model: ChurnModel) -> None:
    X, _ = planted_features(10, 7)
    with pytest.raises(RescoreError, match="sessions_28d"):
        score(model, X.drop(columns="sessions_28d"))


@pytest.mark.parametrize("name", ["scores.parquet", "scores.csv"])
def test_written_scores_read_back_for_sync(model: ChurnModel, tmp_path, name: str) -> None:
    """What `lapse rescore` writes is what `lapse sync --scores` reads (top reason kept)."""
    X, _ = planted_features(50, 9)
    scores = score(model, X)
    path = write_scores(scores, tmp_path / "out" / name)
    back = read_scores(path).set_index(s.USER_ID).loc[scores[s.USER_ID]]
    np.testing.assert_allclose(back[s.CHURN_PROBABILITY], scores[s.CHURN_PROBABILITY])
    first = [r[0] if len(r) else None for r in scores[s.REASONS]]
    assert back[s.REASONS].tolist() == first


def test_write_scores_refuses_other_formats(model: ChurnModel, tmp_path) -> None:
    X, _ = planted_features(5, 9)
    with pytest.raises(ScoresFileError, match="expected a .parquet or .csv"):
        write_scores(score(model, X), tmp_path / "scores.json")


def test_no_champion_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    database = (tmp_path / "mlflow.db").resolve()
    uri = f"sqlite:///{database}"
    with pytest.raises(ModelNotFoundError, match=f"no MLflow database at {database}.*lapse train"):
        load_model(uri, champion_uri("no-such-model"))
    assert not database.exists()  # asking created nothing
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    MlflowClient().search_experiments()  # an MLflow database without that model
    with pytest.raises(ModelNotFoundError, match="models:/no-such-model@champion: no model to"):
        load_model(uri, champion_uri("no-such-model"))


def test_rescore_refuses_stale_data_and_an_empty_day(small_store, model: ChurnModel) -> None:
    """A stalled ingest must not turn into a day of nulls and wrong buckets in Braze."""
    with pytest.raises(
        StaleStoreError, match=r"newest event .* 2026-01-20 18:00 UTC, 10.2 days earlier"
    ):
        rescore(small_store, "2026-01-31", model)
    with pytest.raises(StoreError, match="no subscriber is active at 2026-03-01"):
        rescore(small_store, "2026-03-01", model, max_stale_days=60)
    fresh = rescore(small_store, "2026-01-21", model)  # the day after the last session
    assert fresh.scores[s.USER_ID].tolist() == ["u1"] and fresh.events == len(
        load_events(small_store)
    )


def test_cli_rescore_dry_run_leaves_the_scores_file_alone(
    small_store, model: ChurnModel, champion: str, monkeypatch, capsys
) -> None:
    """`lapse rescore --dry-run` scores with the champion and shows the plan; it writes a
    scores file only where --out asks (the day's file may await a real `lapse sync` retry)."""
    from pathlib import Path

    from lapse.cli import main

    work = Path.cwd()
    monkeypatch.setenv("LAPSE_MLFLOW__TRACKING_URI", champion)
    monkeypatch.setenv("LAPSE_LEDGER__URL", f"sqlite:///{(work / 'ledger.db').resolve()}")
    args = ["rescore", "--store", str(small_store), "--as-of", "2026-01-21", "--dry-run"]
    with pytest.raises(SystemExit) as exited:
        main(args)
    out = " ".join(capsys.readouterr().out.split())
    assert exited.value.code in (0, None) and "(not written: dry run" in out
    assert "(none) -> " in out and not (small_store / "scores").exists()
    with pytest.raises(SystemExit) as exited:
        main([*args, "--out", str(work / "s.parquet")])
    assert exited.value.code in (0, None)
    assert read_scores(work / "s.parquet")[s.USER_ID].tolist() == ["u1"]
    assert read_scores_policy(work / "s.parquet") == model.bucket_policy_


def test_rescore_builds_the_features_the_model_was_trained_with(small_store) -> None:
    """A model trained on other engagement windows scores a store with its own windows, not
    the default ones (the model carries its feature definition)."""
    from features.settings import FeatureConfig

    X, y = planted_features(2000, 21)
    Xv, yv = planted_features(1000, 22)
    wide = FeatureConfig(windows=(5, 20), trend_days=20)
    renamed = {"sessions_28d": "sessions_20d"}
    model = ChurnModel({"num_leaves": 7}, seed=3, feature_config=wide).fit(
        X.rename(columns=renamed), y, X_valid=Xv.rename(columns=renamed), y_valid=yv
    )
    assert model.feature_definition == wide
    scored = rescore(small_store, "2026-01-21", model)
    assert scored.scores[s.USER_ID].tolist() == ["u1"]
    with pytest.raises(RescoreError, match="sessions_20d"):  # default windows lack the column
        from features import build_features

        score(model, build_features(load_events(small_store), "2026-01-21"))


def test_a_model_saved_before_it_carried_its_features_is_refused(model: ChurnModel) -> None:
    """Models registered by an older Lapse say to train again, at load and when explaining."""
    import copy

    from training.pipeline import ModelVersionError
    from training.reasons import explain

    old = copy.deepcopy(model)
    del old.feature_config_, old.reason_groups_
    with pytest.raises(ModelVersionError, match="older Lapse.*run `lapse train` again"):
        old.feature_definition  # noqa: B018
    X, _ = planted_features(5, 9)
    with pytest.raises(ModelVersionError, match="run `lapse train` again"):
        explain(old, X)


def test_a_failed_parquet_write_leaves_the_previous_scores_file_whole(
    model: ChurnModel, tmp_path, monkeypatch
) -> None:
    import pyarrow.parquet as pq

    X, _ = planted_features(5, 9)
    scores = score(model, X)
    path = write_scores(scores, tmp_path / "scores-2026-04-20.parquet")
    before = path.read_bytes()

    def half_written(table, where, **kwargs) -> None:
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", half_written)
    with pytest.raises(ScoresFileError, match="No space left on device"):
        write_scores(scores.head(2), path)
    assert path.read_bytes() == before  # readers never saw the half-written one
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing left behind
