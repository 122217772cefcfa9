"""One job function per command: the application layer every caller shares.

Each job takes the one ``Settings`` object and the command's arguments, reports long work through
``progress(stage, done, total)``, and returns a typed result; none prints. The CLI renders the
results (``lapse.render``); the BentoML service, the notebooks, schedulers and ``demo`` call the
same functions, so no caller holds application logic of its own.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from features import schema as s
from features.cluster import workplace
from features.from_store import StoreFeatures, store_features
from features.ingest import IngestSummary, StoreError
from features.ingest import ingest as ingest_files
from features.ingest import reprocess_quarantine as retry_quarantine
from features.settings import feature_definition
from features.synthetic import GenerationError, GenerationSummary, SyntheticConfig
from features.synthetic import generate as generate_app
from features.synthetic.calibration import TruthCheck, check_truth
from lapse.settings import Settings
from serving.braze_client import BrazeAuthError
from serving.emulator import Emulator, EmulatorConfig, EmulatorConfigError
from serving.rescore import MAX_STALE_DAYS, RescoreResult
from serving.rescore import rescore as score_store
from serving.scores import read_scores, read_scores_policy, write_scores
from serving.sync import SyncConfig, SyncReport
from serving.sync import sync as sync_scores
from training.buckets import BucketPolicy
from training.registry import ModelInfo, champion_uri, load_model, model_info
from training.settings import TrainConfig
from training.train import TrainResult, default_truth_path, train_store

Progress = Callable[[str, int, int], None]
#: Called by `demo` as each step ends: (step title, that step's result).
StepDone = Callable[[str, Any], None]

__all__ = [
    "DemoResult",
    "FeaturesResult",
    "RescoreOutcome",
    "SyncOutcome",
    "demo",
    "emulator",
    "features",
    "generate",
    "ingest",
    "reprocess_quarantine",
    "rescore",
    "sync",
    "train",
]


def _quiet(progress: Progress | None) -> Progress:
    return progress or (lambda stage, done, total: None)


# --- generate ------------------------------------------------------------------------------------


def synthetic_config(settings: Settings, cutoffs: Sequence[date] | None = None) -> SyntheticConfig:
    """The generator's parameters: ``[synthetic]`` and the label horizon of ``[labels]``."""
    return SyntheticConfig(
        **settings.synthetic.model_dump(),
        horizon_days=settings.labels.horizon_days,
        cutoffs=tuple(cutoffs) if cutoffs else None,
    )


