"""A local Braze `POST /users/track` emulator that follows ../shared/specs/braze-users-track.md.

It is a real HTTP/1.1 server (the standard library's `ThreadingHTTPServer`: keep-alive connections,
no event loop, and full control of the socket, which dropped-connection faults need). It checks
the bearer key, the body size, the object limit and a fixed-window rate limit, validates every
object, applies accepted attribute objects to in-memory profiles, bills data points, and can
inject seeded faults. What landed is served back under ``/_emulator/...``:

    GET  /_emulator/profiles          {external_id: {attribute: value}}
    GET  /_emulator/stats             counters: requests, statuses, data points, no-op writes...
    GET  /_emulator/writes            {external_id: attribute objects applied to that profile}
    GET  /_emulator/log               the last 10,000 /users/track requests: [arrival, status]
    POST /_emulator/profiles          {"external_ids": [...]} creates empty (existing) profiles
    POST /_emulator/force             {"status": 503, "count": 2} answers the next requests so
                                      ("drop", "slow" and "garbled", a 201 whose error names
                                      no object, are accepted as status too)
    POST /_emulator/reset             forget profiles, counters and forced faults
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from base import LapseError

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "EmulatorConfigError",
    "FaultSpec",
    "parse_faults",
    "parse_rate_limit",
]

TRACK_PATH = "/users/track"
INSPECT = "/_emulator/"
#: Faults a POST /_emulator/force can ask for, besides the 5xx statuses.
FORCEABLE = frozenset({"drop", "slow", "429", "garbled"})
ARRAYS = ("attributes", "events", "purchases")
PRIMARY_IDS = ("external_id", "user_alias", "braze_id")
SECONDARY_IDS = ("email", "phone")
FREE_KEYS = {*PRIMARY_IDS, *SECONDARY_IDS, "_update_existing_only", "app_id"}
FREE_FIELDS = {"email_subscribe", "push_subscribe", "subscription_groups", "push_tokens"}
SUBSCRIBE_STATES = {"opted_in", "subscribed", "unsubscribed"}
MAX_EXTERNAL_ID_BYTES = 987
MAX_STRING = 255
MAX_ARRAY = 25

MSG_ID_REQUIRED = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
MSG_TWO_PRIMARIES = "only one of 'external_id', 'braze_id' or 'user_alias' may be given"
MSG_ID_TOO_LARGE = "EXTERNAL_USER_ID_TOO_LARGE: external_id is longer than 987 bytes"
MSG_BLOCKLISTED = "provided external_id is blacklisted and disallowed"
MSG_NO_VALID = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class EmulatorConfigError(LapseError, ValueError):
    """A --rate-limit or --faults value the emulator cannot understand."""


@dataclass(frozen=True)
class FaultSpec:
    """Seeded per-request fault probabilities; drawn once per `/users/track` request."""

    seed: int = 0
    errors: dict[int, float] = field(default_factory=dict)  # 5xx status -> probability
    slow: float = 0.0
    slow_s: float = 1.0
    drop: float = 0.0
    storm: float = 0.0
    storm_len: int = 5

    def total(self) -> float:
        return sum(self.errors.values()) + self.slow + self.drop + self.storm


def parse_faults(spec: str | None) -> FaultSpec:
    """Parse ``seed=7,500=0.02,503=0.01,slow=0.05:1.5,drop=0.01,storm=0.01:5``.

    ``5xx=P`` spreads P over 500/502/503/504; ``slow=P:SECONDS`` delays the answer; ``drop=P``
    closes the connection without answering (nothing applied); ``storm=P:N`` starts N 429s.
    """
    if not spec or not spec.strip():
        return FaultSpec()
    values: dict[str, Any] = {"errors": {}}
    for item in spec.split(","):
        key, sep, raw = item.strip().partition("=")
        key = key.strip().lower()
        if not sep or not raw:
            raise EmulatorConfigError(f"--faults item {item.strip()!r}: expected NAME=VALUE")
        try:
            if key == "seed":
                values["seed"] = int(raw)
            elif key == "5xx":
                p = _probability(raw, item)
                for status in (500, 502, 503, 504):
                    values["errors"][status] = values["errors"].get(status, 0.0) + p / 4
            elif key.isdigit() and 500 <= int(key) <= 599:
                values["errors"][int(key)] = _probability(raw, item)
            elif key in ("slow", "storm"):
                p, _, extra = raw.partition(":")
                values[key] = _probability(p, item)
                if extra:
                    values["slow_s" if key == "slow" else "storm_len"] = (
                        float(extra) if key == "slow" else int(extra)
                    )
            elif key == "drop":
                values["drop"] = _probability(raw, item)
            else:
                raise EmulatorConfigError(
                    f"--faults item {item.strip()!r}: unknown fault {key!r} "
                    "(expected seed, 5xx, 500..599, slow, drop or storm)"
                )
        except ValueError as exc:
            if isinstance(exc, EmulatorConfigError):
                raise
            raise EmulatorConfigError(f"--faults item {item.strip()!r}: {exc}") from None
    faults = FaultSpec(**values)
    if faults.total() > 1:
        raise EmulatorConfigError(f"--faults {spec!r}: probabilities add up to more than 1")
    if faults.slow_s < 0 or faults.storm_len < 1:
        raise EmulatorConfigError(f"--faults {spec!r}: slow seconds >= 0 and storm length >= 1")
    return faults


def _probability(raw: str, item: str) -> float:
    p = float(raw)
    if not 0 <= p <= 1:
        raise EmulatorConfigError(f"--faults item {item.strip()!r}: probability must be in 0..1")
    return p


def parse_rate_limit(text: str) -> tuple[int, float]:
    """``3000/3s`` (or ``3000/3``, ``50000/1m``) -> (requests, window seconds)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text or "")
    if not match:
        raise EmulatorConfigError(
            f"--rate-limit {text!r}: expected REQUESTS/WINDOW such as 3000/3s"
        )
    count, window, unit = int(match[1]), float(match[2]), match[3] or "s"
    window *= {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if count < 1 or window <= 0:
        raise EmulatorConfigError(f"--rate-limit {text!r}: both numbers must be positive")
    return count, window


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulator accepts; defaults are the spec's (§3 emulator defaults)."""

    api_keys: frozenset[str] = frozenset({"emulator-key"})
    keys_without_permission: frozenset[str] = frozenset()
    batch_mode: str = "combined"  # "combined": 75 objects in total; "legacy": 75 per array
    max_objects: int = 75
    burst_limit: int = 3000
    burst_window_s: float = 3.0
    max_body_bytes: int = 4 * 1024 * 1024
    header_mode: str = "epoch"  # "epoch" or "seconds" (MAU contracts), spec §5
    blocklisted_ids: frozenset[str] = frozenset()
    faults: FaultSpec = field(default_factory=FaultSpec)
    clock_offset_s: float = 0.0  # Braze's clock is not the client's: windows and resets shift


class _State:
    """Profiles, counters and the rate-limit window; every method runs under one lock."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.rng = random.Random(config.faults.seed)
        self.reset()

    def reset(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.track_requests = 0
        self.objects_accepted = 0
        self.objects_rejected = 0
        self.objects_without_effect = 0
        self.data_points = 0
        self.noop_writes = 0
        self.window = -1
        self.window_count = 0
        self.storm_left = 0
        self.forced: list[str] = []
        self.log: deque[tuple[float, int]] = deque(maxlen=10_000)

    # --- rate limit: fixed windows aligned to the epoch ----------------------------------------
    def admit(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one request in the current window; False when over the limit."""
        cfg = self.config
        window = math.floor(now / cfg.burst_window_s)
        if window != self.window:
            self.window, self.window_count = window, 0
        allowed = self.window_count < cfg.burst_limit
        if allowed:
            self.window_count += 1
        return allowed, self.headers(now, limited=not allowed)

    def headers(self, now: float, limited: bool) -> dict[str, str]:
        cfg = self.config
        reset_at = (math.floor(now / cfg.burst_window_s) + 1) * cfg.burst_window_s
        remaining = 0 if limited else max(cfg.burst_limit - self.window_count, 0)
        if cfg.header_mode == "seconds":
            wait = str(max(math.ceil(reset_at - now), 1))
            if limited:
                return {"X-Ratelimit-Retry-After": wait}
            return {
                "X-RateLimit-Limit": str(cfg.burst_limit),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": wait,
            }
        return {
            "X-RateLimit-Limit": str(cfg.burst_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset_at)),
        }

    def draw_fault(self) -> str | None:
        """A forced fault first, then an ongoing 429 storm, then one seeded draw."""
        if self.forced:
            return self.forced.pop(0)
        if self.storm_left > 0:
            self.storm_left -= 1
            return "429"
        f = self.config.faults
        if f.total() == 0:
            return None
        u = self.rng.random()
        for name, p in [
            *((str(status), p) for status, p in sorted(f.errors.items())),
            ("slow", f.slow),
            ("drop", f.drop),
            ("storm", f.storm),
        ]:
            if u < p:
                if name == "storm":
                    self.storm_left = f.storm_len - 1
                    return "429"
                return name
            u -= p
        return None

    # --- applying accepted objects -----------------------------------------------------------
    def apply_attributes(self, obj: dict[str, Any]) -> None:
        key = _profile_key(obj)
        update_only = obj.get("_update_existing_only", "user_alias" in obj)
        if key not in self.profiles:
            if update_only:
                self.objects_without_effect += 1
                return
            self.profiles[key] = {}
        profile = self.profiles[key]
        self.writes[key] += 1
        for name, value in obj.items():
            if name in FREE_KEYS:
                continue
            cost, changed = _apply_value(profile, name, value)
            if name not in FREE_FIELDS:
                self.data_points += cost
                if cost and not changed:
                    self.noop_writes += 1

    def bill_event(self, obj: dict[str, Any]) -> None:
        self.data_points += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "track_requests": self.track_requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "faults": dict(self.faults),
            "objects_accepted": self.objects_accepted,
            "objects_rejected": self.objects_rejected,
            "objects_without_effect": self.objects_without_effect,
            "attribute_writes": sum(self.writes.values()),
            "data_points": self.data_points,
            "noop_writes": self.noop_writes,
            "profiles": len(self.profiles),
        }


