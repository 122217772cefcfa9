"""The Braze API key never leaves the process (issue 13 #15): every command, run with -v and a
recognisable key, shows it in no output, log, traceback, database row or MLflow param/tag."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from lapse.settings import API_KEY_ENV, ENV_PREFIX
from serving.emulator import Emulator, EmulatorConfig
from tests.lapse.test_cli import LAPSE

CANARY = "sekrit-CANARY-5f3a"


def _env(key: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(ENV_PREFIX) and k.upper() not in {API_KEY_ENV, "FORCE_COLOR"}
    }
    return {
        **env,
        API_KEY_ENV: key,
        "NO_COLOR": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "LAPSE_TRAINING__MIN_CHURNERS": "20",
    }


def _dump_sqlite(path: Path) -> str:
    """Every row of every table of a SQLite file, as text."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            f"{table}: {row!r}"
            for table in tables
            for row in db.execute(f'SELECT * FROM "{table}"')
        )


@pytest.mark.slow
def test_the_api_key_appears_in_no_output_file_or_database_row(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    braze = Emulator(EmulatorConfig(api_keys=frozenset({CANARY}))).start()
    (work / "lapse.toml").write_text(
        '[store]\npath = "store"\n\n'
        '[mlflow]\ntracking_uri = "sqlite:///mlflow.db"\nartifact_location = "mlruns"\n\n'
        '[optuna]\nstorage = "sqlite:///optuna.db"\n\n'
        '[ledger]\nurl = "sqlite:///ledger.db"\n\n'
        f"[braze]\nurl = {json.dumps(braze.url)}\nmax_rps = 500.0\n"
    )
    outputs: list[tuple[str, str]] = []

    def lapse(*args: str, key: str = CANARY, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(LAPSE), "-v", *args],
            cwd=work,
            env=_env(key),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outputs.append((" ".join(args), done.stdout + done.stderr))
        assert (done.returncode == 0) == ok, done.stderr[-3000:]
        return done

    try:
        start = date(2026, 1, 1)
        lapse("generate", "--out", "store/synthetic", "--users", "1500", "--days", "90",
              "--start", str(start), "--horizon-days", "14")  # fmt: skip
        end = start + timedelta(days=90)  # the first day without data
        lapse("ingest", "store/synthetic/raw")
        lapse("train", "--trials", "1", "--horizon", "14")
        as_of = str(end)
        lapse("rescore", "--as-of", as_of, "--dry-run", "--out", "scores.parquet")
        braze.add_profiles(pd.read_parquet(work / "scores.parquet")["user_id"].tolist())
        lapse("sync", "--scores", "scores.parquet", "--dry-run")
        # a wrong key: Braze answers 401, the run stops (the next run resumes it)
        lapse("sync", "--scores", "scores.parquet", key="not-the-key-" + CANARY[::-1], ok=False)
        lapse("sync", "--scores", "scores.parquet")
        assert braze.stats()["objects_accepted"] > 0  # the key did reach Braze, as a header
        lapse("rescore", "--as-of", as_of)
        lapse("backtest", "--report", "backtest.html")  # the day is pending: a run all the same
        # refused keys: the canary with a line break, and with a non-ASCII letter
        for bad in (f"{CANARY}\nX-Injected: y", f"{CANARY}\u00e9"):
            lapse("sync", "--scores", "scores.parquet", key=bad, ok=False)
        lapse("braze-emulator", "--port", "0", key=f"{CANARY}\u00e9", ok=False)
        # the emulator command, briefly: it takes the key as the one it accepts
        proc = subprocess.Popen(
            [str(LAPSE), "-v", "braze-emulator", "--port", "0"],
            cwd=work,
            env={**_env(CANARY), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        seen = ""
        while "127.0.0.1" not in seen and proc.poll() is None:  # serving: its table is out
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        seen += proc.communicate(timeout=30)[0]
        watchdog.cancel()
        outputs.append(("braze-emulator", seen))
        assert "127.0.0.1" in seen, seen[-2000:]
    finally:
        braze.stop()

    for command, text in outputs:
        assert CANARY not in text, command
        assert CANARY[::-1] not in text, command
    databases = [p for p in work.rglob("*.db")]
    assert {p.name for p in databases} >= {"ledger.db", "mlflow.db", "optuna.db"}
    for db in databases:
        rows = _dump_sqlite(db)
        assert CANARY not in rows, db
    assert "params" in _dump_sqlite(work / "mlflow.db")  # MLflow's params and tags were read
    for path in work.rglob("*"):  # logs, artifacts, WAL files, the scores: raw bytes
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
