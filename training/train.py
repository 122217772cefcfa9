"""Orchestration: snapshots -> time split -> Optuna x LightGBM -> calibrate -> evaluate -> register.

``train_store(store, config)`` is what ``lapse train`` runs (through ``lapse.jobs.train``);
``train_snapshots(frame, config)`` does the same on a snapshot frame already in memory (a
notebook, a test). Everything lands in one MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from base import LapseError, safe_url
from features import schema
from features.build import feature_registry
from features.cluster import Workplace
from features.from_store import (
    StoreSnapshots,
    check_store,
    plan_partitions,
    store_app_events,
    store_snapshots,
)
from features.ingest.store import events_span
from features.registry import Feature
from features.settings import FeatureConfig
from training import plots
from training.evaluate import (
    CLUSTERED_SE,
    RuleBaseline,
    auc_standard_error,
    bucket_table,
    clustered_auc_standard_error,
    join_truth,
    oracle_ratio,
    rule_columns,
    score_metrics,
    subscriber_clusters,
    tuned_logreg,
)
from training.pipeline import ChurnModel, classifier, feature_types, fit_classifier, preprocessor
from training.reasons import group_contributions, reason_table, top_reasons
from training.registry import GateDecision, experiment_id, publish
from training.settings import TrainConfig, TrainingSettings
from training.splits import (
    TimeSplit,
    check_sufficient,
    newest_cutoff,
    refit_rows,
    split_rows,
    time_split,
    used_split,
)
from training.tune import Selection, TuneConfig, TuneResult, tune

Progress = Callable[[str, int, int], None]
#: Hold-out rows used for the contribution plot and reason shares: LightGBM's pred_contrib
#: (TreeSHAP) costs milliseconds per row, about 100x a plain prediction.
EXPLAIN_ROWS = 2_000
VERSIONED = ("lightgbm", "optuna", "mlflow", "scikit-learn", "feature-engine", "pandas", "numpy")


class TrainingInputError(LapseError, ValueError):
    """The store or the ground-truth file cannot feed a training run."""


@dataclass
class TrainResult:
    """What a run produced: the model, its hold-out numbers and the gate's decision."""

    run_id: str
    model: ChurnModel
    metrics: dict[str, float]
    buckets: pd.DataFrame
    reasons: pd.DataFrame
    gate: GateDecision
    split: TimeSplit
    rows: dict[str, int]
    tuning: TuneResult
    fingerprint: str
    oracle_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    #: Features constant or empty on the training rows, left out of every model.
    dropped_features: tuple[str, ...] = ()
    #: Warnings of the run (also MLflow tags ``warning.*``), e.g. a validation/hold-out gap.
    warnings: tuple[str, ...] = ()
    #: Snapshot rows built and the share kept (training.max_rows), and where they were built.
    snapshot_rows: int = 0
    sample_fraction: float = 1.0
    partitions: int = 1
    ran_on: str = "in-process"
    dashboard: str | None = None
    #: The time-split model whose hold-out numbers these are, when ``model`` is its refit on
    #: every labelled cut-off (training.refit); otherwise ``model`` itself.
    evaluation_model: ChurnModel | None = None
    #: Rows and cut-offs of the refit (empty without one).
    refit: dict[str, object] = field(default_factory=dict)


