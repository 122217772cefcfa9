"""Fixtures for the serving tests: a real Braze emulator on a free loopback port, ledgers, a small
model with a planted signal, a one-subscriber store and a registry whose champion is that model."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features import schema as s
from serving.emulator import Emulator, EmulatorConfig
from training.pipeline import ChurnModel

KEY = "test-key-5f3a9c1e77"
HTTP = httpx.Client(timeout=10)  # one client for the tests: building one per request costs ~50 ms
POSTGRES_URL = os.environ.get(
    "LAPSE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The emulator serving in a thread on 127.0.0.1:<free port>, stopped after the test."""
    emu = Emulator(EmulatorConfig(api_keys=frozenset({KEY}))).start()
    try:
        yield emu
    finally:
        emu.stop()


def inspect(emu: Emulator, what: str) -> object:
    """GET /_emulator/<what> over HTTP, as a benchmark or another process would."""
    response = HTTP.get(f"{emu.url}/_emulator/{what}")
    response.raise_for_status()
    return response.json()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def postgres_available() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no server to test against
        return False


@pytest.fixture
def table_prefix() -> str:
    """A unique prefix, so tests sharing one PostgreSQL database never see each other's tables."""
    return f"t{uuid.uuid4().hex[:10]}_"


# --- a small model, a one-subscriber store, a registry serving the model --------------------------


def planted_features(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Registered feature names with a planted signal: auto-renew off and few sessions churn."""
    rng = np.random.default_rng(seed)
    off = (rng.random(n) < 0.25).astype(float)
    sessions = rng.poisson(6, n).astype(float)
    logit = -2.0 + 2.5 * off - 0.3 * (sessions - 6)
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    index = pd.MultiIndex.from_arrays(
        [
            pd.Index([f"u{i:05d}" for i in range(n)], dtype="str"),
            pd.Index(np.where(np.arange(n) % 2 == 0, "ios", "android"), dtype="str"),
        ],
        names=list(s.SUBSCRIBER_INDEX),
    )
    frame = pd.DataFrame(
        {
            "auto_renew_off": off,
            "sessions_28d": sessions,
            "country": pd.array(rng.choice(["US", "DE", "BR"], n), dtype="str"),
        },
        index=index,
    )
    return frame, churned


@pytest.fixture(scope="module")
def model() -> ChurnModel:
    X, y = planted_features(3000, 1)
    Xv, yv = planted_features(1500, 2)
    return ChurnModel(params={"num_leaves": 7, "learning_rate": 0.1}, seed=3).fit(
        X, y, X_valid=Xv, y_valid=yv
    )


@pytest.fixture
def small_store(tmp_path):
    """One monthly subscriber active from 2026-01-01 to 2026-01-31, with sessions, as a store."""
    from tests.features.conftest import History, write_store

    h = History().install("u1", 0).sub("u1", 0.1, "activation", expires=31).sessions("u1", 0, 20, 2)
    return write_store(h.frame(), tmp_path, commits=1)


def enter_registry_folder(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in ``work`` with the caller's LAPSE_ variables cleared and MLflow telemetry off."""
    for name in [n for n in os.environ if n.startswith("LAPSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(work)


def publish_champion(work: Path, model: ChurnModel) -> str:
    """A new MLflow registry in ``work`` whose ``lapse-churn`` champion is ``model`` (version 1);
    the global tracking URI is left on it. Returns the tracking URI."""
    import mlflow

    from training.registry import publish

    uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("champion", (work / "mlruns").resolve().as_uri())
    X, y = planted_features(300, 11)
    with mlflow.start_run(experiment_id=experiment):
        assert publish(model, X, y, "lapse-churn", "holdout_pr_auc").moved
    return uri


@pytest.fixture
def champion(tmp_path, monkeypatch, model: ChurnModel) -> str:
    """An MLflow registry in ``tmp_path/registry`` (the working folder) whose ``lapse-churn``
    champion is ``model``; the caller's LAPSE_ variables are cleared. Returns the tracking URI."""
    work = tmp_path / "registry"
    work.mkdir()
    enter_registry_folder(work, monkeypatch)
    return publish_champion(work, model)
