"""The churn label on hand-built histories: DESIGN.md's definition, observed horizons only."""

from __future__ import annotations

import pandas as pd
import pytest

from features import FeatureInputError, churn_labels
from features import schema as s
from features.settings import FeatureConfig


@pytest.fixture
def lives(history):
    """Six subscribers, all active on day 10; the store runs to day 60 (the last session)."""
    h = history
    h.sub("converts", 5, "trial_started", expires=12).sub("converts", 12, "renewal", expires=42)
    h.sub("converts", 42, "renewal", expires=72)
    h.sub("trial_lapses", 5, "trial_started", expires=12)
    h.sub("trial_lapses", 8, "cancellation", expires=12).sub("trial_lapses", 12, "expiration")
    h.sub("recovers", 0, "activation", expires=30).sub("recovers", 30, "grace_period")
    h.sub("recovers", 33, "renewal_from_billing_retry", expires=63)
    h.sub("refunded", 0, "activation", expires=30).sub("refunded", 15, "refund", expires=30)
    h.sub("cancelled", 0, "activation", expires=45).sub("cancelled", 9, "cancellation", expires=45)
    h.sub("won_back", 0, "activation", expires=20).sub("won_back", 20, "expiration")
    h.sub("won_back", 30, "reactivation", expires=60)
    h.sub("late", 30, "activation", expires=60)  # not active on day 10: no label
    h.sub("qa", 0, "activation", expires=30, environment=s.ENV_SANDBOX)
    h.add("converts", 60, s.KIND_SESSION, s.KIND_SESSION)
    return h.frame()


def test_labels_follow_the_definition(lives, day):
    labels = churn_labels(lives, day(10), horizon_days=30)
    assert labels.name == s.CHURNED and labels.dtype == "boolean"
    assert labels.index.names == list(s.SUBSCRIBER_INDEX)
    got = {user: bool(v) for (user, _), v in labels.items()}
    assert got == {
        "converts": False,
        "trial_lapses": True,  # trial non-conversion is churn
        "recovers": False,  # in grace at the horizon's end would also count as entitled
        "refunded": True,  # refund ends access at once, before the expiry
        "cancelled": False,  # auto-renew off, but paid until day 45, after the horizon (day 40)
        "won_back": False,  # lapsed, then came back before the horizon's end
    }


def test_cancelled_subscriber_churns_once_the_paid_time_runs_out(lives, day):
    assert not churn_labels(lives, day(10), 30).loc[("cancelled", "ios")]  # day 40 < expiry 45
    assert churn_labels(lives, day(10), 40).loc[("cancelled", "ios")]  # day 50 > expiry 45


def test_billing_trouble_at_the_horizon_end_is_not_churn(lives, day):
    assert not churn_labels(lives, day(1), 30).loc[("recovers", "ios")]  # day 31: in grace


def test_no_label_when_the_horizon_is_not_observed(lives, day):
    assert churn_labels(lives, day(10), 51).empty  # day 60 is the last event: not yet over
    # the horizon and the 24-hour renewal leeway after it must be observed
    assert churn_labels(lives, day(10), 50).empty
    assert len(churn_labels(lives, day(10), 49)) == 6  # day 59 + 1 day: known
    no_leeway = FeatureConfig(renewal_leeway_hours=0)
    assert len(churn_labels(lives, day(10), 50, no_leeway)) == 6  # the state at day 60 is known
    observed = churn_labels(lives, day(10), 51, observed_until=day(62))
    assert len(observed) == 6
    assert churn_labels(lives, day(10), 51, observed_until=day(61.9)).empty
    assert churn_labels(lives, day(10), 30, observed_until=day(40.9)).empty


def test_horizon_must_be_positive(lives, day):
    with pytest.raises(FeatureInputError, match="horizon_days"):
        churn_labels(lives, day(10), 0)


def test_missing_required_columns_are_named(lives, day):
    with pytest.raises(FeatureInputError, match=r"missing required column\(s\) \['kind'\]"):
        churn_labels(lives.drop(columns=[s.KIND]), day(10), 30)


def test_naive_and_date_cut_offs_mean_utc_midnight(lives, day):
    expected = churn_labels(lives, day(10), 30)
    pd.testing.assert_series_equal(churn_labels(lives, "2026-01-11", 30), expected)
    pd.testing.assert_series_equal(churn_labels(lives, day(10).date(), 30), expected)


def test_events_after_the_horizon_change_no_label(lives, day):
    """Nothing after the horizon and its renewal leeway (24 hours) changes a label."""
    cut = day(10)
    end = cut + pd.Timedelta(days=31)
    before_end = lives[lives[s.TS] < end]
    pd.testing.assert_series_equal(
        churn_labels(lives, cut, 30), churn_labels(before_end, cut, 30, observed_until=end)
    )


@pytest.mark.slow
def test_labels_match_the_generators_realised_outcomes(tmp_path):
    """2,000 generated users, ingested: our active set and labels vs truth/churn_truth.parquet.

    Disagreements come only from malformed rows the generator injects (a quarantined renewal
    makes a subscriber look lapsed), so agreement must be near-total, not perfect.
    """
    from datetime import date

    from features import load_events, snapshots
    from features.ingest import ingest
    from features.synthetic import SyntheticConfig, generate

    generate(SyntheticConfig(users=2000, seed=11, start=date(2026, 1, 5), days=120), tmp_path)
    ingest([tmp_path / "raw"], tmp_path / "store")
    truth = pd.read_parquet(tmp_path / "truth" / "churn_truth.parquet")
    truth = truth.set_index(list(s.SNAPSHOT_INDEX))
    cutoffs = sorted(truth.index.get_level_values(s.AS_OF).unique())
    ours = snapshots(load_events(tmp_path / "store"), cutoffs, 30)

    visible = truth[truth["observable"]]
    found = visible.index.isin(ours.index)
    assert found.mean() > 0.98, visible[~found]["state"].value_counts()
    assert ours.index.isin(truth.index).mean() > 0.995
    both = ours[[s.CHURNED]].join(
        truth[[s.CHURNED]].rename(columns={s.CHURNED: s.CHURNED + "_truth"}), how="inner"
    )
    labelled_truth = both[s.CHURNED + "_truth"].notna()
    assert (both[s.CHURNED].notna() == labelled_truth).all()  # same observed horizons
    labelled = both[labelled_truth]
    agree = labelled[s.CHURNED].astype(bool) == labelled[s.CHURNED + "_truth"].astype(bool)
    assert len(labelled) > 3000 and agree.mean() > 0.99
    assert labelled[s.CHURNED].astype(bool).mean() == pytest.approx(
        labelled[s.CHURNED + "_truth"].astype(bool).mean(), abs=0.01
    )