def fingerprint(frame: pd.DataFrame) -> str:
    """A hash of the labelled snapshot frame (index, columns and values): same data, same hash."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def study_name(horizon: int, training: TrainingSettings, fp: str) -> str:
    """The Optuna study of this data, horizon, seed, early-stopping rule and validation rows.

    A trial's score is validation ROC AUC at the round early stopping kept, so trials stopped by
    another metric or patience, or scored on other validation rows, are not comparable: a study
    is resumed only under the same rule and rows (a study begun under AUC stopping would
    otherwise count toward ``n_trials`` after a switch to log loss, and its trial be kept with
    no new one run)."""
    t = training
    rule = f"{t.early_stopping_metric}-r{t.early_stopping_rounds}"
    rows = f"v{t.valid_share:g}x{t.valid_cutoffs}c{t.min_churners}-{t.valid_until}"
    if t.valid_share <= 0:  # the time split alone: min_churners and valid_until pick no rows
        rows = f"v0x{t.valid_cutoffs}"
    return f"lapse-h{horizon}-s{t.seed}-{fp}-{rule}-{rows}"


def data_cutoffs(
    first_ts: pd.Timestamp, last_ts: pd.Timestamp, first_cutoff_days: int, every_days: int
) -> list[pd.Timestamp]:
    """Cut-offs at midnight UTC from ``first_cutoff_days`` after the first event, every
    ``every_days``, up to the last event (labels decide later which are complete)."""
    start = pd.Timestamp(first_ts).tz_convert("UTC").normalize() + timedelta(days=first_cutoff_days)
    end = pd.Timestamp(last_ts).tz_convert("UTC")
    out = []
    when = start
    while when <= end:
        out.append(when)
        when += timedelta(days=every_days)
    return out


def _experiment(config: TrainConfig) -> str:
    m = config.mlflow
    return experiment_id(m.tracking_uri, m.experiment, m.artifact_location)


def split_xy(part: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """A part of the snapshots as (features, 0/1 churn labels)."""
    return part.drop(columns=schema.CHURNED), part[schema.CHURNED].astype(bool).astype(int)


def constant_features(X: pd.DataFrame) -> list[str]:
    """Columns with at most one distinct value (missing ignored) on ``X``: constant or empty on
    the training rows, so no model can learn from them (an app without trials has an empty
    ``trial_or_offer_days_left``)."""
    return [c for c in X.columns if X[c].nunique(dropna=True) <= 1]


#: A validation-to-hold-out ROC AUC gap above this many standard errors is a warning.
GAP_Z = 2.0


class TrainingFailedError(LapseError, RuntimeError):
    """A run failed after its data checks; the MLflow run is marked FAILED with the reason."""


def train_snapshots(
    snapshots: pd.DataFrame,
    config: TrainConfig,
    truth: pd.DataFrame | None = None,
    progress: Progress | None = None,
    registry: Mapping[str, Feature] | None = None,
    sample: Mapping[str, float | int] | None = None,
) -> TrainResult:
    """Split, tune, fit, calibrate, evaluate against baselines (and the oracle when ``truth`` is
    given), log everything to one MLflow run and register the model behind the champion gate.

    ``snapshots`` were built with ``config.definition`` (the model keeps that definition for
    scoring); ``registry`` describes their columns (kinds, reason groups; default: that
    definition's registry). A failure once the run has started marks it FAILED (tag
    ``failure_reason``) and raises TrainingFailedError; no model version is left registered.
    ``sample`` (rows built, rows kept, the fraction) is logged as params when snapshots were
    sampled.
    """
    if config.features != config.definition:
        config = config.model_copy(update={"features": config.definition})
    t = config.training
    horizon = config.labels.horizon_days
    registry = feature_registry(config.features) if registry is None else registry
    labelled = snapshots[snapshots[schema.CHURNED].notna()]
    split, parts = run_split(labelled, t, horizon)
    (X, y), (Xv, yv), (Xh, yh) = (split_xy(parts[n]) for n in ("train", "valid", "holdout"))
    check_sufficient(
        {"train": y, "validation": yv, "hold-out": yh},
        t.min_churners,
        t.min_non_churners,
        notes=_holdout_note(t, split),
    )
    dropped = constant_features(X)
    X, Xv, Xh = (frame.drop(columns=dropped) for frame in (X, Xv, Xh))
    fp = fingerprint(labelled)
    rows = {"train": len(y), "validation": len(yv), "holdout": len(yh)}
    experiment_id = _experiment(config)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{fp[:8]}")
    try:
        _log_inputs(config, split, rows, fp, labelled)
        mlflow.log_param("dropped_features", ",".join(dropped) or "none")
        if sample:
            mlflow.log_params({f"snapshot_{k}": v for k, v in sample.items()})
        # drift is measured against the newest population the data holds, labelled or not
        population = newest_cutoff(snapshots).drop(columns=[schema.CHURNED, *dropped])
        result = _fit_and_evaluate(
            config,
            registry,
            split,
            rows,
            fp,
            X,
            y,
            Xv,
            yv,
            Xh,
            yh,
            truth,
            progress,
            run,
            population=population,
        )
        if t.refit:
            parts = refit_rows(labelled, split, t.valid_share, t.seed, t.min_churners)
            result = _refit_and_publish(
                config, registry, parts, dropped, result, Xh, yh, population
            )
        else:
            result.gate = _publish(config, result.model, Xh, yh, result.metrics)
        if progress:
            progress("evaluate", 3, 3)
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        mlflow.set_tag("failure_reason", reason)
        mlflow.end_run(status="FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")
        if isinstance(exc, LapseError) or not isinstance(exc, Exception):
            raise
        raise TrainingFailedError(
            f"training failed ({reason}); MLflow run {run.info.run_id} is marked FAILED and no "
            "model was registered"
        ) from exc
    mlflow.end_run()
    result.dropped_features = tuple(dropped)
    return result


def run_split(
    labelled: pd.DataFrame, t: TrainingSettings, horizon: int
) -> tuple[TimeSplit, dict[str, pd.DataFrame]]:
    """The time split a run makes of ``labelled`` snapshot rows (with the cut-offs it used) and
    its training, validation and hold-out rows: one place, for the run and the benchmarks."""
    cutoffs = labelled.index.get_level_values(schema.AS_OF).unique()
    split = time_split(cutoffs, horizon, t.valid_cutoffs, t.valid_reach)
    parts = split_rows(labelled, split, t.valid_share, t.seed, t.min_churners, t.valid_reach)
    return used_split(split, parts), parts


def _holdout_note(t: TrainingSettings, split: TimeSplit) -> dict[str, str]:
    """What the hold-out holds when it is not every subscriber at its cut-off, for a
    too-few-churners error: with validation at the labels' end its subscribers are left out."""
    if t.valid_reach != "labels_end":
        return {}
    return {
        "hold-out": f"at {split.holdout.date()}, without the {t.valid_share:g} share of "
        "subscribers validated on (training.valid_until = 'labels_end')"
    }


