"""Subscription state at a cut-off, from hand-built histories with known answers."""

from __future__ import annotations

import pandas as pd
import pytest

from features import FeatureConfig, build_features
from features import schema as s
from features import state as st


def row(frame: pd.DataFrame, user: str, platform: str = "ios") -> pd.Series:
    return frame.loc[(user, platform)]


def test_trial_that_converts(history, day):
    h = history.sub("u", 0, "trial_started", expires=7, product_id="m", store=s.STORE_APPLE)
    h.sub("u", 7, "renewal", expires=37, price=9.99, currency="USD", product_id="m")
    events = h.frame()

    trial = row(build_features(events, day(3)), "u")
    assert trial[st.STATUS] == "trial"
    assert trial[st.IN_TRIAL] == 1.0 and trial[st.IN_OFFER] == 0.0
    assert trial[st.DAYS_TO_EXPIRY] == pytest.approx(4.0)
    assert trial[st.TRIAL_OR_OFFER_DAYS_LEFT] == pytest.approx(4.0)
    assert trial[st.PERIOD_DAYS] == 7.0
    assert pd.isna(trial[st.PRICE])

    paid = row(build_features(events, day(10)), "u")
    assert paid[st.STATUS] == "paid"
    assert paid[st.IN_TRIAL] == 0.0
    assert paid[st.PRICE] == 9.99 and paid[st.CURRENCY] == "USD"
    assert paid[st.PERIOD_DAYS] == 30.0
    assert paid[st.DAYS_TO_EXPIRY] == pytest.approx(27.0)
    assert paid[st.DAYS_SINCE_CHARGE] == pytest.approx(3.0)
    assert pd.isna(paid[st.TRIAL_OR_OFFER_DAYS_LEFT])
    assert paid[st.PRODUCT] == "m" and paid[st.STORE] == s.STORE_APPLE


def test_cancellation_with_time_left_is_active_with_auto_renew_off(history, day):
    h = history.sub("u", 0, "activation", expires=30, price=9.99)
    h.sub("u", 10, "cancellation", expires=30, cancelled_at=10)
    f = build_features(h.frame(), day(12))
    u = row(f, "u")
    assert u[st.STATUS] == "paid"
    assert u[st.AUTO_RENEW_OFF] == 1.0
    assert u[st.DAYS_SINCE_AUTO_RENEW_OFF] == pytest.approx(2.0)
    assert u[st.DAYS_TO_EXPIRY] == pytest.approx(18.0)
    # expiry passed without an expiration row: no longer active
    assert build_features(h.frame(), day(31)).empty


def test_auto_renew_back_on_after_ios_reactivation(history, day):
    h = history.sub("u", 0, "activation", expires=30)
    h.sub("u", 10, "cancellation", expires=30).sub("u", 12, "reactivation", expires=30)
    u = row(build_features(h.frame(), day(13)), "u")
    assert u[st.AUTO_RENEW_OFF] == 0.0 and pd.isna(u[st.DAYS_SINCE_AUTO_RENEW_OFF])


def test_price_declined_turns_auto_renew_off(history, day):
    h = history.sub("u", 0, "activation", expires=30).sub("u", 30, "renewal", expires=60)
    h.sub("u", 50, "price_declined", expires=60)
    u = row(build_features(h.frame(), day(51)), "u")
    assert u[st.AUTO_RENEW_OFF] == 1.0 and u[st.PRICE_DECLINED_PENDING] == 1.0


def test_billing_retry_that_recovers(history, day):
    h = history.sub("u", 0, "activation", expires=30, price=9.99)
    h.sub("u", 30, "grace_period").sub("u", 46, "billing_retry")
    h.sub("u", 50, "renewal_from_billing_retry", expires=80, price=9.99)
    events = h.frame()

    grace = row(build_features(events, day(35)), "u")
    assert grace[st.STATUS] == "grace_period"
    assert (grace[st.IN_GRACE], grace[st.IN_RETRY], grace[st.ON_HOLD]) == (1.0, 0.0, 0.0)
    assert grace[st.BILLING_TROUBLE_DAYS] == pytest.approx(5.0)
    assert grace[st.DAYS_TO_EXPIRY] == pytest.approx(-5.0)

    retry = row(build_features(events, day(47)), "u")
    assert retry[st.STATUS] == "billing_retry"
    assert (retry[st.IN_GRACE], retry[st.IN_RETRY]) == (0.0, 1.0)
    assert retry[st.BILLING_TROUBLE_DAYS] == pytest.approx(17.0)

    recovered = row(build_features(events, day(51)), "u")
    assert recovered[st.STATUS] == "paid"
    assert recovered[st.BILLING_TROUBLE_DAYS] == 0.0
    assert recovered[st.DAYS_TO_EXPIRY] == pytest.approx(29.0)


