"""serving.braze_client against the real emulator: statuses, retries, partial errors, pacing."""

from __future__ import annotations

import logging

import pytest

from serving.braze_client import (
    BrazeAuthError,
    BrazeClient,
    BrazeRequestError,
    BrazeUnavailableError,
    _Pacer,
    billable_keys,
)
from serving.emulator import MSG_BLOCKLISTED, MSG_ID_TOO_LARGE, Emulator, parse_faults
from serving.settings import BrazeSettings
from tests.serving.conftest import HTTP, KEY, inspect


def client(emu: Emulator, **overrides: object) -> BrazeClient:
    config = {"url": emu.url, "max_rps": 1000.0, "backoff_s": 0.01, "backoff_max_s": 0.05}
    return BrazeClient(BrazeSettings(**{**config, **overrides}), KEY)


def objects(n: int, start: int = 0, **values: object) -> list[dict[str, object]]:
    ids = range(start, start + n)
    return [{"external_id": f"u{i}", "churn_risk": "high", **values} for i in ids]


def force(emu: Emulator, status: object, count: int = 1) -> None:
    HTTP.post(f"{emu.url}/_emulator/force", json={"status": status, "count": count})


def test_a_full_batch_is_accepted_and_billed(emulator: Emulator) -> None:
    with client(emulator) as c:
        result = c.track(objects(75, _update_existing_only=False))
    assert (result.status, result.accepted, result.errors) == (201, list(range(75)), {})
    assert c.stats.data_points == 75 == inspect(emulator, "stats")["data_points"]
    assert billable_keys({"external_id": "u", "_update_existing_only": True, "a": 1}) == 1
    assert len(inspect(emulator, "profiles")) == 75


def test_batches_over_the_configured_size_are_refused_before_sending(emulator: Emulator) -> None:
    with client(emulator, batch_size=10) as c, pytest.raises(ValueError, match="batch_size 10"):
        c.track(objects(11))
    assert inspect(emulator, "stats")["track_requests"] == 0


@pytest.mark.parametrize("status", [500, 502, 503, 504, "drop"])
def test_retryable_failures_are_retried_with_the_same_batch(emulator: Emulator, status) -> None:
    force(emulator, status, 2)
    with client(emulator) as c:
        result = c.track(objects(5))
    assert result.accepted == [0, 1, 2, 3, 4]
    assert (c.stats.retries, c.stats.requests) == (2, 3)
    assert inspect(emulator, "stats")["objects_accepted"] == 5


def test_timeouts_are_retried(emulator: Emulator) -> None:
    emulator.reconfigure(faults=parse_faults("slow=0:3"))
    force(emulator, "slow", 1)
    with client(emulator, timeout_s=1.0) as c:  # generous: the retry must not time out too
        result = c.track(objects(2))
    assert result.accepted == [0, 1] and c.stats.retries == 1
    assert inspect(emulator, "stats")["faults"] == {"slow": 1}


def test_retries_are_bounded(emulator: Emulator) -> None:
    force(emulator, 503, 10)
    with client(emulator, max_attempts=3) as c, pytest.raises(BrazeUnavailableError) as exc:
        c.track(objects(5))
    assert "failed 3 times" in str(exc.value) and "HTTP 503" in str(exc.value)
    assert c.stats.requests == 3


