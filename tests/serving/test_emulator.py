"""serving.emulator over real HTTP: auth, limits, bodies, profiles, billing, rate limits, faults."""

from __future__ import annotations

import time

import httpx
import pytest

from serving.emulator import (
    MSG_BLOCKLISTED,
    MSG_ID_REQUIRED,
    MSG_ID_TOO_LARGE,
    MSG_NO_VALID,
    Emulator,
    EmulatorConfig,
    EmulatorConfigError,
    FaultSpec,
    parse_faults,
    parse_rate_limit,
)
from tests.serving.conftest import HTTP, KEY, inspect

AUTH = {"Authorization": f"Bearer {KEY}"}


def post(emu: Emulator, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return HTTP.post(
        f"{emu.url}/users/track", json=body, headers=AUTH if headers is None else headers
    )


def attrs(n: int, **values: object) -> list[dict[str, object]]:
    return [{"external_id": f"u{i}", **values} for i in range(n)]


def test_success_body_headers_profiles_and_billing(emulator: Emulator) -> None:
    r = post(emulator, {"attributes": attrs(3, churn_risk="high", score=7)})
    assert r.status_code == 201
    assert r.json() == {"message": "success", "attributes_processed": 3}
    assert r.headers["x-ratelimit-limit"] == "3000"
    assert r.headers["x-ratelimit-remaining"] == "2999"
    # the reset is the end of the 3 s window the request arrived in, by the emulator's clock
    arrived = inspect(emulator, "log")[-1][0]
    assert int(r.headers["x-ratelimit-reset"]) - 3 <= arrived < int(r.headers["x-ratelimit-reset"])
    assert inspect(emulator, "profiles") == {
        f"u{i}": {"churn_risk": "high", "score": 7} for i in range(3)
    }
    # the same values again: billed again (2 points each), and counted as no-op writes
    post(emulator, {"attributes": attrs(3, churn_risk="high", score=7)})
    stats = inspect(emulator, "stats")
    assert (stats["data_points"], stats["noop_writes"], stats["attribute_writes"]) == (12, 6, 6)
    assert inspect(emulator, "writes") == {"u0": 2, "u1": 2, "u2": 2}


def test_update_existing_only_null_arrays_strings_and_inc(emulator: Emulator) -> None:
    emulator.add_profiles(["known"])
    r = post(
        emulator,
        {
            "attributes": [
                {"external_id": "ghost", "_update_existing_only": True, "churn_risk": "low"},
                {"external_id": "known", "_update_existing_only": True, "churn_risk": "low"},
                {"external_id": "known", "tags": ["a", "b", "a"], "n": {"inc": 2}},
                {"external_id": "known", "long": "x" * 256, "padded": "  hi \n"},
            ]
        },
    )
    assert r.status_code == 201
    assert inspect(emulator, "profiles") == {
        "known": {"churn_risk": "low", "tags": ["a", "b"], "n": 2, "padded": "hi"}
    }
    post(emulator, {"attributes": [{"external_id": "known", "churn_risk": None, "n": {"inc": 3}}]})
    assert inspect(emulator, "profiles")["known"] == {"tags": ["a", "b"], "n": 5, "padded": "hi"}
    post(emulator, {"attributes": [{"external_id": "new", "churn_risk": "high"}]})  # created
    assert inspect(emulator, "profiles")["new"] == {"churn_risk": "high"}
    assert inspect(emulator, "stats")["objects_without_effect"] == 1


def test_partial_success_lists_errors_by_array_and_index(emulator: Emulator) -> None:
    emulator.reconfigure(blocklisted_ids=frozenset({"dummy"}))
    body = {
        "attributes": [
            {"external_id": "ok1", "a": 1},
            {"a": 2},
            {"external_id": "dummy", "a": 3},
            {"external_id": "x" * 988, "a": 4},
            {"external_id": "ok2", "braze_id": "b", "a": 5},
        ],
        "events": [{"external_id": "ok1", "name": "e", "time": "2026-01-01T00:00:00Z"}, {}],
    }
    r = post(emulator, body)
    assert r.status_code == 201
    reply = r.json()
    assert (reply["attributes_processed"], reply["events_processed"]) == (1, 1)
    assert [(e["input_array"], e["index"]) for e in reply["errors"]] == [
        ("attributes", 1),
        ("attributes", 2),
        ("attributes", 3),
        ("attributes", 4),
        ("events", 1),
    ]
    assert reply["errors"][0]["type"] == MSG_ID_REQUIRED
    assert reply["errors"][1]["type"] == MSG_BLOCKLISTED
    assert reply["errors"][2]["type"] == MSG_ID_TOO_LARGE
    assert set(inspect(emulator, "profiles")) == {"ok1"}


def test_fatal_statuses(emulator: Emulator) -> None:
    assert post(emulator, {"attributes": attrs(1)}, {}).status_code == 401
    r = post(emulator, {"attributes": attrs(1)}, {"Authorization": "Bearer nope"})
    assert (r.status_code, r.json()) == (401, {"message": "Invalid API Key"})
    r = HTTP.post(f"{emulator.url}/users/trak", json={}, headers=AUTH)
    assert (r.status_code, r.json()) == (404, {"message": "Not Found"})
    r = HTTP.post(f"{emulator.url}/users/track", content=b"{not json", headers=AUTH)
    assert (r.status_code, r.json()) == (400, {"message": "Bad Request", "errors": []})
    r = post(emulator, {"attributes": attrs(76)})
    assert (r.status_code, r.json()["message"]) == (400, "Max Input Length Exceeded")
    r = post(emulator, {"attributes": attrs(40), "events": attrs(40)})  # 80 combined
    assert r.status_code == 400
    r = post(emulator, {"attributes": [{"a": 1}]})
    assert (r.status_code, r.json()["message"]) == (400, MSG_NO_VALID)
    emulator.reconfigure(keys_without_permission=frozenset({KEY}))
    assert post(emulator, {"attributes": attrs(1)}).status_code == 403
    emulator.reconfigure(keys_without_permission=frozenset(), max_body_bytes=100)
    assert post(emulator, {"attributes": attrs(5, pad="x" * 50)}).status_code == 413
    assert inspect(emulator, "stats")["objects_accepted"] == 0


def test_legacy_batch_mode_counts_per_array(emulator: Emulator) -> None:
    emulator.reconfigure(batch_mode="legacy")
    events = [{"external_id": "u", "name": "e", "time": "2026-01-01T00:00:00Z"}] * 75
    assert post(emulator, {"attributes": attrs(75), "events": events}).status_code == 201


def test_rate_limit_answers_429_with_headers_until_the_window_resets(emulator: Emulator) -> None:
    offset = _fresh_window(emulator, burst_limit=2)
    statuses = [post(emulator, {"attributes": attrs(1)}) for _ in range(3)]
    assert [r.status_code for r in statuses] == [201, 201, 429]
    limited = statuses[2]
    assert limited.json() == {"message": "Rate Limit Exceeded"}
    assert limited.headers["x-ratelimit-remaining"] == "0"
    reset = int(limited.headers["x-ratelimit-reset"])
    assert reset == _window_end(offset)
    emulator.reconfigure(clock_offset_s=offset + WINDOW_S)  # the emulator's clock passes the reset
    assert post(emulator, {"attributes": attrs(1)}).status_code == 201


def test_seconds_header_mode_sends_retry_after_only_on_429(emulator: Emulator) -> None:
    _fresh_window(emulator, burst_limit=1, header_mode="seconds")
    ok, limited = (post(emulator, {"attributes": attrs(1)}) for _ in range(2))
    # one second into the window: the reset is 3,599 s away (3,598 if the test took > 1 s)
    assert ok.status_code == 201 and int(ok.headers["x-ratelimit-reset"]) in (3598, 3599)
    assert limited.status_code == 429
    assert limited.headers["x-ratelimit-retry-after"] in ("3598", "3599")
    assert "x-ratelimit-remaining" not in limited.headers


def test_forced_faults_and_dropped_connections(emulator: Emulator) -> None:
    HTTP.post(f"{emulator.url}/_emulator/force", json={"status": 503, "count": 2})
    HTTP.post(f"{emulator.url}/_emulator/force", json={"status": "drop", "count": 1})
    assert [post(emulator, {"attributes": attrs(1)}).status_code for _ in range(2)] == [503, 503]
    with pytest.raises(httpx.RemoteProtocolError):
        post(emulator, {"attributes": attrs(1)})
    assert post(emulator, {"attributes": attrs(1)}).status_code == 201
    stats = inspect(emulator, "stats")
    assert stats["faults"] == {"503": 2, "drop": 1}
    assert stats["objects_accepted"] == 1  # nothing applied on a fault


def test_seeded_faults_repeat_exactly() -> None:
    def run() -> list[int]:
        faults = parse_faults("seed=3,500=0.2,storm=0.1:3")
        with Emulator(EmulatorConfig(api_keys=frozenset({KEY}), faults=faults)) as emu:
            return [post(emu, {"attributes": attrs(1)}).status_code for _ in range(40)]

    first = run()
    assert first == run()
    assert 500 in first and 429 in first and 201 in first
    storm = first.index(429)
    assert first[storm : storm + 3] == [429, 429, 429]


def test_parse_faults_and_rate_limit() -> None:
    f = parse_faults("seed=7,5xx=0.04,503=0.02,slow=0.1:2.5,drop=0.01,storm=0.02:4")
    assert f == FaultSpec(
        seed=7,
        errors={500: 0.01, 502: 0.01, 503: 0.02, 504: 0.01},
        slow=0.1,
        slow_s=2.5,
        drop=0.01,
        storm=0.02,
        storm_len=4,
    )
    assert parse_faults(None) == FaultSpec()
    assert parse_rate_limit("3000/3s") == (3000, 3.0)
    assert parse_rate_limit("50000/1m") == (50000, 60.0)
    assert parse_rate_limit("10/500ms") == (10, 0.5)
    for bad in ("drop", "boom=0.1", "drop=1.5", "500=0.6,502=0.6", "slow=0.1:x"):
        with pytest.raises(EmulatorConfigError, match="--faults"):
            parse_faults(bad)
    for bad in ("3000", "0/3s", "3000/0", "a/b"):
        with pytest.raises(EmulatorConfigError, match="--rate-limit"):
            parse_rate_limit(bad)


WINDOW_S = 3600.0


def _fresh_window(emulator: Emulator, **config: object) -> float:
    """Set the emulator's clock one second into a fresh hour-long rate-limit window, so no
    window rolls over mid-test however slow the machine; returns the clock offset."""
    offset = WINDOW_S - time.time() % WINDOW_S + 1.0
    emulator.reconfigure(burst_window_s=WINDOW_S, clock_offset_s=offset, **config)
    return offset


def _window_end(offset: float) -> int:
    """The epoch second the current window ends, by the emulator's clock."""
    return int((time.time() + offset) // WINDOW_S + 1) * int(WINDOW_S)


def test_the_cli_serves_until_sigterm_then_prints_what_it_served(tmp_path) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LAPSE_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lapse.cli import main; main()", "braze-emulator"]
        + ["--port", str(port), "--rate-limit", "5/1s", "--faults", "seed=1"],
        env={**env, "BRAZE_API_KEY": KEY, "NO_COLOR": "1", "COLUMNS": "200"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = HTTP.post(
                    f"http://127.0.0.1:{port}/users/track",
                    json={"attributes": attrs(2)},
                    headers=AUTH,
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert r.status_code == 201 and r.headers["x-ratelimit-limit"] == "5"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # reaped here, or its ResourceWarning fails a later test
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "5 requests per 1 s" in out and "Emulator served" in out
    assert "objects accepted" in out and KEY not in out + err


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_a_malformed_content_length_is_a_400_not_a_crash_or_a_hang(
    emulator: Emulator, length: str
) -> None:
    import socket

    request = (
        f"POST /users/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Length: {length}\r\n\r\n{{}}"
    )
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
        sock.sendall(request.encode())
        reply = b""
        while chunk := sock.recv(4096):  # the emulator hangs up after answering
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert reply.endswith(b'{"message": "Bad Request", "errors": []}')


def test_bad_inspection_requests_are_400s_that_say_what_was_expected(emulator: Emulator) -> None:
    url = f"{emulator.url}/_emulator"
    for path, body, needle in [
        ("force", [503], "a JSON object"),
        ("force", {"status": 503, "count": "x"}, "count"),
        ("force", {"status": 404}, "status 5xx, 429, drop, slow or garbled, found '404'"),
        ("profiles", {"external_ids": "u1"}, "external_ids"),
    ]:
        r = HTTP.post(f"{url}/{path}", json=body)
        assert r.status_code == 400 and needle in r.json()["message"], (path, body, r.text)
    assert HTTP.post(f"{url}/nothing", json={}).status_code == 404
    assert inspect(emulator, "profiles") == {} and inspect(emulator, "stats")["faults"] == {}


def test_the_cli_names_a_bad_profiles_file_and_a_busy_port(tmp_path, capsys, monkeypatch) -> None:
    import socket

    from lapse.cli import main

    monkeypatch.delenv("BRAZE_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    users = tmp_path / "users.csv"
    users.write_text("id,score\n1,2\n")
    with pytest.raises(SystemExit) as exited:
        main(["braze-emulator", "--port", "0", "--profiles", str(users)])
    assert exited.value.code == 1
    assert "users.csv: no 'user_id' column (found id, score)" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["braze-emulator", "--port", str(port)])
    assert exited.value.code == 1
    assert f"--port {port}: cannot listen on 127.0.0.1" in capsys.readouterr().err
