"""A sync SIGKILLed in each phase of a batch, then superseded by a run with other scores: Braze
(the emulator's profiles) must end equal to the ledger, on SQLite and PostgreSQL (issue 13 #12)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.emulator import Emulator
from serving.ledger import ATTRIBUTE, VALUE, Ledger
from serving.sync import sync
from tests.serving.conftest import KEY, POSTGRES_URL, inspect, postgres_available
from tests.serving.test_sync import make_config, scores

N_USERS, BATCH, KILLED_BATCH = 600, 75, 2
PHASES = ("planned", "marked", "in_reply", "answered", "recorded")

#: The run killed: plain `sync`, with the process killing itself (SIGKILL) at one phase of
#: batch KILLED_BATCH. Nothing is mocked: the wrappers only decide when to die.
CHILD = r"""
import json, os, signal, sys, threading, time
import httpx
import pandas as pd
from serving.braze_client import BrazeClient
from serving.ledger import Ledger
from serving.settings import BrazeSettings, LedgerSettings
from serving.sync import SyncConfig, sync
from training.buckets import BucketPolicy

args = json.loads(sys.argv[1])
phase, target, emulator = args["phase"], args["batch"], args["emulator"]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def requests():
    return httpx.get(emulator + "/_emulator/stats").json()["track_requests"]


calls = {"track": 0, "record": 0}
start_run, track, record_batch = Ledger.start_run, BrazeClient.track, Ledger.record_batch
mark_sending = getattr(Ledger, "mark_sending", None)


def start_run_then_die(self, *a, **k):
    run = start_run(self, *a, **k)
    if phase == "planned":
        die()
    return run


def mark_then_die(self, run_id, batch):
    mark_sending(self, run_id, batch)
    if phase == "marked" and batch == target:
        die()


def track_and_die(self, objects):
    n = calls["track"]
    calls["track"] += 1
    if n == target and phase == "in_reply":  # Braze takes the batch, the answer is slow
        httpx.post(emulator + "/_emulator/force", json={"status": "slow", "count": 1})
        before = requests()

        def kill_once_sent():
            while requests() == before:
                time.sleep(0.005)
            time.sleep(0.05)
            die()

        threading.Thread(target=kill_once_sent, daemon=True).start()
    result = track(self, objects)
    if n == target and phase == "answered":
        die()
    return result


def record_then_die(self, *a, **k):
    record_batch(self, *a, **k)
    calls["record"] += 1
    if phase == "recorded" and calls["record"] == target + 1:
        die()


Ledger.start_run = start_run_then_die
if mark_sending is not None:
    Ledger.mark_sending = mark_then_die
BrazeClient.track = track_and_die
Ledger.record_batch = record_then_die
config = SyncConfig(
    BrazeSettings.model_validate_json(args["braze"]),
    LedgerSettings.model_validate_json(args["ledger"]),
    BucketPolicy.from_json(args["policy"]),
)
sync(pd.read_json(args["scores"], orient="records", dtype={"user_id": str}), config, args["key"])
print("not killed")
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path: Path, table_prefix: str):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}", "lapse_sync_"
        return
    if not postgres_available():
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
    yield POSTGRES_URL, table_prefix
    Ledger(POSTGRES_URL, table_prefix).drop()


def _kill_during(phase: str, emulator: Emulator, config, frame, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    frame.to_json(path, orient="records")
    args = {
        "phase": phase,
        "batch": KILLED_BATCH,
        "emulator": emulator.url,
        "braze": config.braze.model_dump_json(),
        "ledger": config.ledger.model_dump_json(),
        "policy": config.policy.to_json(),
        "scores": str(path),
        "key": KEY,
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr


def _braze_equals_ledger(emulator: Emulator, ledger: Ledger, attribute: str) -> dict[str, object]:
    braze = {user: p.get(attribute) for user, p in inspect(emulator, "profiles").items()}
    ack = ledger.acknowledged()
    held = dict(zip(ack.loc[ack[ATTRIBUTE] == attribute, "user_id"], ack[VALUE], strict=False))
    assert braze == {user: held.get(user) for user in braze}
    return braze


@pytest.mark.parametrize("phase", PHASES)
def test_a_run_killed_in_any_phase_of_a_batch_then_superseded_leaves_braze_equal_to_the_ledger(
    phase: str, emulator: Emulator, ledger_url, tmp_path: Path
) -> None:
    """Sync A completes; sync B (every user moved to high) is SIGKILLed in `phase` of its third
    batch; sync A again supersedes B. Every user B may have changed is sent back, including
    the batch whose answer was lost, and Braze ends equal to the ledger; a further run sends
    nothing. Then B again lands whole."""
    url, prefix = ledger_url
    config = make_config(emulator, url)
    config = config.__class__(
        config.braze, config.ledger.model_copy(update={"table_prefix": prefix}), config.policy
    )
    low = scores({f"u{i:03d}": 0.1 for i in range(N_USERS)})
    high = scores({f"u{i:03d}": 0.9 for i in range(N_USERS)})
    emulator.add_profiles(list(low["user_id"]))
    assert sync(low, config, KEY).acknowledged == N_USERS

    _kill_during(phase, emulator, config, high, tmp_path)
    if phase == "in_reply":  # the emulator applies the slow batch after its delay
        deadline = time.monotonic() + 10
        while inspect(emulator, "stats")["attribute_writes"] < N_USERS + 3 * BATCH:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    again = sync(low, config, KEY)
    ledger = Ledger(url, prefix)
    try:
        braze = _braze_equals_ledger(emulator, ledger, "churn_risk")
        assert set(braze.values()) == {"low"}
        # B changed (or may have changed) batches 0..2 unless killed before sending anything
        assert again.sent == (0 if phase == "planned" else (KILLED_BATCH + 1) * BATCH)
        assert sync(low, config, KEY).sent == 0
        assert sync(high, config, KEY).acknowledged == N_USERS
        assert set(_braze_equals_ledger(emulator, ledger, "churn_risk").values()) == {"high"}
        assert ledger.uncertain().empty
    finally:
        ledger.close()
