"""The `serve` command's jobs: what the HTTP service (``lapse.service``) does for each endpoint.

Each is a plain function (settings and arguments in, a typed result out, no HTTP), so the
service, notebooks and tests call the same code; the BentoML class only parses requests and
turns results and ``LapseError``s into answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from base import LapseError, shown
from features import schema as s
from features.build import build_feature_records, feature_registry
from features.ingest.callbacks import CallbackEvents, Rejection, callback_events
from features.timeline import to_timestamp
from lapse.settings import CONFIG_ENV, ENV_PREFIX, Settings
from serving.scores import SCORES_GLOB, LatestScores, latest_scores
from serving.scoring import LeanScorer
from training.pipeline import ChurnModel, ModelVersionError
from training.registry import (
    ModelInfo,
    ModelNotFoundError,
    champion_uri,
    check_model,
    load_model,
    load_model_at,
    model_info,
)

log = logging.getLogger(__name__)

__all__ = [
    "EventScores",
    "RequestError",
    "RowScores",
    "ServedModel",
    "WarmUp",
    "load_served_model",
    "lookup",
    "metadata",
    "score_events",
    "score_rows",
    "warm_up",
]


class RequestError(LapseError, ValueError):
    """A request the service cannot answer as asked; the message names the field and row."""


@dataclass(frozen=True)
class ServedModel:
    """A model loaded for serving: the model, its lean scoring path, and who it is."""

    model: ChurnModel
    lean: LeanScorer
    info: ModelInfo

    def identity(self) -> dict[str, str | None]:
        return {"model": self.info.name or self.info.uri, "model_version": self.info.version}


def model_uri(settings: Settings, uri: str | None = None) -> str:
    """The MLflow model to serve: ``uri``, else ``serving.model_uri``, else the champion."""
    return uri or settings.serving.model_uri or champion_uri(settings.mlflow.registered_model)


def load_served_model(settings: Settings, uri: str | None = None) -> ServedModel:
    """Load the model (ModelNotFoundError / ModelVersionError say why not) and derive its lean
    scoring path once."""
    uri = model_uri(settings, uri)
    model = load_model(settings.mlflow.tracking_uri, uri)
    return ServedModel(model, LeanScorer(model), model_info(settings.mlflow.tracking_uri, uri))


def served_from_path(path: str | Path, metadata: Mapping[str, Any]) -> ServedModel:
    """A model a Bento carries: its MLflow folder, and who it is (recorded when it was imported)."""
    model = load_model_at(path)
    known = {k: metadata.get(k) for k in ("uri", "name", "version", "run_id", "trained_at")}
    info = ModelInfo(**{**known, "uri": known["uri"] or str(path)}, metrics=metadata.get("metrics"))
    return ServedModel(model, LeanScorer(model), info)


# --- POST /score ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowScores:
    """Per row: the subscriber id, probability, bucket and reasons; and unknown columns seen."""

    results: list[dict[str, Any]]
    ignored: list[str]


def score_rows(
    served: ServedModel,
    rows: Sequence[Mapping[str, Any]],
    max_rows: int,
    reasons: bool = True,
) -> RowScores:
    """Score feature rows (each a mapping of feature name to value, plus ``user_id`` and
    optionally ``platform``). A missing feature names the row and the feature; extra columns
    are ignored and listed once. Without ``reasons`` each row's reasons are None (a bulk caller
    that needs only probabilities and buckets is spared TreeSHAP)."""
    if len(rows) > max_rows:
        raise RequestError(f"rows: {len(rows):,} rows, at most {max_rows:,} (serving.max_rows)")
    features = served.lean.features
    required = frozenset(features)
    known = required | {s.USER_ID, s.PLATFORM}
    ignored: set[str] = set()
    checked: tuple[str, ...] | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, dict) and not isinstance(row, Mapping):  # dict: the cheap test
            raise RequestError(f"rows[{i}]: expected an object of features, got {shown(row)}")
        names = tuple(row)  # a batch's rows mostly share their keys: each key set checked once
        if names == checked:
            continue
        keys = row.keys()
        if not keys >= required:
            missing = [f for f in features if f not in row]
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise RequestError(
                f"rows[{i}]: missing feature(s) {', '.join(missing[:3])}{more} "
                f"(the model takes {len(features)} features; GET /metadata lists them)"
            )
        if not keys <= known:
            ignored.update(keys - known)
        checked = names
    return RowScores(_answers(served, rows, reasons=reasons), sorted(ignored))


def _answers(
    served: ServedModel, rows: Sequence[Mapping[str, Any]], reasons: bool = True
) -> list[dict[str, Any]]:
    """The answer per scored row: who, probability, bucket, reasons and the model's identity."""
    scored = served.lean.score(rows, reasons=reasons)
    identity = served.identity()
    return [
        {
            s.USER_ID: _text(row.get(s.USER_ID)),
            s.PLATFORM: _text(row.get(s.PLATFORM)),
            s.CHURN_PROBABILITY: p,
            s.BUCKET: b,
            s.REASONS: r,
            **identity,
        }
        for row, p, b, r in zip(
            rows, scored[s.CHURN_PROBABILITY], scored[s.BUCKET], scored[s.REASONS], strict=True
        )
    ]


