"""Braze `POST /users/track` client: paced, header-aware, retrying only what may be retried.

One `httpx.Client` (connection reuse) sends one batch per call. Pacing: requests start at most
`max_rps` per second, and when Braze's `X-RateLimit-Remaining` reaches zero the client waits
until `X-RateLimit-Reset`; a 429 waits for the reset (or `X-Ratelimit-Retry-After` /
`Retry-After`), never less, then sends the same batch again (with no usable header, or a reset
already past by our clock, it backs off exponentially instead). 5xx, timeouts and dropped
connections are retried with exponential backoff and jitter (tenacity), a bounded number of
times. 401/403 raise `BrazeAuthError` at once. Per-object errors of a partial success come back
per index with Braze's message. The API key lives only in the client's headers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from base import LapseError
from serving.settings import BrazeSettings, api_key_problem

__all__ = [
    "BatchResult",
    "BrazeAuthError",
    "BrazeClient",
    "BrazeError",
    "BrazeRequestError",
    "BrazeUnavailableError",
    "ClientStats",
    "billable_keys",
    "mask_key",
    "request_headers",
]

TRACK_PATH = "/users/track"
#: Keys Braze does not bill (identifiers and flags), spec §7.
FREE_KEYS = frozenset(
    {"external_id", "user_alias", "braze_id", "email", "phone", "_update_existing_only"}
)
RETRYABLE = frozenset({500, 502, 503, 504})
_EPOCH = 1e9  # a Reset value above this is an epoch, below it a number of seconds (spec §5)
_SAFETY_S = 0.005  # epoch resets are whole seconds: wake just after, never just before


class BrazeError(LapseError):
    """Braze refused or could not take the request; the message says which and what to do."""


class BrazeAuthError(BrazeError):
    """401/403: wrong key, wrong instance, or a key without `users.track`; the run stops."""


class BrazeRequestError(BrazeError):
    """A request Braze will never accept as sent (400, 404, 413...); retrying cannot help."""


class BrazeUnavailableError(BrazeError):
    """5xx, timeouts or dropped connections outlasted the retries; run again later."""


class _Retryable(Exception):
    """One failed attempt that tenacity may retry."""


@dataclass
class BatchResult:
    """What Braze said about one batch: accepted indices, rejected index -> Braze's message."""

    status: int
    accepted: list[int]
    errors: dict[int, str] = field(default_factory=dict)
    unknown: list[int] = field(default_factory=list)  # outcome not reported in a usable shape


@dataclass
class ClientStats:
    """Counters for the summary table."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    objects_accepted: int = 0
    objects_rejected: int = 0
    data_points: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def billable_keys(obj: Mapping[str, Any]) -> int:
    """Data points one attributes object costs if accepted: every non-identifier key (spec §7)."""
    return sum(1 for key in obj if key not in FREE_KEYS)


def mask_key(key: str | None) -> str:
    """What may be shown of the API key: nothing but whether one is set."""
    return "********" if key else "(not set)"


def request_headers(key: str) -> dict[str, str]:
    """The headers of every /users/track request (a dry run shows them with the key masked)."""
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _header(headers: httpx.Headers, name: str) -> float | None:
    value = headers.get(name)  # httpx.Headers is case-insensitive
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _Pacer:
    """Keeps request starts at max_rps on average and out of windows Braze said are used up.

    Start slots are 1/max_rps apart. A sender that fell behind (a slow answer, a busy CPU) may
    make up at most `catch_up_s` of missed slots back to back, so short stalls do not waste the
    allowed rate while no second ever carries more than max_rps * (1 + catch_up_s) starts.
    Thread-safe: concurrent senders take consecutive slots.
    """

    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        catch_up_s: float = 0.25,
    ):
        self.interval = 1.0 / max_rps
        self.catch_up_s = catch_up_s
        self.clock, self.sleep = clock, sleep
        self.next_start: float | None = None
        self.blocked_until_wall = 0.0  # wall-clock time, because Reset is an epoch
        self.lock = threading.Lock()

    def before_request(self) -> float:
        """Sleep until a request may start; returns seconds spent waiting on Braze's headers."""
        waited = 0.0
        while True:
            with self.lock:
                header_wait = self.blocked_until_wall - time.time()
                if header_wait <= 0:
                    now = self.clock()
                    scheduled = now if self.next_start is None else self.next_start
                    start = max(scheduled, now - self.catch_up_s)
                    self.next_start = start + self.interval
                    break
                self.next_start = None  # after a pause for Braze's reset: no catching up
            self.sleep(header_wait)
            waited += header_wait
        if start > now:
            self.sleep(start - now)
        return waited

    def wait_after(self, headers: httpx.Headers, limited: bool) -> float | None:
        """Seconds until Braze's window resets, from the headers; None if they do not say."""
        retry_after = _header(headers, "X-Ratelimit-Retry-After") or _header(headers, "Retry-After")
        reset = _header(headers, "X-RateLimit-Reset")
        remaining = _header(headers, "X-RateLimit-Remaining")
        if limited and retry_after is not None:
            return max(retry_after, 0.0)
        if reset is None or (not limited and (remaining is None or remaining > 0)):
            return None
        if reset <= _EPOCH:
            return max(reset, 0.0)
        left = reset - time.time()
        if limited and left <= 0:
            return None  # a 429 after its reset by our clock: the clocks differ, back off
        return max(left, 0.0) + _SAFETY_S

    def block_for(self, seconds: float) -> None:
        with self.lock:
            self.blocked_until_wall = max(self.blocked_until_wall, time.time() + seconds)


