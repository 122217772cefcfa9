"""History features from hand-built lifecycles with known counts."""

from __future__ import annotations

import pytest

from features import build_features
from features import history as hist
from features import schema as s


def test_counts_over_a_long_ios_life(history, day):
    h = history.sub("u", 0, "trial_started", expires=7)
    h.sub("u", 7, "renewal", expires=37, price=9.99)  # conversion
    h.sub("u", 37, "grace_period").sub("u", 53, "billing_retry")  # one failure episode
    h.sub("u", 55, "renewal_from_billing_retry", expires=85, price=9.99)
    h.sub("u", 60, "cancellation", expires=85).sub("u", 62, "reactivation", expires=85)
    h.sub("u", 70, "price_accepted", expires=85)
    h.sub("u", 85, "renewal", expires=115, price=12.99)
    h.sub("u", 90, "refund", expires=115)
    h.sub("u", 100, "reactivation", expires=130, price=12.99)  # paid win-back
    h.sub("u", 105, "price_declined", expires=130)
    u = build_features(h.frame(), day(110)).loc[("u", "ios")]
    assert u[hist.TENURE] == pytest.approx(110.0)
    assert u[hist.RENEWALS] == 3.0  # conversion, recovery, renewal
    assert u[hist.FAILED_RENEWALS] == 1.0
    assert u[hist.RECOVERIES] == 1.0
    assert u[hist.CANCELLATIONS] == 2.0  # a cancellation and a declined price change
    assert u[hist.REACTIVATIONS] == 2.0
    assert u[hist.REFUNDS] == 1.0
    assert u[hist.WIN_BACKS] == 1.0
    assert u[hist.EXPIRATIONS] == 0.0
    assert u[hist.PRICE_ACCEPTED] == 1.0 and u[hist.PRICE_DECLINED] == 1.0
    assert u[hist.HAD_TRIAL] == 1.0 and u[hist.OFFERS] == 0.0
    assert u[hist.DAYS_SINCE_CANCELLATION] == pytest.approx(5.0)


def test_android_win_back_arrives_as_a_new_activation_chain(history, day):
    a = s.OS_ANDROID
    h = history.sub("g", 0, "discounted_offer", expires=30, platform=a, original_transaction_id="A")
    h.sub("g", 30, "grace_period", platform=a).sub("g", 37, "on_hold", platform=a)
    h.sub("g", 67, "expiration", platform=a)
    h.sub("g", 80, "activation", expires=110, platform=a, original_transaction_id="B")
    g = build_features(h.frame(), day(90)).loc[("g", a)]
    assert g[hist.WIN_BACKS] == 1.0
    assert g[hist.FAILED_RENEWALS] == 1.0  # grace then hold is one failed charge
    assert g[hist.EXPIRATIONS] == 1.0
    assert g[hist.OFFERS] == 1.0 and g[hist.HAD_TRIAL] == 0.0
    assert g[hist.RENEWALS] == 0.0
    assert g[hist.TENURE] == pytest.approx(90.0)


def test_events_of_other_subscribers_and_platforms_do_not_count(history, day):
    h = history.sub("u", 0, "activation", expires=30).sub("u", 10, "cancellation", expires=30)
    h.sub("u", 0, "activation", expires=30, platform=s.OS_ANDROID)
    h.sub("v", 0, "activation", expires=30).sub("v", 5, "refund")
    f = build_features(h.frame(), day(12))
    assert f.loc[("u", "ios"), hist.CANCELLATIONS] == 1.0
    assert f.loc[("u", s.OS_ANDROID), hist.CANCELLATIONS] == 0.0
    assert ("v", "ios") not in f.index
