"""training.buckets: bounds by probability or share, hysteresis against the acknowledged bucket."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from training.buckets import BucketPolicy, BucketPolicyError, assign_buckets, bucket_bounds

PROB = BucketPolicy.of("probability", {"high": 0.5, "medium": 0.2}, "low", hysteresis=0.05)


def reference_bucket(p: float, bounds: list[float], names: list[str]) -> str:
    """The slow obvious rule: the first bucket whose bound p reaches, else the rest."""
    for bound, name in zip(bounds, names, strict=False):
        if p >= bound:
            return name
    return names[-1]


def test_probability_bounds_without_history() -> None:
    p = pd.Series([0.0, 0.19, 0.2, 0.49, 0.5, 1.0])
    got = assign_buckets(p, PROB).tolist()
    assert got == ["low", "low", "medium", "medium", "high", "high"]


def test_share_bounds_put_the_riskiest_share_in_each_bucket() -> None:
    policy = BucketPolicy.of("share", {"high": 0.1, "medium": 0.2}, "low")
    p = pd.Series(np.linspace(0, 0.99, 100))
    counts = assign_buckets(p, policy).value_counts()
    assert (counts["high"], counts["medium"], counts["low"]) == (10, 20, 70)
    assert bucket_bounds(policy, p.to_numpy()).tolist() == pytest.approx([0.9, 0.7])


def test_tied_scores_never_push_a_bucket_past_its_share() -> None:
    """Ties at a bound go to the lower bucket: a flat model puts nobody in `high`, not all."""
    policy = BucketPolicy.of("share", {"high": 0.1, "medium": 0.2}, "low")
    flat = pd.Series(np.full(50, 0.15))
    assert set(assign_buckets(flat, policy)) == {"low"}
    # 5 distinct top scores, then 20 users tied at 0.5 (they would make `high` 25 users, over
    # its 10; together with high they fit the 30 of high + medium), then 75 tied at 0
    p = pd.Series(np.concatenate([np.linspace(0.95, 0.91, 5), np.full(20, 0.5), np.zeros(75)]))
    counts = assign_buckets(p, policy).value_counts()
    assert (counts["high"], counts["medium"], counts["low"]) == (5, 20, 75)


def test_a_policy_survives_its_json() -> None:
    policy = BucketPolicy.of("probability", {"high": 0.41, "medium": 0.17}, "low", 0.03)
    assert BucketPolicy.from_json(policy.to_json()) == policy
    for bad in ("{}", "[1]", '{"mode": "probability", "cuts": [["high", 2.0]], "rest": "low"}'):
        with pytest.raises(BucketPolicyError):
            BucketPolicy.from_json(bad)


def test_hysteresis_keeps_the_acknowledged_bucket_near_a_bound() -> None:
    p = pd.Series([0.47, 0.44, 0.23, 0.16, 0.14, 0.53, 0.30])
    prev = pd.Series(["high", "high", "low", "medium", "medium", "medium", None])
    got = assign_buckets(p, PROB, prev).tolist()
    # 0.47 is within 0.05 of high's bound: stays high; 0.44 is not: moves to medium;
    # 0.23 within 0.05 above low's range: stays low; 0.16 stays medium; 0.14 leaves;
    # 0.53 is within 0.05 above medium's top: stays medium; no history: plain bounds.
    assert got == ["high", "medium", "low", "medium", "low", "medium", "medium"]


def test_unknown_previous_bucket_is_ignored() -> None:
    got = assign_buckets(pd.Series([0.48]), PROB, pd.Series(["retired-name"])).tolist()
    assert got == ["medium"]


def test_empty_population() -> None:
    share = BucketPolicy.of("share", {"high": 0.1}, "low")
    assert assign_buckets(pd.Series([], dtype=float), share).tolist() == []


@pytest.mark.parametrize(
    ("mode", "cuts", "rest", "h", "needle"),
    [
        ("probability", {"high": 0.2, "medium": 0.4}, "low", 0, "must be above"),
        ("probability", {"high": 0.0}, "low", 0, "not in (0, 1]"),
        ("share", {"high": 0.5, "medium": 0.5}, "low", 0, "add up to"),
        ("share", {"high": 1.0}, "low", 0, "not in (0, 1)"),
        ("probability", {"low": 0.5}, "low", 0, "distinct"),
        ("probability", {"high": 0.5}, "low", 0.5, "hysteresis"),
        ("quantile", {"high": 0.5}, "low", 0, "mode"),
    ],
)
def test_bad_policies_are_refused(mode, cuts, rest, h, needle) -> None:
    with pytest.raises(BucketPolicyError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        BucketPolicy.of(mode, cuts, rest, h)


probs = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=50)
names = st.sampled_from(["high", "medium", "low", None])


@given(probs, st.data())
def test_hysteresis_only_ever_keeps_the_previous_bucket(values, data) -> None:
    p = pd.Series(values)
    prev = pd.Series(data.draw(st.lists(names, min_size=len(values), max_size=len(values))))
    raw = assign_buckets(p, PROB)
    got = assign_buckets(p, PROB, prev)
    for v, r, g, before in zip(values, raw, got, prev, strict=True):
        assert r == reference_bucket(v, [0.5, 0.2], ["high", "medium", "low"])
        assert g in (r, before)
        if all(abs(v - bound) > PROB.hysteresis for bound in (0.5, 0.2)):
            assert g == r  # far from every bound, history does not matter


@given(probs)
def test_buckets_are_stable_once_acknowledged(values) -> None:
    """Re-bucketing the same scores against the buckets just assigned changes nothing."""
    p = pd.Series(values)
    first = assign_buckets(p, PROB, pd.Series(["low"] * len(values)))
    assert assign_buckets(p, PROB, first).tolist() == first.tolist()