def generate(
    settings: Settings,
    out: Path,
    cutoffs: Sequence[date] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> GenerationSummary:
    """Write a synthetic app's Adjust raw export and its true churn probabilities under ``out``."""
    return generate_app(synthetic_config(settings, cutoffs), out, overwrite, progress)


# --- ingest --------------------------------------------------------------------------------------


def ingest(
    settings: Settings,
    sources: Sequence[Path],
    now: datetime | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Add Adjust exports to the event store (``store.path``) under the ``[ingest]`` rules; bad
    files are listed in the summary's ``bad_files`` (everything readable is stored). Times more
    than ``ingest.max_future_days`` after ``now`` (default: the clock) are implausible."""
    now = now or datetime.now(UTC)  # the application's edge reads the clock, once
    return ingest_files(sources, settings.store.path, settings.ingest, progress=progress, now=now)


def reprocess_quarantine(settings: Settings, now: datetime | None = None) -> IngestSummary:
    """Run the quarantined rows of the store through today's ``[ingest]`` rules, once each:
    those that pass now are stored and leave the quarantine."""
    return retry_quarantine(settings.store.path, settings.ingest, now=now or datetime.now(UTC))


# --- features ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeaturesResult:
    """The features written, where, and what they were built from."""

    built: StoreFeatures
    path: Path
    seconds: float


def features(
    settings: Settings, as_of: date, out: Path, progress: Progress | None = None
) -> FeaturesResult:
    """Build the features of every subscriber active at ``as_of`` (``[features]``) and write
    them to ``out`` (Parquet); an unwritable ``out`` is refused before the work."""
    import time

    started = time.perf_counter()
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise StoreError(f"--out {out}: expected a .parquet file name (features are Parquet)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"--out {out}: cannot create {out.parent} ({exc.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise StoreError(f"--out {out}: cannot write in {out.parent}")
    definition = feature_definition(settings.features, settings.labels)
    with workplace(settings.dask) as where:
        built = store_features(settings.store.path, as_of, definition, progress, where=where)
    try:
        built.frame.to_parquet(out)
    except OSError as exc:
        raise StoreError(f"--out {out}: cannot write ({exc})") from None
    return FeaturesResult(built, out, time.perf_counter() - started)


# --- train ---------------------------------------------------------------------------------------


def truth_path(settings: Settings) -> Path | None:
    """The ground truth to compare with: ``training.truth_path``, else the generator's file in
    the store when there is one."""
    if settings.training.truth_path is not None:
        return settings.training.truth_path
    default = default_truth_path(settings.store.path)
    return default if default.is_file() else None


def train(settings: Settings, progress: Progress | None = None) -> TrainResult:
    """Tune, fit, calibrate, evaluate and register a model on the store's snapshots
    (``[training]``, ``[optuna]``, ``[mlflow]``, ``[features]``, ``[buckets]``, ``[labels]``)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with workplace(settings.dask) as where:
        return train_store(
            settings.store.path,
            TrainConfig.of(settings),
            truth_path(settings),
            progress,
            where=where,
            split=settings.features,
        )


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


# --- rescore -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RescoreOutcome:
    """The scores, where they were written (None: a dry run without --out), the model's version
    and bucket policy, and what the sync did with them."""

    result: RescoreResult
    path: Path | None
    model: ModelInfo
    sync: SyncOutcome


def default_scores_path(settings: Settings, as_of: date) -> Path:
    """Where rescore keeps the day's scores: ``<store>/scores/scores-<date>.parquet``."""
    return settings.store.path / "scores" / f"scores-{as_of}.parquet"


def rescore(
    settings: Settings,
    as_of: date,
    out: Path | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RescoreOutcome:
    """Score every subscriber active at the start of ``as_of`` with the champion, write the
    scores file, then push the changed buckets to Braze.

    A dry run writes the file only where asked (``out``): the day's file may be a real run's,
    still waiting for a ``lapse sync`` retry.
    """
    if not dry_run and settings.braze.api_key is None:  # say so before the work, not after it
        raise BrazeAuthError(
            "no Braze API key: set the BRAZE_API_KEY environment variable (or use --dry-run)"
        )
    uri = champion_uri(settings.mlflow.registered_model)
    model = load_model(settings.mlflow.tracking_uri, uri)
    with workplace(settings.dask) as where:
        result = score_store(
            settings.store.path,
            as_of,
            model,
            MAX_STALE_DAYS,
            progress,
            where=where,
            split=settings.features,
        )
    info = model_info(settings.mlflow.tracking_uri, uri)
    path = None
    if not (dry_run and out is None):
        provenance = {"as_of": result.as_of.isoformat(), "model": info.uri}
        provenance |= (
            {"model_name": info.name, "model_version": info.version} if info.version else {}
        )
        path = write_scores(
            result.scores,
            out or default_scores_path(settings, as_of),
            model.bucket_policy_,
            provenance,
        )
    pushed = push(settings, result.scores, dry_run, model.bucket_policy_, progress)
    return RescoreOutcome(result, path, info, pushed)


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


# --- demo ----------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """Every step's result, and where the demo keeps its store, registry and ledger."""

    root: Path
    settings: Settings
    generation: GenerationSummary | None = None
    truth: TruthCheck | None = None
    ingest: IngestSummary | None = None
    training: TrainResult | None = None
    rescore: RescoreOutcome | None = None
    again: SyncOutcome | None = None
    landed: dict[str, Any] = field(default_factory=dict)


def demo_settings(settings: Settings, root: Path) -> Settings:
    """The settings of a demo in ``root``: its own store, ledger, MLflow registry and Optuna
    study, so a demo model never becomes a real deployment's champion."""
    return settings.updated(
        store={"path": root},
        ledger={"url": f"sqlite:///{(root / 'ledger.db').resolve()}"},
        mlflow={
            "tracking_uri": f"sqlite:///{(root / 'mlflow.db').resolve()}",
            "artifact_location": str((root / "mlruns").resolve()),
        },
        optuna={"storage": f"sqlite:///{(root / 'optuna.db').resolve()}"},
    )


def demo(
    settings: Settings,
    trials: int = 10,
    progress: Progress | None = None,
    on_step: StepDone | None = None,
) -> DemoResult:
    """The main job end to end in ``<store.path>/demo`` (replaced each run): generate a
    synthetic app (and check its ground truth), ingest it, train and register the model, rescore
    on the day after the data ends and push the buckets to a Braze emulator on a free loopback
    port, then sync the same scores again (nothing unchanged is sent). ``on_step(title, result)``
    is told as each step ends."""
    from pydantic import SecretStr

    step = on_step or (lambda title, result: None)
    if not synthetic_config(settings).observed_cutoff_days():
        days, horizon = settings.synthetic.days, settings.labels.horizon_days
        raise GenerationError(
            f"demo needs an outcome inside the data: with synthetic.days = {days} no cut-off's "
            f"{horizon}-day horizon ends in time; raise synthetic.days or lower labels.horizon_days"
        )
    root = settings.store.path / "demo"
    if root.exists():
        shutil.rmtree(root)
    folder = root / "synthetic"
    local = demo_settings(settings, root).updated(optuna={"n_trials": trials})
    result = DemoResult(root, local)
    result.generation = generate(settings, folder, overwrite=True, progress=progress)
    step("1. generate a synthetic app, as Adjust exports it", result.generation)
    truth = pd.read_parquet(folder / "truth" / "churn_truth.parquet")
    result.truth = check_truth(truth)
    step("   its ground truth against realised outcomes", result.truth)

    key = "demo-key"
    with Emulator(EmulatorConfig(api_keys=frozenset({key}))) as braze:
        # the key is the emulator's own, never a real one from the environment
        local = local.model_copy(
            update={
                "braze": local.braze.model_copy(
                    update={"url": braze.url, "api_key": SecretStr(key)}
                )
            }
        )
        result.settings = local
        result.ingest = ingest(local, [folder / "raw"], progress=progress)
        step("2. ingest the export into the event store", result.ingest)
        result.training = train(local, progress)
        step(
            f"3. train, evaluate against baselines and the oracle ({trials} trials)",
            result.training,
        )
        last_day = settings.synthetic.start + timedelta(days=settings.synthetic.days)
        braze.add_profiles(truth[s.USER_ID].unique().tolist())  # users Braze already knows
        result.rescore = rescore(local, last_day, progress=progress)
        step(
            f"4. rescore on {last_day} and push changed buckets to the Braze emulator",
            result.rescore,
        )
        result.again = push(
            local,
            result.rescore.result.scores,
            policy=result.rescore.sync.config.policy,
            progress=progress,
        )
        step("5. the same scores again: nothing has changed, so nothing is sent", result.again)
        result.landed = braze.stats()
    return result
