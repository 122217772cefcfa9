"""A small sample app for the notebooks (``sample_app``) and the whole flow end to end
(``demo``): each calls the other jobs, as a user would."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from base import LapseError
from features import schema as s
from features.ingest import IngestSummary, StoreError
from features.synthetic import GenerationError, GenerationSummary
from features.synthetic.calibration import TruthCheck, check_truth
from lapse.jobs import Progress, StepDone, quiet
from lapse.jobs.braze import SyncOutcome, push
from lapse.jobs.modelling import train
from lapse.jobs.scoring import RescoreOutcome, rescore
from lapse.jobs.store import generate, ingest, synthetic_config
from lapse.settings import Settings
from serving.emulator import Emulator, EmulatorConfig
from training.registry import ModelNotFoundError, champion_uri, load_model
from training.splits import DataSufficiencyError
from training.train import TrainResult

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
        try:
            result.training = train(local, progress)
        except DataSufficiencyError as exc:
            users = settings.synthetic.users
            raise DataSufficiencyError(
                f"{exc}. The demo's app of {users:,} users is too small for them: run "
                "`lapse demo --users N` with more users (about 2,000 at the defaults)"
            ) from None
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
    report = quiet(progress)
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
