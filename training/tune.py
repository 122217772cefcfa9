"""Hyper-parameter search: Optuna TPE over LightGBM, pruned on its per-iteration validation AUC.

The study lives in an RDB storage (SQLite by default, PostgreSQL to share it between workers) and
is resumable: running again with the same study name continues until ``n_trials`` have finished.
Each trial is logged as a nested MLflow run when a parent run is active.

The trial kept is not simply the best on validation: among the completed trials whose validation
ROC AUC is within ``optuna.selection_se`` standard errors of the best, the one with the fewest
leaves (``complexity``), and among those the best. On a small app the best of a few trials a few
thousandths apart is a coin toss (issue 12). The standard error is the best trial's own, on its
validation scores with each subscriber one cluster (validation spans several cut-offs, so rows
are not independent: ``clustered_auc_standard_error``); a trial stored without it (a study begun
before) falls back to Hanley-McNeil on the validation churners and non-churners.
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
from training.evaluate import (
    CLUSTERED_SE,
    auc_standard_error,
    clustered_auc_standard_error,
    subscriber_clusters,
)
from training.pipeline import classifier, fit_classifier
from training.settings import OptunaSettings, TrainingSettings

#: The metric LightGBM reports per iteration and the study maximises (same direction, see stack.md).
METRIC = "auc"
VALID_NAME = "valid_0"  # LightGBM's sklearn API names the first eval set so
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Trial attribute: the standard error of its validation ROC AUC, clustered by subscriber.
SE_ATTR = "valid_auc_se"
HANLEY_MCNEIL = "hanley_mcneil"

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
    small, imbalanced app needs: few leaves (down to 4, the first trial's), samples per leaf up
    to an eighth of the ``rows``, L1 and L2, feature and row fractions, a slower learning rate,
    churners weighted up or not. No stumps: the one-standard-error rule keeps the fewest leaves
    within noise of the best, and twice a 2-leaf trial (no interactions) reached that band by
    chance and cost 0.008 and 0.015 ``oracle_ratio`` (docs/benchmarks.md, "No stumps")."""
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
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


def complexity(params: dict) -> int:
    """A trial's complexity for the one-standard-error rule: its leaves per tree (LightGBM's
    default 31 if the trial has none). One axis, as in the rule's classic uses (tree size in
    CART, the penalty in glmnet): a lexicographic order over several parameters, tried first,
    broke a tie in leaves by samples per leaf against a trial with 27x the L2 and a slower
    learning rate, neither clearly the simpler (docs/benchmarks.md, issue 12)."""
    return int(params.get("num_leaves", 31))


@dataclass(frozen=True)
class Selection:
    """Which trial was kept and why (logged to the run as ``selection_*`` params and a tag)."""

    #: "one_se": the fewest leaves within ``width`` standard errors; "best": the best value.
    rule: str
    width: float
    best_trial: int
    best_value: float
    #: Standard error of the best validation AUC (``standard_error_method``); NaN when the
    #: rule is off.
    standard_error: float
    #: Lowest validation AUC a trial needed to be a candidate.
    threshold: float
    candidates: tuple[int, ...]
    chosen_trial: int
    #: Which standard error: CLUSTERED_SE (the best trial's, by subscriber), HANLEY_MCNEIL
    #: (rows taken as independent, for a trial stored without it) or "none" (rule off).
    standard_error_method: str = CLUSTERED_SE

    def reason(self) -> str:
        """One sentence for the run: the trial kept and why."""
        if self.rule == "best":
            return f"trial {self.chosen_trial}: best validation ROC AUC {self.best_value:.4f}"
        if self.chosen_trial == self.best_trial:
            return (
                f"trial {self.chosen_trial}: best validation ROC AUC {self.best_value:.4f}; none "
                f"of the {len(self.candidates) - 1} other trial(s) within {self.width:g} SE "
                f"({self.standard_error:.4f}) of it has fewer leaves"
            )
        return (
            f"trial {self.chosen_trial}: the fewest leaves of the {len(self.candidates)} "
            f"trials within {self.width:g} SE ({self.standard_error:.4f}) of the best validation "
            f"ROC AUC (trial {self.best_trial}, {self.best_value:.4f}; at least "
            f"{self.threshold:.4f} needed)"
        )