def _fit_and_evaluate(
    config, registry, split, rows, fp, X, y, Xv, yv, Xh, yh, truth, progress, run, *, population
) -> TrainResult:
    """Inside the active run: tune, fit, calibrate and evaluate (publishing comes after)."""
    clock = {"start": time.perf_counter()}
    t = config.training
    horizon = config.labels.horizon_days
    pre = preprocessor(feature_types(X, registry)).fit(X, y)
    Xt, Xvt = pre.transform(X), pre.transform(Xv)
    study = study_name(horizon, t, fp)
    tuning = tune(Xt, y, Xvt, yv, TuneConfig(config.optuna, study, t), progress)
    clock["tuned"] = time.perf_counter()
    mlflow.log_params({f"best_{k}": v for k, v in tuning.best_params.items()})
    _log_selection(tuning.selection)
    mlflow.log_metrics(
        {
            "valid_roc_auc": tuning.best_value,
            "best_iteration": tuning.best_iteration,
            "trials_finished": tuning.finished,
            "trials_pruned": tuning.pruned,
        }
    )
    clf = fit_classifier(
        classifier(tuning.best_params, t.seed),
        Xt,
        y,
        Xvt,
        yv,
        early_stopping_rounds=t.early_stopping_rounds,
        early_stopping_metric=t.early_stopping_metric,
    )
    model = ChurnModel(
        tuning.best_params,
        t.seed,
        config.buckets.policy(),
        t.early_stopping_rounds,
        config.features,
        t.early_stopping_metric,
    ).assemble(pre, clf, Xv, yv, registry, X_population=population)
    mlflow.log_param("calibration", model.calibration_)
    if progress:
        progress("evaluate", 0, 3)
    metrics, scores, oracle_rows = _evaluate(model, X, y, Xv, yv, Xh, yh, truth, t.seed, registry)
    warnings = _gap_warnings(metrics, config.training.valid_reach)
    mlflow.log_metrics(metrics)
    # the standard error behind valid_final_roc_auc_se, holdout_roc_auc_se and the gap's
    mlflow.log_param("roc_auc_se_method", CLUSTERED_SE)
    if warnings:
        mlflow.set_tag("warning.validation_gap", " ".join(warnings))
    buckets = bucket_table(
        yh,
        scores["model"],
        model.buckets(scores["model"]),
        list(model.bucket_policy_.names),
    )
    mlflow.log_text(buckets.to_csv(), "holdout_buckets.csv")
    if progress:
        progress("evaluate", 1, 3)
    sample = Xh.sample(n=min(len(Xh), EXPLAIN_ROWS), random_state=t.seed)
    contributions = model.contributions(sample)
    reasons = reason_table(model.features_, model.reason_groups_)
    top = top_reasons(group_contributions(contributions, reasons))
    shares = top.map(lambda r: r[0] if r else "none").value_counts(normalize=True)
    mlflow.log_text(reasons.to_csv(index=False), "reason_groups.csv")
    mlflow.log_text(shares.to_csv(), "holdout_top_reason_shares.csv")
    for name, figure in plots.all_plots(yh.to_numpy(), scores, model, Xh, contributions).items():
        mlflow.log_figure(figure, f"plots/{name}")
    if progress:
        progress("evaluate", 2, 3)
    clock["end"] = time.perf_counter()
    seconds = {
        "tuning": clock["tuned"] - clock["start"],
        "total": clock["end"] - clock["start"],
    }
    mlflow.log_metrics({f"seconds_{k}": v for k, v in seconds.items()})
    return TrainResult(
        run_id=run.info.run_id,
        model=model,
        metrics=metrics,
        buckets=buckets,
        reasons=reasons,
        gate=None,  # set by the publishing step
        split=split,
        rows=rows,
        tuning=tuning,
        fingerprint=fp,
        oracle_rows=oracle_rows,
        seconds=seconds,
        warnings=tuple(warnings),
    )


