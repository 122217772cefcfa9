"""training.evaluate: metrics against slow obvious references, baselines, the oracle join."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from features import schema
from tests.training.conftest import AUTO_RENEW_OFF, TEST_REGISTRY
from training.evaluate import (
    RuleBaseline,
    bucket_table,
    clustered_auc_standard_error,
    expected_calibration_error,
    join_truth,
    lift_quality,
    logreg_baseline,
    oracle_ratio,
    rule_columns,
    score_metrics,
    subscriber_clusters,
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


def slow_delong_se(y, p) -> float:
    """DeLong et al. (1988) from the pairwise kernel matrix, written out row by row."""
    pos = [s for s, t in zip(p, y, strict=True) if t]
    neg = [s for s, t in zip(p, y, strict=True) if not t]
    psi = [[1.0 if a > b else 0.5 if a == b else 0.0 for b in neg] for a in pos]
    auc = sum(map(sum, psi)) / (len(pos) * len(neg))
    v10 = [sum(row) / len(neg) for row in psi]
    v01 = [sum(psi[i][j] for i in range(len(pos))) / len(pos) for j in range(len(neg))]
    s10 = sum((v - auc) ** 2 for v in v10) / (len(pos) - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (len(neg) - 1)
    return math.sqrt(s10 / len(pos) + s01 / len(neg))


def clustered_rows(seed: int, subscribers: int = 150):
    """Subscribers seen at 1-4 cut-offs whose risk, label and score persist across their rows
    (scores rounded: ties), as validation over several cut-offs is."""
    rng = np.random.default_rng(seed)
    who = np.repeat(np.arange(subscribers), rng.integers(1, 5, subscribers))
    risk = rng.normal(size=subscribers)[who]
    y = (risk + rng.normal(scale=0.5, size=len(who)) > 0.8).astype(int)
    p = np.round(risk + rng.normal(scale=0.3, size=len(who)), 1)
    return y, p, who


def rank_auc(y, p) -> float:
    from scipy.stats import rankdata

    n1 = y.sum()
    return (rankdata(p)[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))


def test_one_row_per_subscriber_gives_delong_standard_error() -> None:
    y, p, _ = clustered_rows(1, 40)
    expected = slow_delong_se(y.tolist(), p.tolist())
    assert clustered_auc_standard_error(y, p) == pytest.approx(expected, rel=1e-12)
    labels = [f"u{i}" for i in range(len(y))][::-1]  # any distinct labels, any order
    assert clustered_auc_standard_error(y, p, labels) == pytest.approx(expected, rel=1e-12)
    assert 0.01 < expected < 0.1


def test_clustered_standard_error_matches_a_bootstrap_over_subscribers() -> None:
    """The slow obvious reference: resample whole subscribers, recompute the AUC."""
    y, p, who = clustered_rows(0)
    rng = np.random.default_rng(7)
    members = [np.flatnonzero(who == c) for c in range(who.max() + 1)]
    draws = []
    for _ in range(1_500):
        rows = np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])
        draws.append(rank_auc(y[rows], p[rows]))
    reference = float(np.std(draws, ddof=1))
    clustered = clustered_auc_standard_error(y, p, who)
    assert clustered == pytest.approx(reference, rel=0.1)
    # rows taken as independent understate it (what Hanley-McNeil and plain DeLong do here)
    assert clustered_auc_standard_error(y, p) < 0.85 * clustered


def test_a_subscriber_counted_twice_adds_no_information() -> None:
    y, p, who = clustered_rows(3, 60)
    twice = np.r_[who, who]
    once = clustered_auc_standard_error(y, p, who)
    assert clustered_auc_standard_error(np.r_[y, y], np.r_[p, p], twice) == pytest.approx(once)
    assert clustered_auc_standard_error(np.r_[y, y], np.r_[p, p]) < 0.75 * once


def test_clustered_standard_error_needs_two_clusters_of_each_class() -> None:
    y, p = np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.8, 0.3, 0.2, 0.6])
    assert math.isnan(clustered_auc_standard_error(y, p, [1, 1, 2, 3, 4]))
    assert np.isfinite(clustered_auc_standard_error(y, p, [1, 5, 2, 3, 4]))
    with pytest.raises(ValueError, match="found 5 outcomes, 5 scores and 4 cluster labels"):
        clustered_auc_standard_error(y, p, [1, 2, 3, 4])


def test_subscriber_clusters_join_one_subscribers_rows_across_cut_offs() -> None:
    index = pd.MultiIndex.from_tuples(
        [
            (pd.Timestamp("2026-02-02", tz="UTC"), "a", "ios"),
            (pd.Timestamp("2026-02-02", tz="UTC"), "a", "android"),
            (pd.Timestamp("2026-02-09", tz="UTC"), "a", "ios"),
            (pd.Timestamp("2026-02-09", tz="UTC"), "b", "ios"),
        ],
        names=schema.SNAPSHOT_INDEX,
    )
    codes = subscriber_clusters(index)
    assert codes[0] == codes[2] and len({codes[0], codes[1], codes[3]}) == 3
    assert list(subscriber_clusters(pd.RangeIndex(3))) == [0, 1, 2]
