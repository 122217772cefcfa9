"""The jobs that talk to Braze: ``sync`` (a scores file or frame to /users/track) and the
local ``braze-emulator``. No model library is loaded here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features import schema as s
from lapse.jobs import Progress
from lapse.settings import Settings
from serving.emulator import Emulator, EmulatorConfig, EmulatorConfigError
from serving.scores import read_scores, read_scores_policy
from serving.sync import SyncConfig, SyncReport
from serving.sync import sync as sync_scores
from training.buckets import BucketPolicy

# --- sync ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync did, and the bucket policy it used when a scores file carried the model's."""

    report: SyncReport
    config: SyncConfig
    file_policy: BucketPolicy | None = None


def push(
    settings: Settings,
    scores: pd.DataFrame,
    dry_run: bool = False,
    policy: BucketPolicy | None = None,
    progress: Progress | None = None,
) -> SyncOutcome:
    """Sync a scores frame to Braze: ``policy`` (a model's bounds) replaces ``[buckets]``, with
    today's hysteresis, so Braze gets the buckets the model was evaluated with, kept steady."""
    if policy is not None:
        from dataclasses import replace

        policy = replace(policy, hysteresis=settings.buckets.hysteresis)
    config = SyncConfig.from_settings(settings, policy)
    key = settings.braze.api_key.get_secret_value() if settings.braze.api_key else None
    report = sync_scores(scores, config, key, dry_run=dry_run, progress=progress)
    return SyncOutcome(report, config, policy)


def sync(
    settings: Settings, scores: Path, dry_run: bool = False, progress: Progress | None = None
) -> SyncOutcome:
    """Push the churn buckets that changed in a scores file to Braze. A file from ``rescore``
    carries the model's bounds, so a retry sends the same buckets rescore would have."""
    frame = read_scores(scores)
    return push(settings, frame, dry_run, read_scores_policy(scores), progress)


# --- braze-emulator ------------------------------------------------------------------------------


def emulator(
    settings: Settings,
    port: int | None = None,
    rate_limit: str = "3000/3s",
    faults: str | None = None,
    header_mode: str = "epoch",
    profiles: Path | None = None,
) -> Emulator:
    """A Braze /users/track emulator listening on 127.0.0.1 (not yet serving: the caller runs
    ``serve_forever`` or ``start``). It accepts BRAZE_API_KEY, else ``emulator-key``; ``port``
    defaults to braze.url's when that is a loopback URL, else 4010."""
    from urllib.parse import urlsplit

    from serving.emulator import parse_faults, parse_rate_limit

    limit, window = parse_rate_limit(rate_limit)
    if header_mode not in ("epoch", "seconds"):
        raise EmulatorConfigError(f"--header-mode {header_mode!r}: expected 'epoch' or 'seconds'")
    key = settings.braze.api_key.get_secret_value() if settings.braze.api_key else "emulator-key"
    config = EmulatorConfig(
        api_keys=frozenset({key}),
        burst_limit=limit,
        burst_window_s=window,
        header_mode=header_mode,
        faults=parse_faults(faults),
    )
    if port is None:
        configured = urlsplit(settings.braze.url)
        port = configured.port if configured.hostname in ("127.0.0.1", "localhost") else None
    port = 4010 if port is None else port
    users = profile_ids(profiles) if profiles is not None else []
    try:
        server = Emulator(config, port=port)
    except OSError as exc:
        raise EmulatorConfigError(
            f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror or exc}); "
            "pick another port (0 = any free one)"
        ) from None
    server.add_profiles(users)
    return server


def profile_ids(path: Path) -> list[str]:
    """The user_id column of a Parquet or CSV file (the profiles an emulator starts with)."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={s.USER_ID: str})
    except (OSError, ValueError) as exc:
        raise EmulatorConfigError(f"--profiles {path}: cannot read: {exc}") from None
    if s.USER_ID not in frame.columns:
        found = ", ".join(map(str, frame.columns)) or "no columns"
        raise EmulatorConfigError(f"--profiles {path}: no {s.USER_ID!r} column (found {found})")
    return frame[s.USER_ID].dropna().astype(str).tolist()