def _log_selection(selection: Selection) -> None:
    """Which trial the run kept and why: params ``selection_*``, the tag ``tuning.selection``
    (one sentence) and the best trial's validation AUC next to the kept one's."""
    mlflow.log_params(
        {
            "selection_rule": selection.rule,
            "selection_se": selection.width,
            "selection_se_method": selection.standard_error_method,
            "selection_trial": selection.chosen_trial,
            "selection_best_trial": selection.best_trial,
            "selection_candidates": ",".join(map(str, selection.candidates)),
        }
    )
    metrics = {
        "valid_roc_auc_best_trial": selection.best_value,
        "selection_threshold": selection.threshold,
    }
    if np.isfinite(selection.standard_error):
        metrics["valid_roc_auc_se"] = selection.standard_error
    mlflow.log_metrics(metrics)
    mlflow.set_tag("tuning.selection", selection.reason())


def _log_served(model: ChurnModel) -> None:
    """Artifacts of the model that will be registered: its drift reference and bucket bounds."""
    mlflow.log_text(model.drift_reference_, "drift_reference.json")
    fitted = model.bucket_policy_
    mlflow.log_dict(
        {"bounds": [list(c) for c in fitted.cuts], "rest": fitted.rest}, "bucket_policy.json"
    )


def _publish(config, model, Xh, yh, metrics, evaluation=None) -> GateDecision:
    """Register ``model`` behind the champion gate, whose floor is the CRM rule's hold-out
    metric (``evaluation``: the time-split model the gate compares when ``model`` is a refit)."""
    _log_served(model)
    metric = config.training.gate_metric
    rule = metrics.get(metric.replace("holdout_", "baseline_rule_", 1))
    return publish(
        model, Xh, yh, config.mlflow.registered_model, metric, floor=rule, evaluation=evaluation
    )


def _refit_and_publish(config, registry, parts, dropped, result, Xh, yh, population) -> TrainResult:
    """Fit the chosen parameters again on the rows of every cut-off with complete labels
    (``refit_rows``), log what it was fitted on, and register it; the gate compares the
    time-split model."""
    t = config.training
    (X, y), (Xs, ys), (Xc, yc) = (
        (frame.drop(columns=dropped), labels)
        for frame, labels in (split_xy(parts[n]) for n in ("train", "stop", "calibrate"))
    )
    pre = preprocessor(feature_types(X, registry)).fit(X, y)
    clf = fit_classifier(
        classifier(result.tuning.best_params, t.seed),
        pre.transform(X),
        y,
        pre.transform(Xs),
        ys,
        early_stopping_rounds=t.early_stopping_rounds,
        early_stopping_metric=t.early_stopping_metric,
    )
    refit = ChurnModel(
        result.tuning.best_params,
        t.seed,
        config.buckets.policy(),
        t.early_stopping_rounds,
        config.features,
        t.early_stopping_metric,
    ).assemble(pre, clf, Xc, yc, registry, X_population=population)
    cutoffs = sorted(set(X.index.get_level_values(schema.AS_OF)))
    calibrated_on = sorted(set(Xc.index.get_level_values(schema.AS_OF)))
    info = {
        "rows_train": len(y),
        "rows_stop": len(ys),
        "rows_calibrate": len(yc),
        "cutoffs": f"{cutoffs[0].date()}..{cutoffs[-1].date()} ({len(cutoffs)})",
        "calibrated_on": ",".join(str(c.date()) for c in calibrated_on),
        "calibration": refit.calibration_,
        "best_iteration": int(clf.best_iteration_ or clf.n_estimators),
    }
    mlflow.log_params({f"refit_{k}": v for k, v in info.items()})
    stop = score_metrics(ys, refit.predict_raw(Xs), "refit_stop")
    mlflow.log_metrics({k: stop[k] for k in ("refit_stop_roc_auc", "refit_stop_pr_auc")})
    result.gate = _publish(config, refit, Xh, yh, result.metrics, evaluation=result.model)
    result.evaluation_model, result.model, result.refit = result.model, refit, info
    return result


