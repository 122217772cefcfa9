"""serving.ledger on SQLite and on the machine's PostgreSQL: state, outbox, rejections, run lock."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from features.schema import USER_ID
from serving.ledger import (
    ATTRIBUTE,
    VALUE,
    Ledger,
    LedgerError,
    LedgerLockedError,
    OutboxRow,
)
from tests.serving.conftest import POSTGRES_URL, postgres_available

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not postgres_available(), reason=f"no server at {POSTGRES_URL}"),
    ),
]


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, sqlite_url: str, table_prefix: str) -> Iterator[Ledger]:
    """A fresh ledger; on PostgreSQL its tables carry a unique prefix and are dropped after."""
    url = sqlite_url if request.param == "sqlite" else POSTGRES_URL
    led = Ledger(url, prefix=table_prefix)
    try:
        yield led
    finally:
        led.drop()


def rows(*pairs: tuple[str, dict]) -> list[OutboxRow]:
    return [OutboxRow(user, payload) for user, payload in pairs]


def test_outbox_round_trip_and_acknowledged_values(ledger: Ledger) -> None:
    batches = [
        rows(("a", {"risk": "high", "score": 81}), ("b", {"risk": "low"})),
        rows(("c", {"risk": None})),
    ]
    run = ledger.start_run("digest-1", batches)
    assert ledger.open_run().run_id == run
    pending = list(ledger.pending_batches(run))
    assert [(n, [r.user_id for r in rs]) for n, rs in pending] == [(0, ["a", "b"]), (1, ["c"])]
    assert pending[0][1][0].payload == {"risk": "high", "score": 81}

    first = pending[0][1]
    ledger.record_batch(run, acked=[first[0]], failed=[(first[1], "bad id")])
    ledger.record_batch(run, acked=pending[1][1])
    assert list(ledger.pending_batches(run)) == []
    assert ledger.outbox_counts(run) == {"acked": 2, "failed": 1}
    assert ledger.failures(run) == {"bad id": 1}

    ack = ledger.acknowledged().sort_values([USER_ID, ATTRIBUTE]).to_dict("records")
    assert ack == [
        {USER_ID: "a", ATTRIBUTE: "risk", VALUE: "high"},
        {USER_ID: "a", ATTRIBUTE: "score", VALUE: 81},
        {USER_ID: "c", ATTRIBUTE: "risk", VALUE: None},
    ]
    assert ledger.rejected().to_dict("records") == [{USER_ID: "b", ATTRIBUTE: "risk", VALUE: "low"}]
    ledger.finish_run(run)
    assert ledger.open_run() is None


def test_an_acknowledgement_clears_an_earlier_rejection(ledger: Ledger) -> None:
    run = ledger.start_run("d", [rows(("b", {"risk": "low"}))])
    ((_, batch),) = ledger.pending_batches(run)
    ledger.record_batch(run, acked=[], failed=[(batch[0], "blocked")])
    ledger.finish_run(run)
    run = ledger.start_run("e", [rows(("b", {"risk": "high"}))])
    ((_, batch),) = ledger.pending_batches(run)
    ledger.record_batch(run, acked=batch)
    assert ledger.rejected().empty
    assert ledger.acknowledged()[VALUE].tolist() == ["high"]


def test_unknown_outcomes_are_neither_acked_nor_failed(ledger: Ledger) -> None:
    run = ledger.start_run("d", [rows(("a", {"risk": "low"}))])
    ((_, batch),) = ledger.pending_batches(run)
    ledger.record_batch(run, acked=[], unknown=batch)
    assert ledger.outbox_counts(run) == {"unknown": 1}
    assert ledger.acknowledged().empty and ledger.failures(run) == {}


def test_lock_is_exclusive_until_released(ledger: Ledger) -> None:
    holder = ledger.acquire(ttl_s=600)
    with pytest.raises(LedgerLockedError, match="another sync run holds the ledger lock"):
        ledger.acquire(ttl_s=600)
    ledger.heartbeat(holder)
    ledger.release(holder)
    ledger.release(ledger.acquire(ttl_s=600))


def test_a_stale_lock_is_taken_over_and_the_old_holder_stops(ledger: Ledger) -> None:
    old = ledger.acquire(ttl_s=600)
    time.sleep(0.05)
    new = ledger.acquire(ttl_s=0.01)  # no heartbeat for longer than the TTL
    with pytest.raises(LedgerLockedError, match="taken over"):
        ledger.heartbeat(old)
    ledger.heartbeat(new)
    ledger.release(old)  # a late release by the old holder does not free the new one's lock
    with pytest.raises(LedgerLockedError):
        ledger.acquire(ttl_s=600)


def test_a_lock_left_by_a_killed_process_is_taken_over(ledger: Ledger) -> None:
    code = (
        "from serving.ledger import Ledger; import os, signal; "
        f"Ledger({ledger.url!r}, prefix={ledger.prefix!r}).acquire(600); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert proc.returncode == -9
    ledger.release(ledger.acquire(ttl_s=600))


def test_unusable_urls_say_which_setting(tmp_path) -> None:
    with pytest.raises(LedgerError, match="ledger.url"):
        Ledger("nosuchdb://x")
    with pytest.raises(LedgerError, match="cannot open"):
        Ledger(f"sqlite:///{tmp_path}/missing/dir/ledger.db")


def test_a_database_password_never_appears_in_errors() -> None:
    url = "postgresql+psycopg://lapse:s3cret-pw@127.0.0.1:1/ledger"  # port 1: refused at once
    with pytest.raises(LedgerError, match="ledger.url .*cannot open the database") as exc:
        Ledger(url)
    assert "s3cret-pw" not in str(exc.value) and "***" in str(exc.value)
