"""The settings sections the serving package reads: ``[ledger]``, ``[braze]``, ``[serving]``,
``[monitoring]``;
each default is written here once (``lapse.settings.Settings`` composes them).

The Braze API key is part of ``[braze]`` but never comes from a file: ``lapse.settings`` reads it
only from the ``BRAZE_API_KEY`` environment variable.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr

from base import DatabaseUrl, Section

__all__ = [
    "BrazeSettings",
    "LedgerSettings",
    "MonitoringSettings",
    "ServingSettings",
    "api_key_problem",
]


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be sent as ``Authorization: Bearer <key>`` (one phrase that shows
    nothing of the key but its length and the offending character's position), or None.

    An HTTP header holds visible ASCII and spaces only: a line break would split the header (or
    make the HTTP library print the whole value in its error), a non-ASCII letter cannot be
    encoded at all.
    """
    for position, char in enumerate(key, start=1):
        if " " <= char <= "~":
            continue
        kind = (
            "a line break"
            if char in "\r\n"
            else "a control character"
            if ord(char) < 0x20 or ord(char) == 0x7F
            else "a non-ASCII character"
        )
        return (
            f"holds {kind} at character {position} of {len(key)}, which cannot go in an HTTP "
            "header; expected the key exactly as Braze shows it (printable ASCII); "
            "the key itself is not shown"
        )
    return None


def _checked_http_url(url: str) -> str:
    """An http(s) URL with a host: anything else failed every request of a sync (retried, with
    waits) before the run gave up."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return url


HttpUrl = Annotated[str, AfterValidator(_checked_http_url)]


def _checked_token(token: SecretStr | None) -> SecretStr | None:
    """The service's bearer token without surrounding whitespace (a secret mounted from a file
    often ends in a line break, which no client can send: every request was refused); one
    that cannot go in a header is refused, without showing it."""
    if token is None:
        return None
    value = token.get_secret_value().strip()
    if not value:
        raise ValueError("only whitespace; expected a token (or unset it: no token)")
    for position, char in enumerate(value, start=1):
        if not " " <= char <= "~":
            raise ValueError(
                f"holds a character that cannot go in an HTTP header (printable ASCII only) at "
                f"character {position} of {len(value)}; the token itself is not shown"
            )
    return SecretStr(value)


class LedgerSettings(Section):
    """The sync ledger's database (acknowledged Braze state)."""

    url: DatabaseUrl = Field(
        "sqlite:///ledger.db",
        description="The sync ledger (what Braze acknowledged): SQLite or PostgreSQL.",
    )

    table_prefix: str = Field(
        "lapse_sync_", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Prefix of the tables."
    )
    lock_ttl_s: float = Field(
        600.0, gt=0, description="A run lock without a heartbeat for this long may be taken over."
    )


class BrazeSettings(Section):
    """Braze /users/track endpoint, pacing and payload; `api_key` comes only from BRAZE_API_KEY."""

    url: HttpUrl = Field(
        "http://127.0.0.1:4010",
        min_length=1,
        description="Braze REST endpoint; the default is the local emulator.",
    )
    attribute: str = Field(
        "churn_risk", min_length=1, description="Custom attribute that receives the bucket."
    )
    batch_size: int = Field(
        75, ge=1, le=75, description="Users per /users/track request (Braze's limit: 75)."
    )
    max_rps: float = Field(
        50.0, gt=0, allow_inf_nan=False, description="Requests per second to Braze, at most."
    )
    id_field: str = Field(
        "external_id", min_length=1, description="Braze identifier the user id is sent as."
    )
    null_unscored: bool = Field(
        True, description="Set the attribute to null, once, for users no longer scored."
    )
    update_existing_only: bool = Field(
        True, description="Send _update_existing_only: scoring never creates Braze profiles."
    )
    score_attribute: str | None = Field(
        None, min_length=1, description="Also send the churn score 0-100 under this name."
    )
    reason_attribute: str | None = Field(
        None, min_length=1, description="Also send the top churn reason under this name."
    )
    timeout_s: float = Field(
        10.0, gt=0, allow_inf_nan=False, description="Seconds to wait for Braze's answer."
    )
    max_attempts: int = Field(5, ge=1, description="Tries per batch on 5xx, timeouts, drops.")
    backoff_s: float = Field(0.5, gt=0, description="First retry wait; doubles, with jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between retries.")
    concurrency: int = Field(
        1, ge=1, le=16, description="Batches in flight; a crash may re-send up to this many."
    )
    max_rate_limit_waits: int = Field(
        50, ge=1, description="429s to wait out for one batch before the run stops (run again)."
    )
    max_null_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Refuse a sync that would null more than this share of the users Braze "
        "holds a bucket for (a truncated scores file); 1 = never refuse.",
    )
    api_key: SecretStr | None = Field(
        None, description="Braze REST API key: only from the BRAZE_API_KEY environment variable."
    )