def _text(value: Any) -> str | None:
    """An id as text (a number sent as an id is answered as its text)."""
    return None if value is None else str(value)


# --- POST /score_events --------------------------------------------------------------------------


@dataclass(frozen=True)
class EventScores:
    """Scores of the subscribers active at ``as_of``, the callbacks refused (with their index),
    and the subscribers the events name who are not active then."""

    as_of: pd.Timestamp
    results: list[dict[str, Any]]
    rejected: list[Rejection]
    inactive: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0


def score_events(
    settings: Settings,
    served: ServedModel,
    events: Sequence[Any],
    as_of: str | datetime | pd.Timestamp,
    now: datetime | None = None,
) -> EventScores:
    """Score subscribers from their Adjust callbacks: the callbacks go through ingest's reading,
    normalisation and event keys (``features.ingest.callbacks``), then the model's own feature
    definition at ``as_of``: the answer equals what ``lapse rescore --as-of`` writes for the
    same events. ``now`` bounds plausible times (``ingest.max_future_days``)."""
    try:
        when = to_timestamp(as_of)
    except LapseError:
        raise RequestError(
            f"as_of: expected a date or time (YYYY-MM-DD) between 1678 and 2261, got {shown(as_of)}"
        ) from None
    if len(events) > settings.serving.max_events:
        raise RequestError(
            f"events: {len(events):,} callbacks, at most {settings.serving.max_events:,} "
            "(serving.max_events)"
        )
    normalised: CallbackEvents = callback_events(events, settings.ingest, now=now, shared=True)
    config = served.model.feature_definition
    rows = []
    if normalised.events.num_rows:  # the service's long-lived DuckDB: no database per request
        rows = build_feature_records(normalised.events, when, config, shared=True)
    named = _subscribers(normalised)
    results = _answers(served, rows) if rows else []
    active = {(r[s.USER_ID], r[s.PLATFORM]) for r in results}
    inactive = [{s.USER_ID: u, s.PLATFORM: p} for u, p in sorted(named) if (u, p) not in active]
    return EventScores(when, results, normalised.rejected, inactive, normalised.duplicates)


def _subscribers(events: CallbackEvents) -> set[tuple[str, str]]:
    table = events.events
    if not table.num_rows or s.PLATFORM not in table.column_names:
        return set()
    users = table.column(s.USER_ID).to_pylist()
    platforms = table.column(s.PLATFORM).to_pylist()
    return {(u, p) for u, p in zip(users, platforms, strict=True) if u and p}


# --- POST /lookup --------------------------------------------------------------------------------


class ScoresCache:
    """The newest readable rescore scores file, re-read when a newer one appears (checked at most
    every ``interval_s``), so ``/lookup`` answers from memory. A file that cannot be read (one
    being written, or damaged) is logged once, naming it, and the newest readable one answers:
    it is no fault of the caller's, nor a reason not to start; it is read again once it changes."""

    def __init__(self, folder: Path, interval_s: float = 5.0, clock=time.monotonic) -> None:
        self.folder = folder
        self.interval_s = interval_s
        self._clock = clock
        self._checked = -float("inf")
        self._lock = threading.Lock()
        self._unreadable: tuple[Path, tuple[int, int] | None] | None = None
        self._latest = LatestScores(None, {}, {})
        self._stamp: tuple[int, int] | None = None
        newest = max(folder.glob(SCORES_GLOB), default=None)
        if newest is not None:
            self._read(newest, _stamp(newest))

    @property
    def latest(self) -> LatestScores:
        """The scores answering now, without looking for a newer file."""
        return self._latest

    def get(self) -> LatestScores:
        now = self._clock()
        if now - self._checked >= self.interval_s:
            with self._lock:
                if now - self._checked >= self.interval_s:
                    self._checked = now
                    newest = max(self.folder.glob(SCORES_GLOB), default=None)
                    stamp = _stamp(newest)
                    if newest is not None and (newest, stamp) != (self._latest.path, self._stamp):
                        self._read(newest, stamp)
        return self._latest

    def _read(self, newest: Path, stamp: tuple[int, int] | None) -> None:
        if (newest, stamp) == self._unreadable:
            return
        fresh = latest_scores(self.folder)
        read = fresh
        if fresh.path is None and self._latest.path is not None:
            # nothing readable now: the scores in memory keep answering
            read = dataclasses.replace(self._latest, damaged=fresh.damaged)
        if read.path is None:
            answers = "none: every id is answered 'not scored'"
        else:
            answers = f"{read.path.name} (as_of {read.provenance.get('as_of', 'unknown')})"
        for path, why in fresh.damaged:
            if path == newest:
                self._unreadable = (newest, stamp)
            log.warning("damaged scores file %s: %s; /lookup answers from %s", path, why, answers)
        self._latest, self._stamp = read, _stamp(read.path)


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """A file's modification time and size: a rescore rewriting the day's file changes it."""
    if path is None or not path.exists():
        return None
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def scores_folder(settings: Settings) -> Path:
    """Where rescore keeps its scores files: ``<store>/scores``."""
    return settings.store.path / "scores"