def _auc_standard_errors(yv, pv, yh, ph, metrics) -> dict[str, float]:
    """Standard errors of the validation and hold-out ROC AUC with each subscriber one cluster
    (validation spans several cut-offs, so one subscriber has several rows there), and, for
    comparison, the gap's standard error with rows taken as independent (Hanley-McNeil)."""
    out = {
        name: clustered_auc_standard_error(t, p, subscriber_clusters(t.index))
        for name, t, p in (("valid_final_roc_auc_se", yv, pv), ("holdout_roc_auc_se", yh, ph))
    }
    counts = [(int(np.sum(t)), int(len(t) - np.sum(t))) for t in (yv, yh)]
    out["valid_holdout_gap_se_hanley_mcneil"] = float(
        np.hypot(
            auc_standard_error(metrics["valid_final_roc_auc"], *counts[0]),
            auc_standard_error(metrics["holdout_roc_auc"], *counts[1]),
        )
    )
    return out


def _gap_warnings(metrics: dict[str, float], valid_until: str = "labels_end") -> list[str]:
    """A warning when validation and hold-out ROC AUC differ by more than sampling noise:
    GAP_Z standard errors of the difference of two estimates taken as independent, each
    clustered by subscriber (``valid_final_roc_auc_se``, ``holdout_roc_auc_se``); it names the
    likely cause, given where validation was allowed to reach (``valid_until``)."""
    valid, hold = metrics.get("valid_final_roc_auc"), metrics.get("holdout_roc_auc")
    if valid is None or hold is None:
        return []
    se = np.hypot(
        metrics.get("valid_final_roc_auc_se", np.nan), metrics.get("holdout_roc_auc_se", np.nan)
    )
    metrics["valid_holdout_gap_roc_auc"] = valid - hold
    metrics["valid_holdout_gap_se"] = float(se)
    if np.isfinite(se) and abs(valid - hold) > GAP_Z * se:
        if valid > hold:
            why = "leakage into validation, or drift"
        elif valid_until == "holdout":
            why = (
                "its rows are harder to rank: histories cut short by the data's start at early "
                "cut-offs (training.valid_until = 'labels_end' validates nearer the hold-out), "
                "or drift"
            )
        else:
            why = "its rows are harder to rank, or drift"
        return [
            f"validation ROC AUC {valid:.4f} vs hold-out {hold:.4f}: a gap of "
            f"{valid - hold:+.4f} is more than {GAP_Z:g} standard errors ({se:.4f}); "
            f"validation does not predict the hold-out ({why})"
        ]
    return []


def _log_inputs(config: TrainConfig, split: TimeSplit, rows, fp: str, labelled) -> None:
    params = {
        f"{section}.{key}": value
        for section, values in config.model_dump(mode="json").items()
        for key, value in values.items()
    }
    params["optuna.storage"] = safe_url(config.optuna.storage)
    params["mlflow.tracking_uri"] = safe_url(config.mlflow.tracking_uri)
    policy = config.buckets.policy()
    params["bucket_policy"] = json.dumps({"mode": policy.mode, "cuts": dict(policy.cuts)})
    params.update(
        {
            "train_cutoffs": ",".join(str(c.date()) for c in split.train),
            "valid_cutoffs_used": ",".join(str(c.date()) for c in split.valid),
            "holdout_cutoff": str(split.holdout.date()),
            "features": len(labelled.columns) - 1,
            **{f"rows_{k}": v for k, v in rows.items()},
        }
    )
    mlflow.log_params(params)
    mlflow.log_metrics(
        {
            f"churn_rate_{k}": float(v)
            for k, v in labelled.groupby(level=schema.AS_OF)[schema.CHURNED]
            .mean()
            .rename(lambda t: t.strftime("%Y%m%d"))
            .items()
        }
    )
    mlflow.set_tags(
        {
            "data_fingerprint": fp,
            "python": platform.python_version(),
            **{f"version.{name}": version(name) for name in VERSIONED},
        }
    )


