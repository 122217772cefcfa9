"""Suite-wide settings: hypothesis without its wall-clock deadline (a loaded shared machine
would fail an example for being slow, not wrong); the trained generator app the slow tests
share (``trained_app``)."""

from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("lapse", deadline=None)
settings.load_profile("lapse")

ROOT = Path(__file__).resolve().parents[1]

#: The test files that take minutes, heaviest first (a full run's `--durations`). `make test`
#: hands whole files to three workers in collection order (`--dist loadfile
#: --no-loadscope-reorder`): these start first, so no worker picks a long file up at the end
#: while the others sit idle (the files of TRAINED_APP_FILES go as one, see below). Scheduling
#: only: a file missing here just starts later.
HEAVY_FIRST = (
    "tests/lapse/test_cli.py",
    "tests/lapse/test_service.py",
    "tests/training/test_train.py",
    "tests/lapse/test_secret.py",
    "tests/test_notebooks.py",
    "tests/serving/test_sync.py",
    "tests/features/test_leeway.py",
    "tests/features/test_labels.py",
    "tests/features/ingest/test_property.py",
    "tests/serving/test_drift.py",
    "tests/features/synthetic/test_generator.py",
    "tests/lapse/test_backtest.py",
    "tests/training/test_tune_workers.py",
    "tests/serving/test_backtest.py",
)


#: The files whose tests use ``trained_app`` (directly or through ``rescored_app``): building
#: it trains a model, over a minute of CPU, once per worker that runs one of them. `make test`
#: hands these files to one worker as a single unit (the scheduler below), so it is built once
#: a run, not up to once per worker. Collection fails if a file using it is missing here.
TRAINED_APP_FILES = (
    "tests/lapse/test_service.py",
    "tests/lapse/test_backtest.py",
    "tests/serving/test_backtest.py",
)


def _file(item: pytest.Item) -> str:
    return item.path.relative_to(ROOT).as_posix()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heavy files first, in HEAVY_FIRST's order; the others after, as collected."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}

    def order(item: pytest.Item) -> int:
        return rank.get(_file(item), len(HEAVY_FIRST))

    items.sort(key=order)  # stable: a file's own tests keep their order
    unlisted = {
        _file(item)
        for item in items
        if "trained_app" in getattr(item, "fixturenames", ())
        and _file(item) not in TRAINED_APP_FILES
    }
    if unlisted:
        raise pytest.UsageError(
            f"test files using trained_app but not in TRAINED_APP_FILES (tests/conftest.py): "
            f"{', '.join(sorted(unlisted))}; add them there, so the app is trained once a run"
        )


@pytest.hookimpl(optionalhook=True)  # the hook is xdist's: absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile`, but the files of TRAINED_APP_FILES are one unit (xdist's
    `--dist loadgroup` does not group on pytest 9: xdist 3.8 renames a test by `item._nodeid`,
    which pytest 9 no longer reads). Units go out in collection order, as with loadfile."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class TrainedAppOnce(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return "trained_app" if file in TRAINED_APP_FILES else file

    return TrainedAppOnce(config, log)


# --- a small generated app, ingested and trained: shared by the slow tests -----------------------

#: The app every test of a trained champion on generator data shares (a few hundred subscribers).
APP_TOML = (
    '[store]\npath = "store"\n[synthetic]\nusers = 600\ndays = 120\n'
    "[optuna]\nn_trials = 2\n"
    # seed 1: the 2 trials sample small leaves, so the tiny app's model has signal (with the
    # default seed both trials ask for more samples per leaf than there are rows: a flat model)
    "[training]\nseed = 1\nmin_churners = 5\nmin_non_churners = 5\n"
    # the backtest tests rescore past days, the hold-out's among them, and check the realised
    # AUC against the hold-out's: the champion must be the time-split model, which never saw
    # them (a refit has trained on every day whose labels are complete), and the hold-out every
    # subscriber the backtest scores (labels_end leaves the validation fifth out of it)
    "refit = false\n"
    'valid_until = "holdout"\n'
)


@pytest.fixture(scope="session")
def trained_app(tmp_path_factory: pytest.TempPathFactory):
    """Settings of a small generated app (600 users, 120 days from 2026-01-05), ingested and
    trained (2 trials) in its own folder and MLflow registry; its version 1 is the champion."""
    from mlflow.tracking import MlflowClient

    from lapse import jobs
    from lapse.settings import Settings

    root = tmp_path_factory.mktemp("app")
    config = root / "lapse.toml"
    config.write_text(APP_TOML)
    settings = Settings.load(config)
    jobs.generate(settings, settings.store.path / "synthetic")
    jobs.ingest(settings, [settings.store.path / "synthetic" / "raw"])
    result = jobs.train(settings)
    if not result.gate.moved:  # a tiny app's model may not beat the CRM rule: serve it anyway
        name = settings.mlflow.registered_model
        MlflowClient().set_registered_model_alias(name, "champion", result.gate.version)
    return settings


@pytest.fixture(scope="session")
def rescored_app(trained_app, tmp_path_factory: pytest.TempPathFactory):
    """The trained app rescored (and pushed to a Braze emulator) at four past days: two and
    one week before the champion's hold-out cut-off, on it, and three weeks after it (whose
    horizon is not over by the data's end). Returns (settings, {day: RescoreOutcome}, hold-out
    cut-off). Scores files go to a folder of their own; the history goes to the store."""
    from datetime import date, timedelta

    from mlflow.tracking import MlflowClient
    from pydantic import SecretStr

    from lapse import jobs
    from serving.emulator import Emulator, EmulatorConfig
    from training.registry import champion_uri, model_info

    settings = trained_app
    info = model_info(settings.mlflow.tracking_uri, champion_uri(settings.mlflow.registered_model))
    run = MlflowClient().get_run(info.run_id)
    holdout = date.fromisoformat(run.data.params["holdout_cutoff"])
    days = [holdout - timedelta(days=14), holdout - timedelta(days=7), holdout]
    days.append(holdout + timedelta(days=21))
    out = tmp_path_factory.mktemp("rescored")
    outcomes = {}
    with Emulator(EmulatorConfig(api_keys=frozenset({"emu-key"}))) as braze:
        local = settings.model_copy(
            update={
                "braze": settings.braze.model_copy(
                    update={"url": braze.url, "api_key": SecretStr("emu-key")}
                ),
                "ledger": settings.ledger.model_copy(
                    update={"url": f"sqlite:///{(out / 'ledger.db').resolve()}"}
                ),
            }
        )
        for day in days:
            outcomes[day] = jobs.rescore(local, day, out=out / f"scores-{day}.parquet")
    return local, outcomes, holdout


@pytest.fixture(scope="session")
def dask_cluster():
    """One LocalCluster of two worker processes for the whole session (starting one costs
    seconds): the modules that test work on a cluster share it."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster
