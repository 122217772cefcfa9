"""One job function per command: the application layer every caller shares.

Each job takes the one ``Settings`` object and the command's arguments, reports long work through
``progress(stage, done, total)``, and returns a typed result; none prints. The CLI renders the
results (``lapse.render``); the BentoML service, the notebooks, schedulers and ``demo`` call the
same functions, so no caller holds application logic of its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from base import LapseError
from features import schema as s
from features.cluster import workplace
from features.from_store import StoreFeatures, read_events, store_features
from features.ingest import IngestSummary, StoreError
from features.ingest import ingest as ingest_files
from features.ingest import reprocess_quarantine as retry_quarantine
from features.settings import feature_definition
from features.synthetic import GenerationError, GenerationSummary, SyntheticConfig
from features.synthetic import generate as generate_app
from features.synthetic.calibration import TruthCheck, check_truth
from lapse.settings import Settings
from serving.backtest import BacktestError, BacktestResult, log_backtest, result_tables
from serving.backtest import backtest as measure_history
from serving.braze_client import BrazeAuthError
from serving.drift import DriftRecord, newest_drift, write_drift
from serving.due import DueDecision, champion_of, newest_backtest, retrain_due
from serving.emulator import Emulator, EmulatorConfig, EmulatorConfigError
from serving.history import HistoryWrite, append_history, history_days, history_root, read_history
from serving.rescore import MAX_STALE_DAYS, RescoreResult
from serving.rescore import rescore as score_store
from serving.scores import read_scores, read_scores_policy, write_scores
from serving.sync import SyncConfig, SyncReport
from serving.sync import sync as sync_scores
from training.buckets import BucketPolicy
from training.registry import (
    ModelInfo,
    ModelNotFoundError,
    champion_uri,
    experiment_id,
    load_model,
    model_info,
)
from training.settings import TrainConfig
from training.train import (
    TrainResult,
    default_truth_path,
    load_truth,
    train_store,
)
from training.train import (
    training_snapshots as store_training_snapshots,
)

Progress = Callable[[str, int, int], None]
#: Called by `demo` as each step ends: (step title, that step's result).
StepDone = Callable[[str, Any], None]

__all__ = [
    "BacktestOutcome",
    "DemoResult",
    "ServiceAnswers",
    "FeaturesResult",
    "IfDueOutcome",
    "RescoreOutcome",
    "SampleApp",
    "SyncOutcome",
    "backtest",
    "demo",
    "emulator",
    "features",
    "generate",
    "ingest",
    "reprocess_quarantine",
    "rescore",
    "sample_app",
    "sample_settings",
    "sync",
    "train",
    "training_snapshots",
    "train_if_due",
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


def training_snapshots(settings: Settings, progress: Progress | None = None) -> pd.DataFrame:
    """The labelled snapshots ``train`` learns from: the same store, cut-offs (the ground
    truth's when there is one), feature definition and label horizon."""
    config = TrainConfig.of(settings)
    truth = load_truth(truth_path(settings), config.labels.horizon_days)
    with workplace(settings.dask) as where:
        built, _ = store_training_snapshots(
            settings.store.path, config, truth, progress, where, settings.features
        )
    return built.frame


@dataclass(frozen=True)
class IfDueOutcome:
    """What `lapse train --if-due` decided, and the training run when it was due."""

    decision: DueDecision
    training: TrainResult | None = None


def train_if_due(
    settings: Settings, now: datetime | None = None, progress: Progress | None = None
) -> IfDueOutcome:
    """Train (as ``train``) only when the champion is due (``serving.due.retrain_due``): none
    yet, older than ``training.max_age_days``, the newest backtest past ``monitoring.min_roc_auc``
    or ``monitoring.max_ece``, or drift flagged by the newest rescore; else say why not."""
    now = now or datetime.now(UTC)  # the application's edge reads the clock, once
    tracking = settings.mlflow.tracking_uri
    decision = retrain_due(
        now,
        champion_of(tracking, settings.mlflow.registered_model),
        newest_backtest(tracking, settings.monitoring.experiment),
        newest_drift(settings.store.path),
        max_age_days=settings.training.max_age_days,
        min_roc_auc=settings.monitoring.min_roc_auc,
        max_ece=settings.monitoring.max_ece,
    )
    if not decision.due:
        return IfDueOutcome(decision)
    return IfDueOutcome(decision, train(settings, progress))


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
    and bucket policy, what the sync did with them, where the scores history keeps them and
    where the drift record went (None: a dry run records neither; the drift itself is
    ``result.drift``)."""

    result: RescoreResult
    path: Path | None
    model: ModelInfo
    sync: SyncOutcome
    drift_path: Path | None = None
    history: HistoryWrite | None = None


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
    still waiting for a ``lapse sync`` retry. A real run also records the scores in the store's
    scores history (``serving.history``, once per day and model version) and the drift of the
    scored population from the model's training data (PSI, ``monitoring.psi_threshold``) in
    ``<store>/monitoring/drift/``, both before the push, where ``lapse backtest`` and ``lapse
    train --if-due`` read them.
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
            psi_threshold=settings.monitoring.psi_threshold,
            drift_exempt=settings.monitoring.drift_exempt,
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
    drift_path = history = None
    if not dry_run:  # what was scored is history, whether or not the push goes through
        record = DriftRecord(as_of, info.name, info.version, result.drift)
        drift_path = write_drift(settings.store.path, record)
        name, version = history_identity(info)
        history = append_history(settings.store.path, result.scores, result.as_of, name, version)
    pushed = push(settings, result.scores, dry_run, model.bucket_policy_, progress)
    return RescoreOutcome(result, path, info, pushed, drift_path, history)


def history_identity(info: ModelInfo) -> tuple[str, str]:
    """(model name, version) a rescore is recorded under; a model outside the registry (a
    ``runs:/`` URI) is ``model`` with a version made from its URI, so it still never mixes."""
    if info.name and info.version:
        return info.name, info.version
    import hashlib

    return info.name or "model", "uri-" + hashlib.sha256(info.uri.encode()).hexdigest()[:12]


# --- backtest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestOutcome:
    """The backtest, the HTML report it wrote, and its MLflow run (experiment, run id)."""

    result: BacktestResult
    report: Path
    experiment: str
    run_id: str
    since: date | None = None
    until: date | None = None


def default_report_path(settings: Settings, newest_day: date) -> Path:
    """Where the report goes without --report: ``<store>/reports/backtest-<newest day>.html``
    (the newest scoring day asked for; a later backtest of the same days replaces it)."""
    return settings.store.path / "reports" / f"backtest-{newest_day}.html"


def backtest(
    settings: Settings,
    since: date | None = None,
    until: date | None = None,
    report: Path | None = None,
    progress: Progress | None = None,
) -> BacktestOutcome:
    """Set every past scoring day of the scores history (from ``since`` to ``until``, both
    included) against the churn the event store now shows, with the ``[labels]`` rule; days
    whose horizon is not over by the newest stored event are pending. Writes the HTML report
    and logs one run to the ``monitoring.experiment`` MLflow experiment."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if since is not None and until is not None and since > until:
        raise BacktestError(f"--since {since} is after --until {until}; expected since <= until")
    store = settings.store.path
    days = history_days(store)
    if not days:
        raise BacktestError(
            f"{history_root(store)}: no scores history; every `lapse rescore` records what it "
            "scored there, so rescore first"
        )
    history = read_history(store, since, until)
    if history.empty:
        raise BacktestError(
            f"no scoring day from {since or 'the start'} to {until or 'the end'}; the scores "
            f"history holds {len(days)} day(s), {days[0]} .. {days[-1]}"
        )
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise BacktestError(f"--report {report}: expected an .html file name")
    definition = feature_definition(settings.features, settings.labels)
    report_fn = _quiet(progress)
    report_fn("load", 0, 1)
    events = read_events(store, definition)
    report_fn("load", 1, 1)
    result = measure_history(history, events, settings.labels.horizon_days, definition, progress)
    del events
    from serving.backtest_report import report_html

    mlflow_settings = settings.mlflow
    references = {}
    for name, version in result.days[[s.MODEL_NAME, s.MODEL_VERSION]].drop_duplicates().values:
        info = model_info(mlflow_settings.tracking_uri, f"models:/{name}/{version}")
        if info.metrics and "holdout_roc_auc" in info.metrics:
            references[f"{name} v{version}"] = info.metrics["holdout_roc_auc"]
    path = report or default_report_path(settings, max(history[s.AS_OF]).date())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report_html(result, references), encoding="utf-8")
    except OSError as exc:
        raise BacktestError(f"--report {path}: cannot write ({exc.strerror or exc})") from None
    experiment = settings.monitoring.experiment
    exp_id = experiment_id(
        mlflow_settings.tracking_uri, experiment, mlflow_settings.artifact_location
    )
    params = {
        "since": str(since) if since else "",
        "until": str(until) if until else "",
        "store.path": str(store),
        "labels.horizon_days": settings.labels.horizon_days,
        "labels.renewal_leeway_hours": settings.labels.renewal_leeway_hours,
        "history_days": len(set(history[s.AS_OF])),
        "model_versions": ",".join(sorted(set(history[s.MODEL_VERSION]), key=_as_number)),
    }
    run_id = log_backtest(result, exp_id, params, result_tables(result), (path,))
    return BacktestOutcome(result, path, experiment, run_id, since, until)