def _evaluate(model, X, y, Xv, yv, Xh, yh, truth, seed, registry):
    """Metrics of the model, both baselines and (on matched rows) the oracle, with LightGBM's
    margin over the tuned logistic regression on validation and hold-out; scores by name."""
    p = model.predict_proba(Xh)[:, 1]
    metrics = score_metrics(yh, p, "holdout")
    scores = {"model": p}
    rule_cols = rule_columns(X.columns, registry)
    if rule_cols:
        rule = RuleBaseline(rule_cols).fit(X, y).predict_proba(Xh)[:, 1]
        metrics |= score_metrics(yh, rule, "baseline_rule")
        scores["rule"] = rule
    types = feature_types(X, registry)
    logreg, c, _ = tuned_logreg(types, seed, X, y, Xv, yv)
    mlflow.log_param("baseline_logreg_C", c)
    metrics |= score_metrics(yh, logreg.predict_proba(Xh)[:, 1], "baseline_logreg")
    scores["logistic regression"] = logreg.predict_proba(Xh)[:, 1]
    # the model's raw score ranks the validation rows (its calibration was fitted on them)
    raw_valid = model.predict_raw(Xv)
    valid = score_metrics(yv, raw_valid, "valid_final")
    valid_logreg = score_metrics(yv, logreg.predict_proba(Xv)[:, 1], "valid_logreg")
    metrics |= {k: valid[k] for k in ("valid_final_roc_auc", "valid_final_pr_auc")}
    metrics |= {k: valid_logreg[k] for k in ("valid_logreg_roc_auc", "valid_logreg_pr_auc")}
    for split, model_key, logreg_key in (
        ("valid", "valid_final", "valid_logreg"),
        ("holdout", "holdout", "baseline_logreg"),
    ):
        for metric in ("pr_auc", "roc_auc"):
            metrics[f"lgbm_margin_{split}_{metric}"] = (
                metrics[f"{model_key}_{metric}"] - metrics[f"{logreg_key}_{metric}"]
            )
    metrics |= _auc_standard_errors(yv, raw_valid, yh, p, metrics)
    oracle_rows = 0
    if truth is not None:
        oracle = join_truth(Xh.index, truth)
        matched = oracle.notna().to_numpy()
        oracle_rows = int(matched.sum())
        metrics["oracle_rows"] = float(oracle_rows)
        if oracle_rows and 0 < yh[matched].sum() < oracle_rows:
            metrics |= score_metrics(yh[matched], oracle[matched], "oracle")
            model_matched = score_metrics(yh[matched], p[matched], "oracle_matched_model")
            metrics |= model_matched
            metrics["oracle_ratio"] = oracle_ratio(
                model_matched["oracle_matched_model_roc_auc"], metrics["oracle_roc_auc"]
            )
    return metrics, scores, oracle_rows


def default_truth_path(store: Path) -> Path:
    return Path(store) / "synthetic" / "truth" / "churn_truth.parquet"


