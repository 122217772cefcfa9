"""One job function per command: the application layer every caller shares.

Each job takes the one ``Settings`` object and the command's arguments, reports long work through
``progress(stage, done, total)``, and returns a typed result; none prints. The CLI renders the
results (``lapse.render``); the BentoML service, the notebooks, schedulers and ``demo`` call the
same functions, so no caller holds application logic of its own.

The jobs live in one module per part of the flow (``store``: generate, ingest, features;
``modelling``: train; ``scoring``: rescore; ``braze``: sync and the emulator; ``monitoring``:
backtest; ``sample``: the notebooks' sample app and the demo). Each is imported when one of its
names is first used (``jobs.sync`` does not load LightGBM, scikit-learn or MLflow), so a command
starts in the time its own libraries take.
"""

# ruff: noqa: F401  (the TYPE_CHECKING block re-exports every job for type checkers)

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

Progress = Callable[[str, int, int], None]
#: Called by `demo` as each step ends: (step title, that step's result).
StepDone = Callable[[str, Any], None]

#: Every public name, and the module of this package that defines it.
_HOMES = {
    "store": (
        "FeaturesResult",
        "compact",
        "features",
        "generate",
        "ingest",
        "reprocess_quarantine",
        "synthetic_config",
    ),
    "modelling": ("IfDueOutcome", "train", "train_if_due", "training_snapshots", "truth_path"),
    "braze": ("SyncOutcome", "emulator", "profile_ids", "push", "sync"),
    "scoring": ("RescoreOutcome", "default_scores_path", "history_identity", "rescore"),
    "monitoring": ("BacktestOutcome", "backtest", "default_report_path"),
    "sample": (
        "DemoResult",
        "SAMPLE_MARK",
        "SampleApp",
        "ServiceAnswerError",
        "ServiceAnswers",
        "ask_service",
        "demo",
        "demo_settings",
        "sample_app",
        "sample_settings",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = ["Progress", "StepDone", *sorted(_HOME_OF)]


def __getattr__(name: str) -> Any:
    """``jobs.<name>``: the name from the module that defines it, imported on first use."""
    if name in _HOMES:  # a module of this package: ``jobs.modelling``
        return importlib.import_module(f"{__name__}.{name}")
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function (and monkeypatch sees a value)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def quiet(progress: Progress | None) -> Progress:
    """``progress`` itself, or a reporter that ignores every call."""
    return progress or (lambda stage, done, total: None)


def quiet_mlflow() -> None:
    """MLflow without telemetry, artifact progress bars or INFO logs (its and alembic's): the
    jobs that log runs report through ``progress``. Set only where the caller has not."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


if TYPE_CHECKING:  # what a type checker and an IDE see: every name, eagerly
    from lapse.jobs.braze import SyncOutcome, emulator, profile_ids, push, sync
    from lapse.jobs.modelling import (
        IfDueOutcome,
        train,
        train_if_due,
        training_snapshots,
        truth_path,
    )
    from lapse.jobs.monitoring import BacktestOutcome, backtest, default_report_path
    from lapse.jobs.sample import (
        SAMPLE_MARK,
        DemoResult,
        SampleApp,
        ServiceAnswerError,
        ServiceAnswers,
        ask_service,
        demo,
        demo_settings,
        sample_app,
        sample_settings,
    )
    from lapse.jobs.scoring import (
        RescoreOutcome,
        default_scores_path,
        history_identity,
        rescore,
    )
    from lapse.jobs.store import (
        FeaturesResult,
        compact,
        features,
        generate,
        ingest,
        reprocess_quarantine,
        synthetic_config,
    )