def _as_number(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


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


# --- a sample app (the notebooks) ---------------------------------------------------------------

#: The file that marks a folder as a sample app's and records the generator settings it holds.
SAMPLE_MARK = "sample.json"


@dataclass(frozen=True)
class SampleApp:
    """A small synthetic app in its own folder: the settings that point at it, and what was
    generated and ingested (both None when an app made earlier with the same settings is
    reused)."""

    settings: Settings
    generation: GenerationSummary | None = None
    ingest: IngestSummary | None = None
    #: The run that made the champion, when ``sample_app(champion=True)`` had to train one.
    training: TrainResult | None = None

    @property
    def reused(self) -> bool:
        return self.generation is None


def sample_settings(
    settings: Settings,
    folder: str = "notebooks",
    users: int = 1500,
    trials: int = 3,
    min_labels: int = 20,
) -> Settings:
    """The settings of a small sample app in ``<store.path>/<folder>`` (its own store,
    registry, study and ledger, as ``demo_settings``): ``users`` generated, ``trials`` Optuna
    trials, and splits accepted from ``min_labels`` churners and non-churners, so a notebook
    runs in minutes."""
    return demo_settings(settings, settings.store.path / folder).updated(
        synthetic={"users": users},
        optuna={"n_trials": trials},
        training={"min_churners": min_labels, "min_non_churners": min_labels},
    )


def sample_app(
    settings: Settings, champion: bool = False, progress: Progress | None = None
) -> SampleApp:
    """Generate and ingest the synthetic app of ``settings`` into ``store.path`` (from
    ``sample_settings``), or reuse the one already there when it was made with the same
    ``[synthetic]`` settings, so each notebook runs alone or after another. A folder that holds
    something else is refused rather than replaced. With ``champion``, also train a model when
    the app's registry has no champion yet (a notebook that scores needs one)."""
    app = _sample_store(settings, progress)
    if not champion:
        return app
    try:
        load_model(settings.mlflow.tracking_uri, champion_uri(settings.mlflow.registered_model))
    except ModelNotFoundError:
        trained = train(settings, progress)
        if not trained.gate.moved:
            raise ModelNotFoundError(
                f"the sample app's model (run {trained.run_id}) did not beat the CRM rule, so "
                "there is no champion to score with; make the app larger (users=)"
            ) from None
        from dataclasses import replace

        return replace(app, training=trained)
    return app


def _sample_store(settings: Settings, progress: Progress | None) -> SampleApp:
    root = settings.store.path
    mark = root / SAMPLE_MARK
    wanted = settings.synthetic.model_dump_json()
    if mark.is_file():
        if mark.read_text() == wanted:
            return SampleApp(settings)
        shutil.rmtree(root)  # a sample app of other settings: ours to replace
    elif root.exists() and any(root.iterdir()):
        raise StoreError(
            f"{root}: not empty and not a sample app (no {SAMPLE_MARK}); "
            "choose another store.path (LAPSE_STORE__PATH) or folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    mark.write_text("")  # ours from now on: a run killed half-way is replaced by the next one
    folder = root / "synthetic"
    generation = generate(settings, folder, overwrite=True, progress=progress)
    ingested = ingest(settings, [folder / "raw"], progress=progress)
    mark.write_text(wanted)
    return SampleApp(settings, generation, ingested)


# --- demo ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAnswers:
    """What the running service answered about one subscriber: ``POST /score_events`` on the
    subscriber's Adjust callbacks and ``POST /lookup`` on its id (the response bodies), next to
    the probability the rescore wrote for it."""

    url: str
    user_id: str
    platform: str
    as_of: date
    callbacks: int
    score_events: dict[str, Any]
    lookup: dict[str, Any]
    rescored: float

    @property
    def scored(self) -> dict[str, Any]:
        """The /score_events answer for this subscriber (platform included)."""
        return next(
            r
            for r in self.score_events["scores"]
            if (r[s.USER_ID], r[s.PLATFORM]) == (self.user_id, self.platform)
        )

    @property
    def looked_up(self) -> dict[str, Any]:
        """The /lookup answer for this subscriber on its platform."""
        return next(
            r
            for r in self.lookup["results"]
            if r.get("scored") and r.get(s.PLATFORM) == self.platform
        )


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
    service: ServiceAnswers | None = None

    @property
    def service_file(self) -> Path:
        """Where the demo keeps the service's answers (JSON), beside its store."""
        return self.root / "service-answers.json"


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
    port, then sync the same scores again (nothing unchanged is sent); last, start the HTTP
    service on a free loopback port and score the riskiest subscriber by ``/score_events`` (its
    Adjust callbacks) and ``/lookup`` (kept in ``service-answers.json``), then stop it.
    Everything started is stopped on the way out, on failure and on Ctrl-C too.
    ``on_step(title, result)`` is told as each step ends."""
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
    result.service = ask_service(local, result.rescore, progress)
    result.service_file.write_text(json.dumps(asdict(result.service), default=str, indent=2))
    step("6. the service over HTTP: one subscriber by /score_events and /lookup", result.service)
    return result


def ask_service(
    settings: Settings, rescored: RescoreOutcome, progress: Progress | None = None
) -> ServiceAnswers:
    """Start the service on the champion (a free loopback port), score the subscriber the
    rescore found riskiest by ``/score_events`` on its stored Adjust callbacks and by
    ``/lookup`` on its id, and stop the service (also on failure or Ctrl-C)."""
    import httpx

    from features.ingest.callbacks import stored_callbacks
    from lapse.serve import free_port, start_server, stop_server

    scores = rescored.result.scores
    top = scores.loc[scores[s.CHURN_PROBABILITY].idxmax()]
    user, platform = str(top[s.USER_ID]), str(top[s.PLATFORM])
    as_of = rescored.result.as_of.date()
    callbacks = stored_callbacks(settings.store.path, [user])
    report = _quiet(progress)
    server = start_server(
        settings,
        "127.0.0.1",
        free_port(),
        waiting=lambda seconds: report("service", min(int(seconds), 60), 60),
    )
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            events = client.post(
                "/score_events", json={"as_of": as_of.isoformat(), "events": callbacks}
            )
            looked = client.post("/lookup", json={"user_ids": [user]})
    finally:
        stop_server(server.process)
        server.log.unlink(missing_ok=True)
    for name, answer in (("/score_events", events), ("/lookup", looked)):
        if answer.status_code != 200:
            raise ServiceAnswerError(
                f"POST {name} on {server.url} answered {answer.status_code}: {answer.text[:300]}"
            )
    return ServiceAnswers(
        server.url,
        user,
        platform,
        as_of,
        len(callbacks),
        events.json(),
        looked.json(),
        float(top[s.CHURN_PROBABILITY]),
    )


class ServiceAnswerError(LapseError):
    """The demo's service refused a request it should have answered."""
