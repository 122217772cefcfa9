"""Hyper-parameter search: Optuna TPE over LightGBM, pruned on its per-iteration validation AUC.

The study lives in an RDB storage (SQLite by default, PostgreSQL to share it between workers) and
is resumable: running again with the same study name continues until ``n_trials`` have finished.
Each trial is logged as a nested MLflow run when a parent run is active.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow
import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from optuna_integration import LightGBMPruningCallback

from base import LapseError, safe_url, sqlite_pragmas
from training.pipeline import classifier, fit_classifier
from training.settings import OptunaSettings, TrainingSettings

#: The metric LightGBM reports per iteration and the study maximises (same direction, see stack.md).
METRIC = "auc"
VALID_NAME = "valid_0"  # LightGBM's sklearn API names the first eval set so
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TuneConfig:
    """A search: where the study lives and its budget (``[optuna]``), its name, and the run's
    seed and early stopping (``[training]``)."""

    optuna: OptunaSettings
    study_name: str
    training: TrainingSettings = field(default_factory=TrainingSettings)
    #: Boosting rounds between reports to the study: each report is a database write.
    report_interval: int = 10


def pos_weights(y) -> tuple[float, ...]:
    """``scale_pos_weight`` choices for labels ``y``: none (1), or the square root of the
    non-churner to churner ratio (a small, imbalanced app's churners count more)."""
    y = np.asarray(y, dtype=int)
    churners = max(int(y.sum()), 1)
    ratio = (len(y) - churners) / churners
    return (1.0, round(float(np.sqrt(max(ratio, 1.0))), 2))


def max_child_samples(rows: int) -> int:
    """The largest ``min_child_samples`` worth trying on ``rows`` training rows: a leaf needs a
    few percent of a small app's rows, not a fixed 800 (over half the rows, no split is made)."""
    return int(min(800, max(20, rows // 8)))


def search_space(
    trial: optuna.Trial, weights: tuple[float, ...] = (1.0,), rows: int = 6400
) -> dict:
    """LightGBM parameters to search; n_estimators is left to early stopping. Regularisation a
    small, imbalanced app needs: few leaves (down to stumps, an additive model like the
    logistic baseline), samples per leaf up to an eighth of the ``rows``, L1 and L2, feature and
    row fractions, a slower learning rate, churners weighted up or not."""
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 2, 63, log=True),
        "min_child_samples": trial.suggest_int(
            "min_child_samples", 10, max_child_samples(rows), log=True
        ),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
    }
    if len(weights) > 1:
        params["scale_pos_weight"] = trial.suggest_categorical("scale_pos_weight", list(weights))
    return params


def first_trial(rows: int) -> dict:
    """The search's first point: shallow, slow, well-regularised trees, which hold up on a small
    app where a few random TPE start-up trials often do not (issue 12: 3 trials on 1,200 users
    lost to the logistic regression)."""
    return {
        "learning_rate": 0.03,
        "num_leaves": 4,
        "min_child_samples": int(min(max_child_samples(rows), max(10, rows // 100))),
        "colsample_bytree": 0.5,
        "subsample": 0.8,
        "reg_alpha": 0.01,
        "reg_lambda": 3.0,
        "scale_pos_weight": 1.0,
    }


def storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage for ``url``. SQLite waits for locks instead of failing at once, and runs in
    WAL mode without a sync per commit: every pruning report is a commit."""
    if not url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url)
    rdb = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    rdb.engine.dispose()
    sqlite_pragmas(rdb.engine)
    return rdb


@dataclass(frozen=True)
class TuneResult:
    """The best trial of a finished search."""

    study_name: str
    best_params: dict
    best_value: float
    best_iteration: int
    finished: int
    pruned: int


def open_study(config: TuneConfig, rdb: optuna.storages.RDBStorage) -> optuna.Study:
    """Create the study, or load it to resume."""
    return optuna.create_study(
        study_name=config.study_name,
        storage=rdb,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.training.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20),
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def tune(
    Xt: pd.DataFrame,
    y,
    Xvt: pd.DataFrame,
    yv,
    config: TuneConfig,
    progress: Progress | None = None,
) -> TuneResult:
    """Search on preprocessed training rows, scoring validation AUC; returns the best trial.

    Trials already finished in the storage count toward ``n_trials`` (resume after a stop).
    """
    rdb = storage(config.optuna.storage)
    try:
        return _search(Xt, y, Xvt, yv, config, progress, open_study(config, rdb))
    finally:
        rdb.engine.dispose()  # pooled connections would otherwise outlive the search


def _search(Xt, y, Xvt, yv, config: TuneConfig, progress, study: optuna.Study) -> TuneResult:
    done = finished_trials(study)
    weights = pos_weights(y)
    if not study.get_trials(deepcopy=False):  # a new study starts from a safe point
        study.enqueue_trial(first_trial(len(y)))
    if progress:
        progress("tune", min(done, config.optuna.n_trials), config.optuna.n_trials)

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, weights, len(y))
        parent = mlflow.active_run()
        run = (
            mlflow.start_run(
                run_name=f"trial-{trial.number}",
                nested=True,
                experiment_id=parent.info.experiment_id,
            )
            if parent
            else None
        )
        try:
            if run:
                mlflow.log_params(params)
            clf = fit_classifier(
                classifier(params, config.training.seed),
                Xt,
                y,
                Xvt,
                yv,
                callbacks=[
                    LightGBMPruningCallback(
                        trial, METRIC, valid_name=VALID_NAME, report_interval=config.report_interval
                    )
                ],
                early_stopping_rounds=config.training.early_stopping_rounds,
            )
            value = float(clf.best_score_[VALID_NAME][METRIC])
            trial.set_user_attr("best_iteration", int(clf.best_iteration_))
            if run:
                mlflow.log_metrics({"valid_auc": value, "best_iteration": clf.best_iteration_})
                mlflow.set_tag("state", "complete")
            return value
        except optuna.TrialPruned:
            if run:
                mlflow.set_tag("state", "pruned")
            raise
        finally:
            if run:
                mlflow.end_run()

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress:
            n = config.optuna.n_trials
            progress("tune", min(finished_trials(study), n), n)

    remaining = config.optuna.n_trials - done
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=config.optuna.timeout_s,
            callbacks=[report],
            gc_after_trial=False,
        )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise TuningError(
            f"study {config.study_name!r} in {safe_url(config.optuna.storage)} has no completed "
            f"trial after {finished_trials(study)} finished; raise --trials or --timeout"
        )
    best = study.best_trial
    return TuneResult(
        study_name=config.study_name,
        best_params=dict(best.params),
        best_value=float(best.value),
        best_iteration=int(best.user_attrs["best_iteration"]),
        finished=finished_trials(study),
        pruned=len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
    )


class TuningError(LapseError, RuntimeError):
    """The search ended without a usable trial."""