class BrazeClient:
    """Sends attribute batches to /users/track (thread-safe); close it, or use it in a with."""

    def __init__(
        self,
        config: BrazeSettings,
        api_key: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise BrazeAuthError("no Braze API key: set the BRAZE_API_KEY environment variable")
        if problem := api_key_problem(api_key):  # else httpx would print it in its error
            raise BrazeAuthError(f"the Braze API key (BRAZE_API_KEY) {problem}")
        self.config = config
        self.stats = ClientStats()
        self._stats_lock = threading.Lock()
        self._sleep = sleep
        self._pacer = _Pacer(config.max_rps, time.monotonic, sleep)
        self._http = httpx.Client(
            base_url=config.url.rstrip("/"),
            headers=request_headers(api_key),
            timeout=config.timeout_s,
        )

    def __repr__(self) -> str:
        return f"BrazeClient(url={self.config.url!r}, key={mask_key('set')})"

    def __enter__(self) -> BrazeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- one batch ---------------------------------------------------------------------------
    def track(self, objects: Sequence[Mapping[str, Any]]) -> BatchResult:
        """Send one batch of attribute objects; returns per-object outcomes.

        A 413 or "Max Input Length Exceeded" splits the batch in two and sends each half.
        """
        if not objects:
            return BatchResult(status=0, accepted=[])
        if len(objects) > self.config.batch_size:
            raise ValueError(
                f"batch of {len(objects)} objects is over braze.batch_size "
                f"{self.config.batch_size}; split it first"
            )
        body = json.dumps({"attributes": list(objects)}, separators=(",", ":")).encode()
        response = self._send_with_retries(body)
        status = response.status_code
        if status in (401, 403):
            reason = "invalid API key" if status == 401 else "the key lacks users.track permission"
            raise BrazeAuthError(
                f"Braze answered {status} {_message(response)!r} at {self.config.url}{TRACK_PATH}: "
                f"{reason} (check BRAZE_API_KEY and braze.url); the run stopped"
            )
        too_big = status == 413 or (
            status == 400 and "max input length" in _message(response).lower()
        )
        if too_big and len(objects) > 1:
            half = len(objects) // 2
            first, second = self.track(objects[:half]), self.track(objects[half:])
            return BatchResult(
                status=second.status,
                accepted=first.accepted + [i + half for i in second.accepted],
                errors={**first.errors, **{i + half: m for i, m in second.errors.items()}},
                unknown=first.unknown + [i + half for i in second.unknown],
            )
        if 200 <= status < 300 or (status == 400 and _object_errors(response) is not None):
            return self._outcome(objects, response)
        raise BrazeRequestError(
            f"Braze answered {status} {_message(response)!r} at {self.config.url}{TRACK_PATH}"
            + (" (check braze.url)" if status == 404 else "")
        )

    def _outcome(
        self, objects: Sequence[Mapping[str, Any]], response: httpx.Response
    ) -> BatchResult:
        n = len(objects)
        errors = _object_errors(response)
        result = BatchResult(status=response.status_code, accepted=[])
        if errors is None and response.status_code >= 300:
            result.unknown = list(range(n))
        elif errors is None:
            result.accepted = list(range(n))
        else:
            for index, message in errors:
                if index is None or not 0 <= index < n:
                    result.unknown = list(range(n))  # cannot tell which object failed
                    result.errors = {}
                    return result
                result.errors[index] = message
            if response.status_code >= 300:  # all-invalid 400: anything not listed is unknown
                result.unknown = [i for i in range(n) if i not in result.errors]
            else:
                result.accepted = [i for i in range(n) if i not in result.errors]
        self._count(
            objects_accepted=len(result.accepted),
            objects_rejected=len(result.errors),
            data_points=sum(billable_keys(objects[i]) for i in result.accepted),
        )
        return result

    def _send_with_retries(self, body: bytes) -> httpx.Response:
        cfg = self.config
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(cfg.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=cfg.backoff_s, max=cfg.backoff_max_s, jitter=cfg.backoff_s
            ),
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            return retrying(self._send_paced, body)
        except _Retryable as exc:
            raise BrazeUnavailableError(
                f"Braze at {cfg.url}{TRACK_PATH} failed {cfg.max_attempts} times in a row "
                f"(last: {exc}); nothing is lost, run again later"
            ) from None

    def _count(self, status: int | None = None, **increments: float) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)
            if status is not None:
                self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1

    def _count_retry(self, state: RetryCallState) -> None:
        self._count(retries=1)

    def _send_paced(self, body: bytes) -> httpx.Response:
        """One attempt, paced; 429s wait for the reset and send again (not a failed attempt)."""
        waits = 0
        while True:
            self._count(waited_s=self._pacer.before_request())
            try:
                response = self._http.post(TRACK_PATH, content=body)
            except httpx.TimeoutException as exc:
                raise _Retryable(f"timed out after {self.config.timeout_s:g} s") from exc
            except httpx.TransportError as exc:
                raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from exc
            finally:
                self._count(requests=1)
            status = response.status_code
            self._count(status=status)
            limited = status == 429
            wait = self._pacer.wait_after(response.headers, limited)
            if not limited:
                if wait is not None:
                    self._pacer.block_for(wait)  # Remaining hit 0: pause before the next one
                if status in RETRYABLE:
                    raise _Retryable(f"HTTP {status} {_message(response)!r}")
                return response
            self._count(rate_limited=1)
            waits += 1
            if waits > self.config.max_rate_limit_waits:
                raise BrazeUnavailableError(
                    f"Braze kept answering 429 ({waits} times in a row) at "
                    f"{self.config.url}{TRACK_PATH}; nothing is lost, run again later"
                )
            if wait is None:  # no usable header: exponential backoff with jitter
                base = min(self.config.backoff_s * 2 ** (waits - 1), self.config.backoff_max_s)
                wait = base + random.uniform(0, self.config.backoff_s)
            self._pacer.block_for(wait)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", "")) if isinstance(body, dict) else str(body)[:200]


def _object_errors(response: httpx.Response) -> list[tuple[int | None, str]] | None:
    """Braze's per-object `errors` for the attributes array, or None if there are none.

    An entry not shaped {type, input_array, index} gives index None ("outcome unknown").
    """
    try:
        body = response.json()
    except ValueError:
        return None
    entries = body.get("errors") if isinstance(body, dict) else None
    if not entries or not isinstance(entries, list):
        return None
    found: list[tuple[int | None, str]] = []
    for entry in entries:
        ok = (
            isinstance(entry, dict)
            and entry.get("input_array", "attributes") == "attributes"
            and isinstance(entry.get("index"), int)
        )
        message = str(entry.get("type", entry)) if isinstance(entry, dict) else str(entry)
        found.append((entry["index"] if ok else None, message))
    return found