def _profile_key(obj: dict[str, Any]) -> str:
    if "external_id" in obj:
        return str(obj["external_id"])
    if "user_alias" in obj:
        alias = obj["user_alias"]
        return f"alias:{alias.get('alias_label')}:{alias.get('alias_name')}"
    if "braze_id" in obj:
        return f"braze:{obj['braze_id']}"
    return f"email:{obj['email']}" if "email" in obj else f"phone:{obj['phone']}"


def _apply_value(profile: dict[str, Any], name: str, value: Any) -> tuple[int, bool]:
    """Set one attribute as Braze would; returns (data points billed, whether it changed)."""
    before = profile.get(name)
    if value is None:
        profile.pop(name, None)
        return 1, before is not None
    if isinstance(value, dict) and set(value) <= {"inc", "add", "remove"} and value:
        if "inc" in value:
            profile[name] = (before or 0) + value["inc"]
            return 1, value["inc"] != 0
        items = list(before) if isinstance(before, list) else []
        for v in value.get("remove", []):
            if v in items:
                items.remove(v)
        added = value.get("add", [])
        for v in added:
            if v in items:
                items.remove(v)
            items.append(v)
        profile[name] = items[-MAX_ARRAY:]
        return max(len(added), 1 if "remove" in value else 0), profile[name] != before
    if isinstance(value, str):
        value = value.strip()
        if len(value) > MAX_STRING:
            return 1, False  # the sync FAQ's reading: an over-long string is not applied
    if isinstance(value, list):
        value = list(dict.fromkeys(json.dumps(v, sort_keys=True) for v in value))
        value = [json.loads(v) for v in value][-MAX_ARRAY:]
    profile[name] = value
    cost = len(value) if isinstance(value, dict) else 1
    return cost, value != before