@pytest.mark.parametrize(("status", "words"), [(401, "invalid API key"), (403, "permission")])
def test_401_and_403_stop_at_once_without_showing_the_key(
    emulator: Emulator, status: int, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    if status == 403:
        emulator.reconfigure(keys_without_permission=frozenset({KEY}))
    config = BrazeSettings(url=emulator.url, max_rps=1000.0)
    key = KEY if status == 403 else "wrong-key-abcdef123"
    with BrazeClient(config, key) as c, pytest.raises(BrazeAuthError) as exc:
        c.track(objects(5))
    assert str(status) in str(exc.value) and words in str(exc.value)
    assert c.stats.requests == 1  # no retry
    assert key not in str(exc.value) and key not in repr(c)
    assert all(key not in record.getMessage() for record in caplog.records)


def test_no_key_is_an_auth_error() -> None:
    with pytest.raises(BrazeAuthError, match="BRAZE_API_KEY"):
        BrazeClient(BrazeSettings(url="http://127.0.0.1:9"), "")


@pytest.mark.parametrize("bad", ["\nX-Injected: y", "\u00e9", "\r"])
def test_a_key_that_cannot_go_in_a_header_is_refused_before_any_request(
    emulator: Emulator, bad: str
) -> None:
    """Not retried as an outage (5 tries, "nothing is lost"), never echoed: refused at once."""
    key = f"canary-{bad}-5f3a"
    config = BrazeSettings(url=emulator.url, max_rps=1000.0)
    with pytest.raises(BrazeAuthError) as exc, BrazeClient(config, key) as c:
        c.track(objects(1))
    message = str(exc.value)
    assert "cannot go in an HTTP header" in message and "canary" not in message
    assert exc.value.__cause__ is None and exc.value.__context__ is None
    assert inspect(emulator, "stats")["track_requests"] == 0


def test_other_client_errors_are_not_retried(emulator: Emulator) -> None:
    with (
        BrazeClient(BrazeSettings(url=emulator.url + "/v9"), KEY) as c,
        pytest.raises(BrazeRequestError, match="404.*check braze.url"),
    ):
        c.track(objects(1))
    assert c.stats.requests == 1


def test_oversized_batches_are_split(emulator: Emulator) -> None:
    emulator.reconfigure(max_objects=10)
    with client(emulator) as c:
        result = c.track(objects(25))
    assert result.accepted == list(range(25))
    assert c.stats.statuses == {400: 3, 201: 4}  # 25 -> 12 + 13 -> 6 + 6 + 6 + 7
    emulator.reconfigure(max_objects=75, max_body_bytes=2000)
    with client(emulator) as c:
        assert c.track(objects(60)).accepted == list(range(60))
    assert 413 in c.stats.statuses


def test_partial_success_maps_errors_to_objects(emulator: Emulator) -> None:
    emulator.reconfigure(blocklisted_ids=frozenset({"u3"}))
    batch = objects(6)
    batch[1]["external_id"] = "x" * 1000
    with client(emulator) as c:
        result = c.track(batch)
    assert result.accepted == [0, 2, 4, 5]
    assert result.errors == {1: MSG_ID_TOO_LARGE, 3: MSG_BLOCKLISTED}
    assert (c.stats.objects_accepted, c.stats.objects_rejected, c.stats.data_points) == (4, 2, 4)


def test_all_invalid_batch_reports_each_object(emulator: Emulator) -> None:
    emulator.reconfigure(blocklisted_ids=frozenset({"u0", "u1"}))
    with client(emulator) as c:
        result = c.track(objects(2))
    assert result.status == 400 and result.accepted == []
    assert result.errors == {0: MSG_BLOCKLISTED, 1: MSG_BLOCKLISTED}


def test_remaining_zero_waits_for_the_reset_so_no_429_is_ever_seen(emulator: Emulator) -> None:
    emulator.reconfigure(burst_limit=3, burst_window_s=1.0)
    with client(emulator) as c:
        for i in range(7):
            assert c.track(objects(1, start=i)).accepted == [0]
    # the emulator answers 429 to a 4th request in a window: all 201 means none was over
    assert [status for _, status in inspect(emulator, "log")] == [201] * 7
    assert c.stats.rate_limited == 0 and c.stats.waited_s > 0


@pytest.mark.parametrize("mode", ["epoch", "seconds"])
def test_429_waits_until_the_reset_never_earlier(emulator: Emulator, mode: str) -> None:
    emulator.reconfigure(header_mode=mode, burst_window_s=1.0)
    force(emulator, 429, 2)  # a short 429 storm
    with client(emulator) as c:
        assert c.track(objects(3)).accepted == [0, 1, 2]
    log = inspect(emulator, "log")
    assert [s for _, s in log] == [429, 429, 201]
    # epoch mode: the reset is the next whole second; seconds mode: Retry-After is >= 1 s.
    for (t_limited, _), (t_next, _) in zip(log, log[1:], strict=False):
        if mode == "epoch":
            assert t_next >= int(t_limited) + 1
        else:
            assert t_next - t_limited >= 1.0
    assert c.stats.rate_limited == 2 and c.stats.retries == 0


def test_a_429_whose_reset_has_passed_by_our_clock_backs_off_instead_of_hammering(
    emulator: Emulator,
) -> None:
    emulator.reconfigure(clock_offset_s=-30.0)  # Braze's clock 30 s behind: its resets look past
    force(emulator, 429, 3)
    with client(emulator, backoff_s=0.1, backoff_max_s=1.0) as c:
        assert c.track(objects(1)).accepted == [0]
    times = [t for t, _ in inspect(emulator, "log")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.1  # exponential backoff, never a 5 ms re-send
    assert c.stats.rate_limited == 3


def test_an_endless_429_storm_gives_up_after_the_configured_waits(emulator: Emulator) -> None:
    emulator.reconfigure(clock_offset_s=-30.0)  # resets look past: backoff, not header waits
    force(emulator, 429, 10)
    storm = pytest.raises(BrazeUnavailableError, match="429 \\(3 times in a row\\)")
    with client(emulator, backoff_s=0.01, backoff_max_s=0.02, max_rate_limit_waits=2) as c, storm:
        c.track(objects(1))
    assert c.stats.rate_limited == 3 and inspect(emulator, "stats")["objects_accepted"] == 0


class FakeTime:
    """A clock that moves only when slept on or stalled: pacing checked without timing."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def test_max_rps_spaces_request_starts() -> None:
    t = FakeTime()
    pacer = _Pacer(20.0, t.clock, t.sleep)
    starts = []
    for _ in range(6):
        pacer.before_request()
        starts.append(t.now)
    assert starts == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])


def test_a_short_stall_is_made_up_but_never_more_than_the_catch_up() -> None:
    t = FakeTime()
    pacer = _Pacer(20.0, t.clock, t.sleep, catch_up_s=0.25)
    starts = []
    for i in range(12):
        pacer.before_request()
        starts.append(t.now)
        if i == 1:
            t.now += 0.5  # the 2nd answer takes 0.5 s: 10 slots are missed
    # 0.25 s of catch-up at 20/s = 5 slots sent back to back with the on-time one, then 1/20 s
    assert starts == pytest.approx([0.0, 0.05] + [0.55] * 6 + [0.6, 0.65, 0.7, 0.75])
