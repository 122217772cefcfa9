"""The jobs that make models: ``train`` (and ``--if-due``) and the snapshots it learns from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from features.cluster import workplace
from lapse.jobs import Progress, quiet_mlflow
from lapse.settings import Settings
from serving.drift import newest_drift
from serving.due import DueDecision, champion_of, newest_backtest, retrain_due
from training.settings import TrainConfig
from training.train import TrainResult, default_truth_path, load_truth, train_store
from training.train import training_snapshots as store_training_snapshots

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
    quiet_mlflow()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
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