def select_trial(
    trials: list[optuna.trial.FrozenTrial], positives: int, negatives: int, width: float = 1.0
) -> tuple[optuna.trial.FrozenTrial, Selection]:
    """The one-standard-error rule: among the completed ``trials`` whose validation AUC is within
    ``width`` standard errors of the best, the one of least ``complexity`` (fewest leaves; ties:
    higher AUC, then the earlier trial). The standard error is the best trial's ``SE_ATTR``
    (clustered by subscriber), or without it Hanley-McNeil's for its AUC on ``positives``
    churners and ``negatives`` non-churners. ``width`` 0, or an undefined standard error, keeps
    the best trial (the first of equal best values, as Optuna's ``best_trial``)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        raise ValueError("select_trial needs at least one completed trial with a value")
    best = max(complete, key=lambda t: (t.value, -t.number))
    stored = best.user_attrs.get(SE_ATTR)
    if width <= 0:
        se, method = float("nan"), "none"
    elif stored is not None and np.isfinite(stored):
        se, method = float(stored), CLUSTERED_SE
    else:
        se, method = auc_standard_error(best.value, positives, negatives), HANLEY_MCNEIL
    if not np.isfinite(se):
        chosen, threshold, candidates, rule = best, best.value, [best], "best"
    else:
        threshold = best.value - width * se
        candidates = [t for t in complete if t.value >= threshold]
        chosen = min(candidates, key=lambda t: (complexity(t.params), -t.value, t.number))
        rule = "one_se"
    return chosen, Selection(
        rule=rule,
        width=float(width),
        best_trial=best.number,
        best_value=float(best.value),
        standard_error=float(se),
        threshold=float(threshold),
        candidates=tuple(sorted(t.number for t in candidates)),
        chosen_trial=chosen.number,
        standard_error_method=method,
    )


@dataclass(frozen=True)
class TuneResult:
    """The trial a finished search keeps (``select_trial``): its parameters, validation AUC and
    early-stopping iteration (named ``best_*``: the best by the selection rule), and why."""

    study_name: str
    best_params: dict
    best_value: float
    best_iteration: int
    finished: int
    pruned: int
    selection: Selection


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


def check_workers(optuna_settings: OptunaSettings) -> None:
    """Refuse several trial processes on a SQLite study: its file lock serialises them, and
    concurrent writers fail with "database is locked" under load."""
    n = optuna_settings.workers
    if n > 1 and optuna_settings.storage.lower().startswith("sqlite"):
        raise TuningError(
            f"optuna.workers = {n} (--workers) needs a study storage several processes can "
            f"share; {safe_url(optuna_settings.storage)} is SQLite, which is not safe for that. "
            "Set optuna.storage to PostgreSQL (postgresql+psycopg://user@host/db), or use "
            "--workers 1"
        )


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
    With ``optuna.workers`` > 1, that many processes run trials on the one study side by side
    (each asks the shared storage for its next trial), until ``n_trials`` have finished.
    """
    check_workers(config.optuna)
    rdb = storage(config.optuna.storage)
    try:
        study = open_study(config, rdb)
        if not study.get_trials(deepcopy=False):  # a new study starts from a safe point
            study.enqueue_trial(first_trial(len(y)))
        if config.optuna.workers > 1:
            _in_processes(Xt, y, Xvt, yv, config, progress, study)
        return _search(Xt, y, Xvt, yv, config, progress, study)
    finally:
        rdb.engine.dispose()  # pooled connections would otherwise outlive the search


def _parent_run() -> tuple[str, str, str] | None:
    """(tracking URI, experiment id, run id) of the active MLflow run, for trials elsewhere."""
    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_tracking_uri(), run.info.experiment_id, run.info.run_id


