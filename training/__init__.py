"""Training: time splits, the Optuna x LightGBM pipeline, evaluation, MLflow registry.

From a notebook: ``training.train(Settings.load(), n_trials=10)`` or
``training.train_snapshots(frame, TrainConfig(...))``.
"""

from training.train import TrainConfig, TrainResult, train, train_snapshots

__all__ = ["TrainConfig", "TrainResult", "train", "train_snapshots"]