def test_android_hold_is_active_and_pause_is_not(history, day):
    h = history.sub("h", 0, "activation", expires=30, platform=s.OS_ANDROID)
    h.sub("h", 30, "grace_period", platform=s.OS_ANDROID)
    h.sub("h", 37, "on_hold", platform=s.OS_ANDROID)
    h.sub("h", 67, "expiration", platform=s.OS_ANDROID)
    h.sub("p", 0, "activation", expires=30, platform=s.OS_ANDROID)
    h.sub("p", 30, "paused", platform=s.OS_ANDROID)
    events = h.frame()
    f = build_features(events, day(40))
    assert list(f.index) == [("h", s.OS_ANDROID)]
    hold = row(f, "h", s.OS_ANDROID)
    assert hold[st.STATUS] == "on_hold" and hold[st.ON_HOLD] == 1.0
    assert hold[st.BILLING_TROUBLE_DAYS] == pytest.approx(10.0)
    assert build_features(events, day(68)).empty


def test_refund_ends_access_at_once(history, day):
    h = history.sub("u", 0, "activation", expires=30).sub("u", 10, "refund", expires=30)
    events = h.frame()
    assert list(build_features(events, day(9)).index) == [("u", "ios")]
    assert build_features(events, day(11)).empty


def test_billing_failure_without_an_ending_row_stops_counting_after_the_retry_limit(history, day):
    h = history.sub("u", 0, "activation", expires=30).sub("u", 30, "grace_period")
    events = h.frame()
    assert not build_features(events, day(89)).empty
    assert build_features(events, day(91)).empty
    assert not build_features(events, day(91), FeatureConfig(max_retry_days=90)).empty


def test_legacy_history_after_mapping_reads_like_the_current_one(history, day):
    legacy = {s.EVENT_RAW: "first_conversion", s.EVENT_SUBTYPE: "converted_trial"}
    h = history.sub(
        "old", 0, "trial_started", expires=7, event_raw="activation", event_subtype="initial_trial"
    )
    h.sub("old", 7, "renewal", expires=37, price=9.99, conversion_from="trial", **legacy)
    h.sub("old", 37, "expiration", event_raw="cancellation", event_subtype="failed_subscription")
    h.sub("new", 0, "trial_started", expires=7).sub("new", 7, "renewal", expires=37, price=9.99)
    h.sub("new", 37, "expiration")
    events = h.frame()
    f = build_features(events, day(20))
    old, new = row(f, "old"), row(f, "new")
    assert old[st.STATUS] == "paid"
    pd.testing.assert_series_equal(old, new, check_names=False)
    assert build_features(events, day(38)).empty


def test_sandbox_rows_are_left_out(history, day):
    h = history.sub("qa", 0, "activation", expires=30, environment=s.ENV_SANDBOX)
    h.sub("u", 0, "activation", expires=30)
    events = h.frame()
    assert list(build_features(events, day(1)).index) == [("u", "ios")]
    with_sandbox = build_features(events, day(1), FeatureConfig(include_sandbox=True))
    assert list(with_sandbox.index) == [("qa", "ios"), ("u", "ios")]


def test_an_event_at_as_of_is_not_seen(history, day):
    h = history.sub("u", 0, "trial_started", expires=7).sub("u", 5, "cancellation", expires=7)
    events = h.frame()
    assert row(build_features(events, day(5)), "u")[st.AUTO_RENEW_OFF] == 0.0
    assert row(build_features(events, day(5.001)), "u")[st.AUTO_RENEW_OFF] == 1.0