def _in_processes(Xt, y, Xvt, yv, config: TuneConfig, progress, study: optuna.Study) -> None:
    """Run the study's remaining trials in ``optuna.workers`` processes (spawned: no state of
    this one is shared but the storage), reporting progress as trials finish."""
    import multiprocessing
    import time

    remaining = config.optuna.n_trials - finished_trials(study)
    if remaining <= 0:
        return
    context = multiprocessing.get_context("spawn")
    parent = _parent_run()
    procs = [
        context.Process(target=_worker, args=(Xt, y, Xvt, yv, config, parent), daemon=True)
        for _ in range(config.optuna.workers)
    ]
    for proc in procs:
        proc.start()
    n = config.optuna.n_trials
    try:
        while any(proc.is_alive() for proc in procs):
            if progress:
                progress("tune", min(finished_trials(study), n), n)
            time.sleep(1.0)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
    failed = [proc.exitcode for proc in procs if proc.exitcode]
    if failed:
        raise TuningError(
            f"{len(failed)} of {len(procs)} Optuna worker processes failed (exit codes "
            f"{failed}); the study {config.study_name!r} keeps their finished trials"
        )


def _worker(Xt, y, Xvt, yv, config: TuneConfig, parent) -> None:
    """One trial process: load the shared study and run trials until ``n_trials`` are done."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if parent is not None:
        mlflow.set_tracking_uri(parent[0])
    rdb = storage(config.optuna.storage)
    try:
        study = open_study(config, rdb)
        stop = optuna.study.MaxTrialsCallback(config.optuna.n_trials, states=FINISHED)
        study.optimize(
            _objective(Xt, y, Xvt, yv, config, parent),
            n_trials=config.optuna.n_trials,
            timeout=config.optuna.timeout_s,
            callbacks=[stop],
            gc_after_trial=False,
        )
    finally:
        rdb.engine.dispose()


def _objective(Xt, y, Xvt, yv, config: TuneConfig, parent: tuple[str, str, str] | None):
    """The study's objective: fit LightGBM with the trial's parameters, pruned on validation
    AUC; each trial a nested MLflow run under ``parent`` (tracking URI, experiment, run)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    weights = pos_weights(y)
    rows = yv.index if isinstance(yv, pd.Series) else pd.RangeIndex(len(yv))
    clusters = subscriber_clusters(rows)

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, weights, len(y))
        run = (
            mlflow.start_run(
                run_name=f"trial-{trial.number}",
                nested=True,
                experiment_id=parent[1],
                tags={MLFLOW_PARENT_RUN_ID: parent[2]},
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
                early_stopping_metric=config.training.early_stopping_metric,
            )
            value = float(clf.best_score_[VALID_NAME][METRIC])
            trial.set_user_attr("best_iteration", int(clf.best_iteration_))
            # the noise of this value, for the one-SE rule: its scores at the kept iteration
            se = clustered_auc_standard_error(yv, clf.predict_proba(Xvt)[:, 1], clusters)
            trial.set_user_attr(SE_ATTR, se if np.isfinite(se) else None)
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

    return objective


def _search(Xt, y, Xvt, yv, config: TuneConfig, progress, study: optuna.Study) -> TuneResult:
    done = finished_trials(study)
    if progress:
        progress("tune", min(done, config.optuna.n_trials), config.optuna.n_trials)
    objective = _objective(Xt, y, Xvt, yv, config, _parent_run())

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress:
            n = config.optuna.n_trials
            progress("tune", min(finished_trials(study), n), n)

    n = config.optuna.n_trials
    remaining = n - done
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=config.optuna.timeout_s,
            # other machines may run trials of the same study: stop at the study's total
            callbacks=[report, optuna.study.MaxTrialsCallback(n, states=FINISHED)],
            gc_after_trial=False,
        )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise TuningError(
            f"study {config.study_name!r} in {safe_url(config.optuna.storage)} has no completed "
            f"trial after {finished_trials(study)} finished; raise --trials or --timeout"
        )
    positives = int(np.sum(yv))
    chosen, selection = select_trial(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
        positives,
        len(yv) - positives,
        config.optuna.selection_se,
    )
    return TuneResult(
        study_name=config.study_name,
        best_params=dict(chosen.params),
        best_value=float(chosen.value),
        best_iteration=int(chosen.user_attrs["best_iteration"]),
        finished=finished_trials(study),
        pruned=len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        selection=selection,
    )


class TuningError(LapseError, RuntimeError):
    """The search ended without a usable trial."""
