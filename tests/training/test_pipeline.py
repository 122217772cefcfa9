"""training.pipeline: feature typing, the fitted ChurnModel, calibration choice, buckets."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from features import schema
from tests.training.conftest import AUTO_RENEW_OFF, CONSTANT, COUNTRY, ENGAGEMENT, TENURE
from training.buckets import BucketPolicy, BucketPolicyError
from training.pipeline import (
    ChurnModel,
    FeatureSchemaError,
    _fit_calibrator,
    apply_calibrator,
    choose_calibration,
    classifier,
    feature_types,
    fit_classifier,
    preprocessor,
)
from training.splits import time_split


def parts(frame: pd.DataFrame):
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    out = []
    for name in ("train", "valid", "holdout"):
        part = split.part(frame, name)
        out += [part.drop(columns=schema.CHURNED), part[schema.CHURNED].astype(int)]
    return out


@pytest.fixture(scope="module")
def fitted(snapshots):
    frame, _ = snapshots
    X, y, Xv, yv, Xh, yh = parts(frame)
    model = ChurnModel(params={"num_leaves": 7, "learning_rate": 0.1}, seed=3).fit(
        X, y, X_valid=Xv, y_valid=yv
    )
    return model, (X, y, Xv, yv, Xh, yh)


@pytest.mark.parametrize("metric", ["binary_logloss", "auc"])
def test_early_stopping_keeps_the_best_round_of_the_chosen_metric(snapshots, metric) -> None:
    """Both metrics are recorded every round; the one chosen decides the round kept (the first
    best of its curve) and the stop (``rounds`` later), and the best score holds both at it."""
    frame, _ = snapshots
    X, y, Xv, yv, _, _ = parts(frame)
    pre = preprocessor(feature_types(X)).fit(X, y)
    rounds = 15
    clf = fit_classifier(
        classifier({"num_leaves": 31, "learning_rate": 0.3, "min_child_samples": 2}, 0),
        pre.transform(X),
        y,
        pre.transform(Xv),
        yv,
        early_stopping_rounds=rounds,
        early_stopping_metric=metric,
    )
    curves = clf.evals_result_["valid_0"]
    assert set(curves) == {"binary_logloss", "auc"}
    curve = np.asarray(curves[metric])
    best = int(np.argmin(curve) if metric == "binary_logloss" else np.argmax(curve))
    assert clf.best_iteration_ == best + 1
    assert len(curve) == min(best + 1 + rounds, clf.n_estimators)
    assert clf.best_score_["valid_0"]["auc"] == pytest.approx(curves["auc"][best])
    expected = roc_auc_score(yv, clf.predict_proba(pre.transform(Xv))[:, 1])
    assert clf.best_score_["valid_0"]["auc"] == pytest.approx(expected, abs=1e-9)


def test_early_stopping_on_log_loss_with_rare_churners_keeps_its_own_best_round() -> None:
    """An annual-plan-like app, 2% churners and noisy signal: the round kept is log loss's best
    (not AUC's), and AUC is still recorded there for the trial's score."""
    rng = np.random.default_rng(11)
    n = 6000
    X = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n)})
    logit = -4.6 + 0.9 * X["signal"].to_numpy()
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))
    assert 0.01 < y.mean() < 0.04
    train, valid = slice(0, 4000), slice(4000, n)
    clf = fit_classifier(
        classifier({"num_leaves": 4, "learning_rate": 0.03, "min_child_samples": 50}, 0),
        X[train],
        y[train],
        X[valid],
        y[valid],
        early_stopping_rounds=50,
    )
    curves = clf.evals_result_["valid_0"]
    best = int(np.argmin(curves["binary_logloss"]))
    assert clf.best_iteration_ == best + 1
    assert clf.best_score_["valid_0"]["auc"] == pytest.approx(curves["auc"][best])
    assert clf.best_score_["valid_0"]["auc"] > 0.6


def test_a_model_pickled_before_the_stopping_metric_setting_still_loads(fitted) -> None:
    """Registered models from before ``early_stopping_metric`` unpickle with the rule they were
    fitted with (AUC) and keep scoring and describing themselves."""
    import pickle

    model, (_, _, _, _, Xh, _) = fitted
    state = model.__getstate__()
    del state["early_stopping_metric"]
    old = ChurnModel.__new__(ChurnModel)
    old.__setstate__(state)
    again = pickle.loads(pickle.dumps(old))
    assert again.get_params()["early_stopping_metric"] == "auc"
    assert "ChurnModel(" in repr(again)
    assert clone(again).early_stopping_metric == "auc"
    np.testing.assert_array_equal(again.predict_proba(Xh), model.predict_proba(Xh))


def test_feature_types_from_dtypes_without_registry(snapshots) -> None:
    frame, _ = snapshots
    types = feature_types(frame)
    assert types.numeric == (ENGAGEMENT, TENURE, CONSTANT)
    assert types.categorical == (COUNTRY,)
    assert types.boolean == (AUTO_RENEW_OFF,)


def test_model_learns_the_planted_signal_and_is_deterministic(fitted) -> None:
    model, (X, y, Xv, yv, Xh, yh) = fitted
    p = model.predict_proba(Xh)
    assert p.shape == (len(Xh), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert roc_auc_score(yh, p[:, 1]) > 0.75
    assert CONSTANT not in model.pipeline_[-1].feature_name_  # dropped as constant
    again = ChurnModel(params={"num_leaves": 7, "learning_rate": 0.1}, seed=3).fit(
        X, y, X_valid=Xv, y_valid=yv
    )
    np.testing.assert_array_equal(again.predict_proba(Xh), p)


def test_scores_unseen_categories_missing_values_and_column_order(fitted) -> None:
    model, (*_, Xh, _yh) = fitted
    rows = Xh.head(4).copy()
    rows[COUNTRY] = pd.array(["ZZ-never-seen", None, "US", "rare?"], dtype="str")
    rows[ENGAGEMENT] = [np.nan, 1.0, np.nan, 2.0]
    rows[AUTO_RENEW_OFF] = pd.array([None, True, False, True], dtype="boolean")
    shuffled = rows[list(reversed(rows.columns))]
    p = model.predict_proba(shuffled)[:, 1]
    assert np.all((p > 0) & (p < 1))
    np.testing.assert_array_equal(p, model.predict_proba(rows)[:, 1])


def test_missing_feature_column_is_named(fitted) -> None:
    model, (*_, Xh, _yh) = fitted
    with pytest.raises(FeatureSchemaError, match=r"\['t_tenure'\] missing"):
        model.predict_proba(Xh.drop(columns=TENURE))


def test_contributions_sum_to_the_raw_log_odds(fitted) -> None:
    model, (*_, Xh, _yh) = fitted
    contrib = model.contributions(Xh)
    assert list(contrib.columns)[-1] == "bias"
    raw = model.predict_raw(Xh)
    np.testing.assert_allclose(contrib.sum(axis=1), np.log(raw / (1 - raw)), atol=1e-9)


def test_bucket_shares_become_probability_bounds_on_validation(fitted) -> None:
    """A share policy is fitted on validation: those shares there, fixed bounds afterwards."""
    model, (X, y, Xv, yv, Xh, _yh) = fitted
    shares = BucketPolicy.of("share", {"high": 0.10, "medium": 0.20}, "low", 0.02)
    shared = clone(model).set_params(bucket_policy=shares).fit(X, y, X_valid=Xv, y_valid=yv)
    policy = shared.bucket_policy_
    assert (policy.mode, policy.rest, policy.hysteresis) == ("probability", "low", 0.02)
    assert [name for name, _ in policy.cuts] == ["high", "medium"]
    buckets = shared.buckets(shared.predict_proba(Xv)[:, 1])
    share = pd.Series(buckets).value_counts(normalize=True)
    # isotonic steps create ties at a bound, so shares are approximate
    assert share["high"] == pytest.approx(0.10, abs=0.05)
    assert share["high"] + share["medium"] == pytest.approx(0.30, abs=0.06)
    p = shared.predict_proba(Xh)[:, 1]
    (_, high), (_, medium) = policy.cuts
    expected = np.where(p >= high, "high", np.where(p >= medium, "medium", "low"))
    assert shared.buckets(p).tolist() == expected.tolist()


def test_default_buckets_are_the_sync_defaults(fitted) -> None:
    """Without a policy, the model buckets as lapse.toml's [buckets] does (0.5 / 0.2)."""
    model, _ = fitted
    assert model.bucket_policy_.cuts == (("high", 0.5), ("medium", 0.2))
    p = np.array([0.0, 0.19, 0.2, 0.49, 0.5, 1.0])
    assert model.buckets(p).tolist() == ["low", "low", "medium", "medium", "high", "high"]


def test_given_bucket_mode_cannot_train(fitted) -> None:
    model, (X, y, Xv, yv, *_rest) = fitted
    given = BucketPolicy.of("given", {}, "low")
    with pytest.raises(BucketPolicyError, match="'given'"):
        clone(model).set_params(bucket_policy=given).fit(X, y, X_valid=Xv, y_valid=yv)


def test_calibration_choice_prefers_platt_for_a_logistic_distortion() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0.01, 0.6, 4000)
    y = (rng.random(4000) < true).astype(int)
    logit = np.log(true / (1 - true))
    distorted = 1 / (1 + np.exp(-(0.5 * logit - 1)))  # monotone, logistic in the logit
    method, scores = choose_calibration(distorted, y, seed=0)
    assert method == "platt" and scores["platt"] <= scores["isotonic"]


def test_isotonic_calibration_keeps_the_raw_order_within_a_step() -> None:
    rng = np.random.default_rng(2)
    raw = rng.uniform(0.0, 0.5, 300)
    y = (rng.random(300) < raw).astype(int)
    calibrator = _fit_calibrator("isotonic", raw, y, seed=0)
    steps = calibrator.predict(raw)
    assert len(np.unique(steps)) < 40  # a step function: many raw scores share a step
    q = apply_calibrator("isotonic", calibrator, raw)
    order = np.argsort(raw)
    assert (np.diff(q[order]) > 0).all()  # no ties left, in LightGBM's order
    assert np.abs(q - np.clip(steps, 1e-6, 1 - 1e-6)).max() <= 1e-6  # calibration unchanged
