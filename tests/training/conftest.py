"""Small snapshot frames with a planted signal, built in the test (no generator, no store)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.registry import Feature

AUTO_RENEW_OFF = "t_auto_renew_off"
ENGAGEMENT = "t_engagement"
COUNTRY = "t_country"
TENURE = "t_tenure"
CONSTANT = "t_constant"

#: A registry for the test columns (the real one is filled by features/).
TEST_REGISTRY = {
    AUTO_RENEW_OFF: Feature(AUTO_RENEW_OFF, "state", "boolean", "auto-renew off", "auto_renew_off"),
    ENGAGEMENT: Feature(ENGAGEMENT, "engagement", "numeric", "sessions", "falling_engagement"),
    COUNTRY: Feature(COUNTRY, "context", "categorical", "country", "context"),
    TENURE: Feature(TENURE, "history", "numeric", "days subscribed", "plan_and_tenure"),
}


def make_snapshots(
    users: int = 600, cutoffs: int = 6, every_days: int = 7, seed: int = 0, signal: float = 1.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(snapshots, truth): features + CHURNED by SNAPSHOT_INDEX, and the true probability."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-02-02", tz="UTC")
    frames, truths = [], []
    countries = np.array(["US", "DE", "FR", "BR", "XX"], dtype=object)
    effect = {"US": 0.0, "DE": -0.5, "FR": 0.3, "BR": 0.8, "XX": 0.0}
    for c in range(cutoffs):
        as_of = start + pd.Timedelta(days=every_days * c)
        off = rng.random(users) < 0.2
        engagement = rng.gamma(2.0, 2.0, users)
        country = countries[rng.choice(5, users, p=[0.4, 0.25, 0.2, 0.149, 0.001])]
        tenure = rng.integers(1, 400, users)
        logit = -1.6 + signal * (
            2.0 * off - 0.35 * (engagement - 4) + np.vectorize(effect.get)(country)
        )
        prob = 1 / (1 + np.exp(-logit))
        churned = rng.random(users) < prob
        engagement_seen = np.where(rng.random(users) < 0.1, np.nan, engagement)
        country_seen = np.where(rng.random(users) < 0.05, None, country)
        index = pd.MultiIndex.from_arrays(
            [
                pd.DatetimeIndex(np.full(users, as_of)).as_unit("us"),
                pd.Index([f"u{i:05d}" for i in range(users)], dtype="str"),
                pd.Index(np.where(np.arange(users) % 3 == 0, "android", "ios"), dtype="str"),
            ],
            names=list(schema.SNAPSHOT_INDEX),
        )
        frames.append(
            pd.DataFrame(
                {
                    ENGAGEMENT: engagement_seen,
                    COUNTRY: pd.array(country_seen, dtype="str"),
                    AUTO_RENEW_OFF: pd.array(off, dtype="boolean"),
                    TENURE: tenure,
                    CONSTANT: 1.0,
                    schema.CHURNED: pd.array(churned, dtype="boolean"),
                },
                index=index,
            )
        )
        truths.append(
            pd.DataFrame(
                {
                    schema.USER_ID: index.get_level_values(schema.USER_ID),
                    schema.PLATFORM: index.get_level_values(schema.PLATFORM),
                    schema.AS_OF: index.get_level_values(schema.AS_OF),
                    schema.CHURN_PROBABILITY: prob,
                    schema.CHURNED: churned,
                }
            )
        )
    return pd.concat(frames), pd.concat(truths, ignore_index=True)


@pytest.fixture(scope="session")
def snapshots() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_snapshots()


@pytest.fixture(scope="session")
def fitted_on_snapshots(snapshots):
    """(model, hold-out X, hold-out y): a small ChurnModel fitted on the time split."""
    from training.pipeline import ChurnModel
    from training.splits import time_split

    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    train, valid, hold = (split.part(frame, n) for n in ("train", "valid", "holdout"))
    model = ChurnModel({"num_leaves": 7}, seed=0).fit(
        train.drop(columns=schema.CHURNED),
        train[schema.CHURNED].astype(int),
        X_valid=valid.drop(columns=schema.CHURNED),
        y_valid=valid[schema.CHURNED].astype(int),
        registry=TEST_REGISTRY,
    )
    return model, hold.drop(columns=schema.CHURNED), hold[schema.CHURNED].astype(int).to_numpy()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """One MLflow tracking DB for the session (creating its tables takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{(root / 'mlflow.db').resolve()}", (root / "mlruns").resolve().as_uri()


@pytest.fixture
def mlflow_env(mlflow_store, tmp_path, monkeypatch):
    """MLflow tracking and artifacts in a temporary folder (never the repo), telemetry off.

    The tracking DB is shared by the session: tests use their own experiment and model names.
    """
    import mlflow

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(mlflow_store[0])
    yield mlflow_store
    if mlflow.active_run():
        mlflow.end_run()