def _object_error(array: str, obj: Any, config: EmulatorConfig) -> str | None:
    """The per-object error Braze would list for this object, or None if it is valid."""
    if not isinstance(obj, dict):
        return MSG_ID_REQUIRED
    primaries = [k for k in PRIMARY_IDS if k in obj]
    if len(primaries) > 1:
        return MSG_TWO_PRIMARIES
    if not primaries and not any(k in obj for k in SECONDARY_IDS):
        return MSG_ID_REQUIRED
    if "external_id" in obj:
        ext = obj["external_id"]
        if not isinstance(ext, str) or not ext:
            return MSG_ID_REQUIRED
        if len(ext.encode()) > MAX_EXTERNAL_ID_BYTES:
            return MSG_ID_TOO_LARGE
        if ext in config.blocklisted_ids:
            return MSG_BLOCKLISTED
    if "user_alias" in obj:
        alias = obj["user_alias"]
        if not (isinstance(alias, dict) and {"alias_name", "alias_label"} <= set(alias)):
            return MSG_ID_REQUIRED
    if array == "attributes":
        for name in ("email_subscribe", "push_subscribe"):
            if name in obj and obj[name] not in SUBSCRIBE_STATES:
                return f"BAD_{name.split('_')[0].upper()}_SUBSCRIPTION_STATE: invalid {name}"
        email = obj.get("email") if primaries else None
        if email is not None and not (isinstance(email, str) and _EMAIL.match(email)):
            return "EMAIL_BAD_FORMAT: The value provided for the 'email' field is not valid."
        loc = obj.get("current_location")
        if loc is not None and not (
            isinstance(loc, dict) and {"longitude", "latitude"} <= set(loc)
        ):
            return "BAD_LOCATION_UPDATE: current_location needs longitude and latitude"
        for name in obj:
            if isinstance(name, str) and name.startswith("$"):
                return f"attribute name {name!r} must not start with '$'"
    elif array == "events":
        if not isinstance(obj.get("name"), str) or not isinstance(obj.get("time"), str):
            return "events need a string 'name' and an ISO 8601 'time'"
    elif array == "purchases" and not {"product_id", "currency", "price", "time"} <= set(obj):
        return "purchases need 'product_id', 'currency', 'price' and 'time'"
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes; no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Quiet: tests and benchmarks read /_emulator/stats instead of an access log."""

    def parse_request(self) -> bool:
        # The log's time is the arrival, which precedes the rate-limit decision: a request
        # logged after a reset was sent after it, whatever the answer's latency.
        self.arrived = time.time()
        if not super().parse_request():
            return False
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():  # where the body ends is unknown: answer, then hang up
            self.close_connection = True
            self._send(400, {"message": "Bad Request", "errors": []})
            return False
        return True

    # --- plumbing ------------------------------------------------------------------------------
    def _body(self) -> bytes | None:
        """Read the whole body (so keep-alive stays in sync); None if it is over the limit."""
        length = int(self.headers.get("Content-Length") or 0)  # digits: see parse_request
        limit = self.server.state.config.max_body_bytes
        data = self.rfile.read(length) if length else b""
        return None if length > limit else data

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(body).encode(), headers)

    def _reply(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer with a JSON body already encoded; count the status (and log /users/track)."""
        # Counted before the answer leaves: a client that reads its answer and then inspects
        # the emulator must find its request there (logging after the write raced with it).
        with self.server.state.lock:
            self.server.state.statuses[status] += 1
            if self.path.split("?", 1)[0] == TRACK_PATH:
                self.server.state.log.append((self.arrived, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._body()
        state = self.server.state
        with state.lock:
            state.requests += 1
            path = self.path.split("?", 1)[0]
            if path == INSPECT + "profiles":
                body: Any = state.profiles
            elif path == INSPECT + "stats":
                body = state.snapshot()
            elif path == INSPECT + "writes":
                body = dict(state.writes)
            elif path == INSPECT + "log":
                body = list(state.log)
            else:
                body = None
            payload = json.dumps(body).encode() if body is not None else None  # under the lock
        if payload is None:
            self._send(404, {"message": "Not Found"})
        else:
            self._reply(200, payload)

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        state = self.server.state
        with state.lock:
            state.requests += 1
        if self.path.startswith(INSPECT):
            self._inspect_post()
        elif self.path.split("?", 1)[0] == TRACK_PATH:
            self._track()
        else:
            self._body()
            self._send(404, {"message": "Not Found"})

    def do_PUT(self) -> None:  # noqa: N802 - the stdlib's name
        self._body()
        self._send(404, {"message": "Not Found"})

    do_DELETE = do_PUT  # noqa: N815

    def _inspect_post(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0][len(INSPECT) :]
        if path not in ("reset", "profiles", "force"):
            self._body()
            self._send(404, {"message": "Not Found"})
            return
        try:
            body = json.loads(self._body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object, found {type(body).__name__}")
            ids = body.get("external_ids", [])
            if not isinstance(ids, list):
                raise ValueError(f"external_ids: expected a list, found {ids!r}")
            kind, count = str(body.get("status", "")), body.get("count", 1)
            server_error = kind.isdigit() and kind[0] == "5"
            if path == "force" and not (kind in FORCEABLE or server_error):
                raise ValueError(f"expected status 5xx, 429, drop, slow or garbled, found {kind!r}")
            if not isinstance(count, int) or count < 0:
                raise ValueError(f"count: expected a whole number >= 0, found {count!r}")
        except ValueError as exc:
            self._send(400, {"message": f"Bad Request: {exc}", "errors": []})
            return
        with state.lock:
            if path == "reset":
                state.reset()
            elif path == "profiles":
                for ext in ids:
                    state.profiles.setdefault(str(ext), {})
            else:
                state.forced.extend([kind] * count)
        self._send(200, {"message": "ok"})

    # --- POST /users/track -----------------------------------------------------------------
    def _track(self) -> None:
        state = self.server.state
        cfg = state.config
        raw = self._body()
        with state.lock:
            state.track_requests += 1
        auth = self.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or key.strip() not in cfg.api_keys:
            self._send(401, {"message": "Invalid API Key"})
            return
        if key.strip() in cfg.keys_without_permission:
            self._send(403, {"message": "Access Denied"})
            return
        with state.lock:
            fault = state.draw_fault()
            if fault:
                state.faults[fault] += 1
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault == "slow":
            time.sleep(cfg.faults.slow_s)
        elif fault and fault not in ("429", "garbled"):
            self._send(int(fault), {"message": "Internal Server Error"})
            return
        if raw is None:
            self._send(413, {"message": "Request Entity Too Large"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or any(
            not isinstance(body.get(name, []), list) for name in ARRAYS
        ):
            self._send(400, {"message": "Bad Request", "errors": []})
            return
        counts = [len(body.get(name, [])) for name in ARRAYS]
        over = (
            sum(counts) > cfg.max_objects
            if cfg.batch_mode == "combined"
            else max(counts) > cfg.max_objects
        )
        if over:
            self._send(400, {"message": "Max Input Length Exceeded", "errors": []})
            return
        now = time.time() + cfg.clock_offset_s
        with state.lock:
            if fault == "429":
                allowed, headers = False, state.headers(now, limited=True)
            else:
                allowed, headers = state.admit(now)
        if not allowed:
            self._send(429, {"message": "Rate Limit Exceeded"}, headers)
            return
        self._process(body, headers, garbled=fault == "garbled")

    def _process(self, body: dict[str, Any], headers: dict[str, str], garbled: bool) -> None:
        """Apply the valid objects; ``garbled`` answers with an error no object can be matched to
        (no index), as a proxy or a Braze bug might: the client cannot know what landed."""
        state = self.server.state
        errors: list[dict[str, Any]] = []
        accepted: dict[str, list[dict[str, Any]]] = {}
        for name in ARRAYS:
            for index, obj in enumerate(body.get(name, [])):
                problem = _object_error(name, obj, state.config)
                if problem:
                    errors.append({"type": problem, "input_array": name, "index": index})
                else:
                    accepted.setdefault(name, []).append(obj)
        if not accepted:
            with state.lock:
                state.objects_rejected += len(errors)
            self._send(400, {"message": MSG_NO_VALID, "errors": errors}, headers)
            return
        with state.lock:
            for obj in accepted.get("attributes", []):
                state.apply_attributes(obj)
            for obj in accepted.get("events", []) + accepted.get("purchases", []):
                state.bill_event(obj)
            state.objects_accepted += sum(len(v) for v in accepted.values())
            state.objects_rejected += len(errors)
        reply: dict[str, Any] = {"message": "success"}
        for name in ARRAYS:
            if name in body:
                reply[f"{name}_processed"] = len(accepted.get(name, []))
        if errors:
            reply["errors"] = errors
        if garbled:
            reply["errors"] = [{"type": "Internal error", "input_array": "attributes"}]
        self._send(201, reply, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)


class Emulator:
    """The emulator bound to 127.0.0.1; `start()` serves in a thread, `serve_forever()` blocks."""

    def __init__(self, config: EmulatorConfig | None = None, port: int = 0) -> None:
        self.config = config or EmulatorConfig()
        self._server = _Server(("127.0.0.1", port), _State(self.config))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Emulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def add_profiles(self, external_ids: list[str]) -> None:
        """Create empty profiles: users that exist in Braze before any sync."""
        state = self._server.state
        with state.lock:
            for ext in external_ids:
                state.profiles.setdefault(str(ext), {})

    def profiles(self) -> dict[str, dict[str, Any]]:
        """A copy of every profile and its attributes."""
        state = self._server.state
        with state.lock:
            return {k: dict(v) for k, v in state.profiles.items()}

    def stats(self) -> dict[str, Any]:
        """The counters GET /_emulator/stats serves."""
        state = self._server.state
        with state.lock:
            return state.snapshot()

    def reconfigure(self, **changes: Any) -> None:
        """Change limits or faults of a running emulator (tests); counters are kept."""
        state = self._server.state
        with state.lock:
            state.config = replace(state.config, **changes)
            self.config = state.config
            if "faults" in changes:
                state.rng = random.Random(state.config.faults.seed)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