class ServingSettings(Section):
    """The HTTP scoring service (`lapse serve`); `token` comes only from LAPSE_SERVING__TOKEN."""

    host: str = Field("127.0.0.1", min_length=1, description="Address `lapse serve` listens on.")
    port: int = Field(3000, ge=1, le=65535, description="Port `lapse serve` listens on.")
    model_uri: str | None = Field(
        None,
        min_length=1,
        description="MLflow model URI to serve; unset = models:/<registered_model>@champion.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Service worker processes (each loads the model; one per core at most).",
    )
    max_rows: int = Field(10_000, ge=1, description="Feature rows per /score request, at most.")
    max_events: int = Field(
        100_000, ge=1, description="Adjust callbacks per /score_events request, at most."
    )
    max_body_mb: float = Field(
        32.0, gt=0, description="Request bodies above this many megabytes are refused (413)."
    )
    refresh_s: float | None = Field(
        None,
        gt=0,
        description="Check the champion alias this often and swap to a new champion; unset = "
        "keep the version the service started with.",
    )
    lookup_refresh_s: float = Field(
        5.0, gt=0, description="Check for a newer rescore scores file this often (/lookup)."
    )
    telemetry: bool = Field(
        False,
        description="BentoML's per-request Prometheus metrics (/metrics) and tracing spans "
        "(exported only where a tracing exporter is configured); off, a /lookup costs a quarter "
        "of the CPU (0.11 against 0.48 ms) and a one-row /score 0.88 against 1.21 ms.",
    )
    token: Annotated[SecretStr | None, AfterValidator(_checked_token)] = Field(
        None, description="Bearer token every request must carry; environment only, never logged."
    )


class MonitoringSettings(Section):
    """Watching the served model: drift at every rescore, backtests, and when to retrain."""

    experiment: str = Field(
        "lapse-monitoring", min_length=1, description="MLflow experiment of the backtest runs."
    )
    psi_threshold: float = Field(
        0.2,
        gt=0,
        allow_inf_nan=False,
        description="A feature (or the score) whose population stability index against the "
        "model's training data exceeds this has drifted (0.1-0.2 moderate, above 0.2 major).",
    )
    drift_exempt: list[str] = Field(
        default_factory=lambda: ["tenure_days", "install_age_days"],
        description="Features whose drift is reported but never flagged: they measure the "
        "calendar itself (days since the first subscription, since install) and move with every "
        "week of an app younger than its subscribers' lifetimes; the score's PSI shows whether "
        "that ageing moves the predictions.",
    )
    min_roc_auc: float = Field(
        0.7,
        ge=0.5,
        le=1,
        description="`lapse train --if-due` retrains when the newest backtest's realised ROC AUC "
        "is below this.",
    )
    max_ece: float = Field(
        0.05,
        gt=0,
        le=1,
        description="`lapse train --if-due` retrains when the newest backtest's realised expected "
        "calibration error is above this.",
    )
