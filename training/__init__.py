"""Training: time splits, the Optuna x LightGBM pipeline, evaluation, the MLflow registry.

From a notebook: ``lapse.jobs.train(Settings.load(), trials=10)``, or
``training.train_snapshots(frame, TrainConfig())`` on snapshots already in memory. The names
are imported on first use, so ``import training.settings`` (the CLI's start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from base import lazy_names

if TYPE_CHECKING:
    from training.settings import TrainConfig
    from training.train import TrainResult, train_snapshots, train_store

_HOMES = {
    "TrainConfig": "training.settings",
    "TrainResult": "training.train",
    "train_snapshots": "training.train",
    "train_store": "training.train",
}
__all__ = ["TrainConfig", "TrainResult", "train_snapshots", "train_store"]


__getattr__ = lazy_names(__name__, _HOMES)
