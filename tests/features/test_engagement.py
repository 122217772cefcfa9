"""Engagement windows, trends and recency on hand-built activity with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features import FeatureConfig, build_features
from features import engagement as eng
from features import schema as s


@pytest.fixture
def falling(history):
    """Installed day 0, annual plan; 2 sessions a day for 4 weeks, then 1 a day for 4 weeks."""
    h = history.install("u", 0).sub("u", 0, "activation", expires=365)
    h.sessions("u", 0, 28, 2).sessions("u", 28, 56, 1)
    for d in (20, 40, 50):
        h.add("u", d, s.KIND_EVENT, "workout_completed")
    h.add("u", 55, s.KIND_EVENT, "paywall_viewed").add("u", 30, s.KIND_EVENT, "support_contacted")
    return h


def test_windows_trends_and_recency(falling, day):
    u = build_features(falling.frame(), day(56)).loc[("u", "ios")]
    assert (u["sessions_7d"], u["sessions_14d"], u["sessions_28d"]) == (7.0, 14.0, 28.0)
    assert (u["in_app_events_7d"], u["in_app_events_14d"], u["in_app_events_28d"]) == (
        2.0,
        2.0,
        4.0,
    )
    assert u["session_rate_28d"] == pytest.approx(1.0)
    assert u["session_trend_7d_vs_28d"] == pytest.approx(math.log(7.5 / 7) - math.log(28.5 / 28))
    assert u["session_trend_28d_vs_prior"] == pytest.approx(
        math.log(28.5 / 28) - math.log(56.5 / 28)
    )
    assert u["active_days_28d"] == 28.0
    assert u["paywall_views_28d"] == 1.0 and u["support_contacts_28d"] == 1.0
    assert u["days_since_last_session"] == pytest.approx(0.5)
    assert u["days_since_last_in_app_event"] == pytest.approx(1.0)


def test_a_new_subscriber_is_rated_over_the_days_observed(history, day):
    h = history.install("n", 50).sub("n", 50, "trial_started", expires=57)
    h.sessions("n", 50, 56, 1)
    n = build_features(h.frame(), day(56)).loc[("n", "ios")]
    assert n["sessions_28d"] == 6.0
    assert n["session_rate_28d"] == pytest.approx(1.0)
    assert n["session_trend_7d_vs_28d"] == pytest.approx(0.0)
    assert pd.isna(n["session_trend_28d_vs_prior"])


def test_no_activity_means_zero_counts_and_missing_recency(history, day):
    h = history.sub("q", 0, "activation", expires=30)
    q = build_features(h.frame(), day(10)).loc[("q", "ios")]
    assert q["sessions_28d"] == 0.0 and q["active_days_28d"] == 0.0
    assert pd.isna(q["days_since_last_session"])


def test_windows_come_from_the_config_and_are_registered(falling, day):
    config = FeatureConfig(windows=(3, 10), trend_days=10)
    u = build_features(falling.frame(), day(56), config).loc[("u", "ios")]
    assert (u["sessions_3d"], u["sessions_10d"]) == (3.0, 10.0)
    assert u["session_trend_10d_vs_prior"] == pytest.approx(
        math.log(10.5 / 10) - math.log(10.5 / 10)
    )
    assert set(eng.feature_names(config)) <= set(u.index)
