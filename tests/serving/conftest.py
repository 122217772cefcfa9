"""Fixtures for the serving tests: a real Braze emulator on a free loopback port, ledgers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from serving.emulator import Emulator, EmulatorConfig

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