def lookup(latest: LatestScores, user_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Each id's latest score (every platform it was scored on), or ``scored: false``."""
    provenance = latest.provenance
    out = []
    for user in user_ids:
        rows = latest.get(str(user))
        if not rows:
            out.append({s.USER_ID: user, "scored": False})
            continue
        for row in rows:
            out.append(
                {
                    s.USER_ID: user,
                    "scored": True,
                    s.PLATFORM: row.get(s.PLATFORM),
                    s.AS_OF: provenance.get("as_of"),
                    s.CHURN_PROBABILITY: row.get(s.CHURN_PROBABILITY),
                    s.BUCKET: row.get(s.BUCKET),
                    s.REASONS: list(row.get(s.REASONS) or []),
                    "model": provenance.get("model_name") or provenance.get("model"),
                    "model_version": provenance.get("model_version"),
                }
            )
    return out


# --- warm-up ------------------------------------------------------------------------------------

#: The id of the synthetic subscriber the warm-up scores (never written anywhere).
WARM_UP_ID = "lapse-warm-up"


@dataclass(frozen=True)
class WarmUp:
    """What the warm-up ran (the endpoints whose path it took) and what failed, with why."""

    done: list[str]
    failed: dict[str, str]
    seconds: float


def warm_up_callbacks(settings: Settings) -> tuple[list[dict[str, Any]], pd.Timestamp]:
    """A synthetic subscriber's Adjust callbacks (a session and a subscription activation, under
    ``ingest.user_id_column``) and an ``as_of`` at which it is active: built from nothing
    app-specific, and inside the ingest rules' window (a week after ``ingest.earliest``)."""
    start = pd.Timestamp(settings.ingest.earliest, tz="UTC") + pd.Timedelta(days=1)
    base = {s.OS_NAME: "ios", s.ADID: WARM_UP_ID, settings.ingest.user_id_column: WARM_UP_ID}
    callbacks = [
        {**base, s.ACTIVITY_KIND: "session", s.CREATED_AT: int(start.timestamp())},
        {
            **base,
            s.ACTIVITY_KIND: "subscription",
            s.CREATED_AT: int(start.timestamp()) + 60,
            s.SUB_EVENT_TYPE: "activation",
            s.SUB_PRODUCT_ID: "warm_up_monthly",
            s.SUB_EXPIRATION_TIME: (start + pd.Timedelta(days=30)).isoformat(),
        },
    ]
    return callbacks, start + pd.Timedelta(days=7)


def warm_up(settings: Settings, served: ServedModel, latest: LatestScores | None) -> WarmUp:
    """Take each endpoint's path once so that its first caller does not pay one-time costs
    (DuckDB's import and shared database, polars' first queries, LightGBM's first predict and
    TreeSHAP): ``/score`` on a row of the model's own features (all missing), ``/score_events``
    on a synthetic subscriber (``warm_up_callbacks``), and ``/lookup`` of that id when scores
    exist. It writes nothing and reads no clock; a path that fails is named in ``failed``."""
    started = time.perf_counter()
    done: list[str] = []
    failed: dict[str, str] = {}
    row: dict[str, Any] = {s.USER_ID: WARM_UP_ID, s.PLATFORM: "ios"}
    row.update(dict.fromkeys(served.lean.features))
    callbacks, as_of = warm_up_callbacks(settings)

    def events() -> None:
        answer = score_events(settings, served, callbacks, as_of)
        if answer.rejected:
            first = answer.rejected[0]
            raise RequestError(f"its callback {first.index} was refused ({first.reason})")
        if not answer.results:
            raise RequestError(f"the synthetic subscriber was not active at {as_of:%Y-%m-%d}")

    paths: dict[str, Callable[[], object]] = {
        "/score": lambda: score_rows(served, [row], max_rows=1),
        "/score_events": events,
    }
    if latest is not None and latest.path is not None:
        paths["/lookup"] = lambda: lookup(latest, [WARM_UP_ID])
    for path, run in paths.items():
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - a path not warmed is slower once, not broken
            failed[path] = f"{type(exc).__name__}: {exc}"
        else:
            done.append(path)
    return WarmUp(done, failed, time.perf_counter() - started)


# --- GET /metadata -------------------------------------------------------------------------------


def metadata(served: ServedModel, latest: LatestScores | None = None) -> dict[str, Any]:
    """The model that answers: name, version, run, trained-at, hold-out metrics, features with
    descriptions, bucket policy and feature definition; and the scores file ``/lookup`` answers
    from (its as_of, and the newer files passed over as damaged)."""
    model, info = served.model, served.info
    definition = model.feature_definition
    registry = feature_registry(definition)
    policy = model.bucket_policy_
    return {
        "model": info.name,
        "model_version": info.version,
        "model_uri": info.uri,
        "run_id": info.run_id,
        "trained_at": info.trained_at,
        "metrics": info.metrics or {},
        "features": [
            {
                "name": name,
                "kind": registry[name].kind if name in registry else "numeric",
                "description": registry[name].description if name in registry else "",
                "reason_group": model.reason_groups_.get(name, "other"),
            }
            for name in model.features_
        ],
        "bucket_policy": {"bounds": [list(c) for c in policy.cuts], "rest": policy.rest},
        "feature_definition": definition.model_dump(mode="json"),
        "calibration": model.calibration_,
        "lookup_scores": None if latest is None else _scores_source(latest),
    }


def _scores_source(latest: LatestScores) -> dict[str, Any]:
    """Which scores file /lookup answers from, and the newer ones passed over as damaged."""
    return {
        "file": latest.path.name if latest.path else None,
        "as_of": latest.provenance.get("as_of"),
        "damaged": [{"file": path.name, "error": why} for path, why in latest.damaged],
    }


# --- lapse serve ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A running `bentoml serve` of the Lapse service: where it listens and what it serves."""

    process: subprocess.Popen
    url: str
    info: ModelInfo
    log: Path

    def stop(self) -> None:
        """Stop the server and delete its log file (a temporary file nobody else removes)."""
        stop_server(self.process)
        self.log.unlink(missing_ok=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_server(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    uri: str | None = None,
    timeout_s: float = 120.0,
    waiting: Callable[[float], None] | None = None,
) -> Server:
    """Start the service (``bentoml serve lapse.service:LapseChurn``) on the model and wait until
    ``/readyz`` answers; a model that cannot be loaded stops it with the loader's one line (its
    ModelNotFoundError or ModelVersionError): a URI with nothing behind it is found here, before
    the service starts, by reading the model's MLmodel file. Only the service loads the model:
    this process learns which version it serves from its ``/metadata``."""
    import httpx

    uri = model_uri(settings, uri)
    host = host or settings.serving.host
    port = settings.serving.port if port is None else port
    try:  # a busy port would answer /readyz for another server: say so instead
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        raise RequestError(
            f"--port {port}: cannot listen on {host} ({exc.strerror or exc}); "
            "is another service on it? Pick another port"
        ) from None
    # a URI with no model behind it is refused here in seconds, before BentoML starts: the
    # service would fail only once its worker had imported everything and tried to load it
    check_model(settings.mlflow.tracking_uri, uri)
    env = {
        **os.environ,
        **location_env(settings),
        "LAPSE_SERVING__MODEL_URI": uri,
        "BENTOML_DO_NOT_TRACK": "true",
    }
    if settings.config_file is not None:
        env[CONFIG_ENV] = str(settings.config_file)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1])])
    command = [
        sys.executable, "-m", "bentoml", "serve", "lapse.service:LapseChurn",
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    # a file, not a pipe: nobody reads a pipe once the service is up, and a full one blocks it
    log = Path(tempfile.mkstemp(prefix="lapse-serve-", suffix=".log")[1])
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    started = time.monotonic()
    token = settings.serving.token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        with httpx.Client(timeout=1.0, headers=headers) as client:  # building one costs ~50 ms
            while True:
                output = log.read_text(errors="replace")
                if process.poll() is not None or "Traceback" in output:  # a worker failed
                    raise _start_failure(_whole_failure(process, log), uri)
                try:
                    if client.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                elapsed = time.monotonic() - started
                if elapsed > timeout_s:
                    raise RequestError(f"the service on {url} was not ready after {timeout_s:g} s")
                if waiting:
                    waiting(elapsed)
                time.sleep(0.2)
            served = client.get(f"{url}/metadata", timeout=30.0).json()
    except BaseException:  # a failed start, or Ctrl-C while waiting: leave nothing running
        stop_server(process)
        log.unlink(missing_ok=True)
        raise
    info = ModelInfo(
        uri,
        served.get("model"),
        served.get("model_version"),
        served.get("run_id"),
        served.get("trained_at"),
        served.get("metrics"),
    )
    return Server(process, url, info, log)


def _whole_failure(process: subprocess.Popen, log: Path, wait_s: float = 10.0) -> str:
    """The service's output once its traceback has ended in an error line (or it exited)."""
    deadline = time.monotonic() + wait_s
    while True:
        output = log.read_text(errors="replace")
        ended = any(_ERROR_LINE.match(line.strip()) for line in output.splitlines())
        if ended or process.poll() is not None or time.monotonic() > deadline:
            return output
        time.sleep(0.1)


def location_env(settings: Settings) -> dict[str, str]:
    """Where the service finds its store and models, as ``LAPSE_`` variables for its process:
    the caller's settings, also when changed in code (the demo's own folder), not only what the
    file and environment say."""
    return {
        f"{ENV_PREFIX}STORE__PATH": str(settings.store.path),
        f"{ENV_PREFIX}MLFLOW__TRACKING_URI": str(settings.mlflow.tracking_uri),
        f"{ENV_PREFIX}MLFLOW__ARTIFACT_LOCATION": str(settings.mlflow.artifact_location),
        f"{ENV_PREFIX}MLFLOW__REGISTERED_MODEL": settings.mlflow.registered_model,
    }


def _die_with_parent() -> None:
    """In the server's process, before it runs: SIGTERM it when the process that started it
    dies, even by SIGKILL (Linux), so a killed `lapse serve` leaves no server behind."""
    import ctypes

    with contextlib.suppress(OSError):  # not Linux: a killed parent may leave it running
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_ERROR_LINE = re.compile(r"^([\w.]+)(Error|Exception): (.*)")


def _start_failure(output: str, uri: str) -> LapseError:
    """The loader's own error when the model could not be loaded, else the last error line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    last = (errors or lines or ["no output"])[-1]
    if found := _ERROR_LINE.match(last):
        name = found[1].rsplit(".", 1)[-1] + found[2]
        for error in (ModelNotFoundError, ModelVersionError):
            if name == error.__name__:
                return error(found[3])
    return RequestError(f"the service for {uri} could not start: {last[:400]}")


def stop_server(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM the server (its workers go with it), then kill it if it does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- lapse serve --build -------------------------------------------------------------------------

#: The BentoML model name a Bento's model is imported under.
BENTO_MODEL_NAME = "lapse-churn"


@dataclass(frozen=True)
class BuiltBento:
    """A Bento of the service and the BentoML model it carries."""

    tag: str
    model_tag: str
    info: ModelInfo


def build_bento(settings: Settings, uri: str | None = None) -> BuiltBento:
    """Import the model (default: the champion) into BentoML's model store, with who it is, and
    build ``bentofile.yaml`` into a Bento that carries it (``bentoml serve <tag>`` runs it)."""
    import bentoml
    import mlflow

    uri = model_uri(settings, uri)
    load_model(settings.mlflow.tracking_uri, uri)  # refuse a missing or old model first
    info = model_info(settings.mlflow.tracking_uri, uri)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    metadata = {
        "uri": info.uri,
        "name": info.name,
        "version": info.version,
        "run_id": info.run_id,
        "trained_at": info.trained_at,
        "metrics": info.metrics or {},
    }
    stored = bentoml.mlflow.import_model(BENTO_MODEL_NAME, model_uri=uri, metadata=metadata)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LAPSE_BENTO_MODEL": str(stored.tag), "BENTOML_DO_NOT_TRACK": "true"}
    command = [sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "--output", "tag"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RequestError(f"bentoml build failed: {last[:400]}")
    tag = done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    return BuiltBento(tag, str(stored.tag), info)