def load_truth(path: Path | None, horizon_days: int) -> pd.DataFrame | None:
    """The generator's ground truth for ``horizon_days`` (None when no file is given)."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise TrainingInputError(f"{path}: ground-truth file not found")
    try:
        truth = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise TrainingInputError(
            f"{path}: cannot read the ground truth as Parquet ({str(exc).splitlines()[0]})"
        ) from None
    missing = {*schema.SNAPSHOT_INDEX, schema.CHURN_PROBABILITY} - set(truth.columns)
    if missing:
        raise TrainingInputError(f"{path}: ground truth lacks column(s) {sorted(missing)}")
    if schema.HORIZON_DAYS in truth.columns:
        horizons = sorted(truth[schema.HORIZON_DAYS].unique().tolist())
        truth = truth[truth[schema.HORIZON_DAYS] == horizon_days]
        if truth.empty:
            raise TrainingInputError(
                f"{path}: no ground truth for a {horizon_days}-day horizon (it has {horizons}); "
                "use --horizon to match or regenerate with --horizon-days"
            )
    return truth


def training_snapshots(
    store: Path,
    config: TrainConfig,
    truth: pd.DataFrame | None = None,
    progress: Progress | None = None,
    where: Workplace | None = None,
    split: FeatureConfig | None = None,
) -> tuple[StoreSnapshots, TrainConfig]:
    """The labelled snapshots ``train_store`` learns from, and ``config`` with the app's own
    events chosen (the feature definition the model will keep).

    Cut-offs are the ground truth's when one is given (``load_truth``: the oracle exists only
    there), else every ``training.cutoff_every_days`` from ``training.first_cutoff_days`` after
    the first event. Snapshots are built in subscriber partitions (as ``split`` says, at
    ``where``: see ``features.from_store``) and sampled to ``training.max_rows``, stratified by
    cut-off.
    """
    horizon = config.labels.horizon_days
    check_store(store)
    if progress:
        progress("load", 0, 1)
    events, first, last = events_span(store, None, config.features.include_sandbox)
    if not events:
        raise TrainingInputError(f"{store}: the event store has no production events")
    if progress:
        progress("load", 1, 1)
    if truth is not None:
        cutoffs = sorted(pd.to_datetime(truth[schema.AS_OF], utc=True).unique())
    else:
        t = config.training
        cutoffs = data_cutoffs(first, last, t.first_cutoff_days, t.cutoff_every_days)
    count = plan_partitions(store, split or FeatureConfig(), where)
    definition = config.definition
    if definition.app_events_chosen is None:  # the app's own events, chosen before the hold-out
        chosen = store_app_events(store, cutoffs[-1], definition, where, count) if cutoffs else ()
        definition = definition.model_copy(update={"app_events_chosen": chosen})
    config = config.model_copy(update={"features": definition})
    built = store_snapshots(
        store,
        [pd.Timestamp(c) for c in cutoffs],
        horizon,
        config.features,
        observed_until=last,
        where=where,
        partitions=count,
        max_rows=config.training.max_rows,
        seed=config.training.seed,
        progress=progress,
    )
    return built, config


def train_store(
    store: Path,
    config: TrainConfig,
    truth_path: Path | None = None,
    progress: Progress | None = None,
    where: Workplace | None = None,
    split: FeatureConfig | None = None,
) -> TrainResult:
    """Read the store, build snapshots at the cut-offs (``training_snapshots``), check that the
    ground truth is this app's, and run ``train_snapshots``."""
    truth = load_truth(truth_path, config.labels.horizon_days)
    built, config = training_snapshots(store, config, truth, progress, where, split)
    if truth is not None:
        check_truth_matches(built.frame.index, truth, truth_path)
    sample = (
        {"rows_built": built.built_rows, "rows_kept": len(built.frame),
         "fraction": round(built.fraction, 6)}
        if built.fraction < 1.0
        else None
    )  # fmt: skip
    result = train_snapshots(built.frame, config, truth, progress, sample=sample)
    result.snapshot_rows = built.built_rows
    result.sample_fraction = built.fraction
    result.partitions = built.partitions
    if where is not None:
        result.ran_on, result.dashboard = where.label, where.dashboard
    return result


#: Below this share of snapshot rows with a ground-truth row, the truth file is another app's.
MIN_TRUTH_MATCH = 0.5


def check_truth_matches(index: pd.MultiIndex, truth: pd.DataFrame, path: Path | None) -> None:
    """Raise TrainingInputError when the ground truth describes other subscribers than the
    store's (another app, another generation run): the oracle would silently be missing."""
    if len(index) == 0:
        return
    matched = int(join_truth(index, truth).notna().sum())
    if matched < MIN_TRUTH_MATCH * len(index):
        raise TrainingInputError(
            f"{path}: the ground truth matches {matched:,} of {len(index):,} snapshot rows "
            f"(user_id, platform, as_of); expected at least {MIN_TRUTH_MATCH:.0%}: it belongs to "
            "another app or generation run (regenerate, or train without it)"
        )


__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingFailedError",
    "TrainingInputError",
    "data_cutoffs",
    "check_truth_matches",
    "default_truth_path",
    "fingerprint",
    "load_truth",
    "training_snapshots",
    "train_snapshots",
    "train_store",
]
