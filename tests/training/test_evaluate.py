"""training.evaluate: metrics against slow obvious references, baselines, the oracle join."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from features import schema
from tests.training.conftest import AUTO_RENEW_OFF, TEST_REGISTRY
from training.evaluate import (
    RuleBaseline,
    bucket_table,
    expected_calibration_error,
    join_truth,
    lift_quality,
    logreg_baseline,
    oracle_ratio,
    rule_columns,
    score_metrics,
    top_share,
)
from training.pipeline import feature_types
from training.splits import time_split


def slow_ece(y, p, bins=10):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(len(p)) if lo <= p[i] < hi or (b == bins - 1 and p[i] == 1.0)]
        if members:
            rate = sum(y[i] for i in members) / len(members)
            conf = sum(p[i] for i in members) / len(members)
            total += len(members) / len(p) * abs(rate - conf)
    return total


def slow_lift_quality(y, p):
    """Average over every audience size k of (churners caught - random) / (perfect - random)."""
    n, churners = len(y), sum(y)
    order = sorted(range(n), key=lambda i: -p[i])
    caught, num, den = 0, 0.0, 0.0
    for k in range(1, n + 1):
        caught += y[order[k - 1]]
        random = churners * k / n
        num += caught - random
        den += min(k, churners) - random
    return num / den


probs = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=60)


@given(probs, st.randoms())
def test_ece_matches_reference(p, rnd) -> None:
    y = [int(rnd.random() < 0.3) for _ in p]
    assert expected_calibration_error(y, p) == pytest.approx(slow_ece(y, p), abs=1e-12)


@given(st.lists(st.integers(0, 1000), min_size=3, max_size=60, unique=True), st.randoms())
def test_lift_quality_matches_reference_and_equals_gini(scores, rnd) -> None:
    p = [s / 1000 for s in scores]  # distinct scores: no ties
    y = [int(rnd.random() < 0.3) for _ in p]
    if 0 < sum(y) < len(y):
        assert lift_quality(y, p) == pytest.approx(slow_lift_quality(y, p), abs=1e-9)
        # with no ties the area ratio under cumulative gains is the accuracy ratio, 2 AUC - 1
        assert lift_quality(y, p) == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=1e-9)
    else:
        assert math.isnan(lift_quality(y, p))


def test_lift_quality_extremes() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert lift_quality(y, np.linspace(1, 0, 10)) == pytest.approx(1.0)
    assert lift_quality(y, np.linspace(0, 1, 10)) < 0
    assert lift_quality(y, np.full(10, 0.5)) == pytest.approx(0.0)  # all tied: random


def test_top_share_lift_and_recall() -> None:
    y = np.array([1] * 10 + [0] * 90)
    p = np.concatenate([np.linspace(0.9, 0.8, 5), np.linspace(0.1, 0.0, 5), np.full(90, 0.5)])
    lift, recall = top_share(y, p, 0.10)
    # top 10 = 5 churners (0.9..0.8) + 5 of the 90 tied non-churners at 0.5
    assert (lift, recall) == (pytest.approx(5.0), pytest.approx(0.5))


def test_score_metric_names_follow_design(snapshots) -> None:
    y = np.array([0, 1, 0, 1, 1, 0, 0, 0])
    m = score_metrics(y, np.array([0.1, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.05]), "holdout")
    # by hand: churners score 0.8, 0.6, 0.2; the rest 0.4, 0.3, 0.1, 0.1, 0.05
    log_loss = -(
        math.log(0.8) + math.log(0.6) + math.log(0.2)
        + math.log(0.6) + math.log(0.7) + math.log(0.9) * 2 + math.log(0.95)
    ) / 8  # fmt: skip
    expected = {
        "roc_auc": 13 / 15,  # 0.8 and 0.6 beat all 5 stayers, 0.2 beats 3
        "pr_auc": (1 + 1 + 3 / 5) / 3,  # precision at the churners' ranks 1, 2, 5
        "log_loss": log_loss,
        "brier": (0.04 + 0.16 + 0.64 + 0.16 + 0.09 + 0.01 * 2 + 0.0025) / 8,
        "ece": (0.05 + 0.2 + 0.8 + 0.3 + 0.4 + 0.4 + 0.2) / 8,  # one bin per distinct score
        "top10_lift": 8 / 3,  # top 1 of 8: a churner, base rate 3/8
        "top10_recall": 1 / 3,
        "top20_lift": 8 / 3,  # top 2 of 8: both churners
        "top20_recall": 2 / 3,
        "lift_quality": 2 * 13 / 15 - 1,  # no churner ties a stayer
    }
    assert m == pytest.approx({f"holdout_{k}": v for k, v in expected.items()})
    assert oracle_ratio(0.8, 0.9) == pytest.approx(0.75)


def test_bucket_table_counts_and_expectations() -> None:
    y = np.array([1, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.7, 0.4, 0.2, 0.1, 0.1])
    buckets = np.array(["high", "high", "medium", "low", "low", "low"], dtype=object)
    t = bucket_table(y, p, buckets, ["high", "medium", "low"])
    assert list(t.index) == ["high", "medium", "low"]
    assert t.loc["high", "users"] == 2
    assert t.loc["high", "expected_churners"] == pytest.approx(1.6)
    assert t.loc["high", "expected_non_churners"] == pytest.approx(0.4)
    assert t.loc["medium", "realised_churn_rate"] == 1.0
    assert t["share"].sum() == pytest.approx(1.0)


def test_baselines_on_planted_signal(snapshots) -> None:
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    train, hold = split.part(frame, "train"), split.part(frame, "holdout")
    X, y = train.drop(columns=schema.CHURNED), train[schema.CHURNED].astype(int)
    Xh, yh = hold.drop(columns=schema.CHURNED), hold[schema.CHURNED].astype(int)
    cols = rule_columns(X.columns, TEST_REGISTRY)
    assert cols == [AUTO_RENEW_OFF]
    rule = RuleBaseline(cols).fit(X, y)
    flag = X[AUTO_RENEW_OFF].to_numpy(dtype=bool)
    assert rule.rates_[True] == pytest.approx((y[flag].sum() + y.mean()) / (flag.sum() + 1))
    rule_auc = roc_auc_score(yh, rule.predict_proba(Xh)[:, 1])
    logreg = logreg_baseline(feature_types(X), seed=0).fit(X, y)
    logreg_auc = roc_auc_score(yh, logreg.predict_proba(Xh)[:, 1])
    assert 0.55 < rule_auc < logreg_auc
    with pytest.raises(ValueError, match="rule needs one"):
        RuleBaseline(rule_columns(X.columns, {}))


def test_join_truth_matches_rows_and_leaves_gaps(snapshots) -> None:
    frame, truth = snapshots
    hold = frame.tail(10)
    partial = truth.iloc[[*range(len(truth) - 10, len(truth) - 3)]]
    partial = partial.assign(**{schema.AS_OF: partial[schema.AS_OF].astype("datetime64[ns, UTC]")})
    oracle = join_truth(hold.index, partial.sample(frac=1, random_state=0))
    assert oracle.notna().sum() == 7
    np.testing.assert_allclose(
        oracle.to_numpy()[:7], truth[schema.CHURN_PROBABILITY].to_numpy()[-10:-3]
    )
    assert oracle.index.equals(hold.index)
