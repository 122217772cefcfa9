"""Engagement windows, trends and recency on hand-built activity with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features import FeatureConfig, build_features
from features import engagement as eng
from features import schema as s
from features.timeline import EventTable, to_micros


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


@pytest.mark.parametrize("windows", [(7, 28), (7, 90)])  # active days by bit mask / by DISTINCT
def test_activity_is_counted_per_subscriber_across_its_event_names(history, day, windows):
    """The pass groups by subscriber and event name first: totals over names, each name's own
    counts, paywall views among the chosen names, and both platforms of one user kept apart."""
    h = history.sessions("u", 50, 56, 2).sessions("u", 20, 22, 1, platform="android")
    for when in (40.5, 54.5, 55.5):
        h.add("u", when, s.KIND_EVENT, "like")
    h.add("u", 53.5, s.KIND_EVENT, "paywall_viewed").add("u", 10.5, s.KIND_EVENT, "post")
    h.add("v", 55.0, s.KIND_EVENT, "like")  # in-app events, no session
    h.add("u", 56.5, s.KIND_EVENT, "like")  # at or after the cut-off: never counted
    config = FeatureConfig(
        windows=windows, trend_days=28, app_events_chosen=("like", "paywall_viewed")
    )
    table = EventTable(h.frame(), config)
    t = to_micros(day(56))
    found = eng.activity_counts(table, t, config).sort(list(s.SUBSCRIBER_INDEX))
    rows = {(r[s.USER_ID], r[s.PLATFORM]): r for r in found.to_dicts()}
    u, android, v = rows[("u", "ios")], rows[("u", "android")], rows[("v", "ios")]
    longest = windows[1]
    assert (u["sessions_7d"], u[f"sessions_{longest}d"], u[f"active_days_{longest}d"]) == (
        12.0,
        12.0,
        6.0,
    )
    assert u["in_app_events_7d"] == 3.0 and u[f"in_app_events_{longest}d"] == 4.0 + (longest > 45)
    assert (u["app_like_7d"], u[f"app_like_{longest}d"]) == (2.0, 3.0)
    assert u[f"paywall_views_{longest}d"] == u[f"app_paywall_viewed_{longest}d"] == 1.0
    assert u["_last_app_like"] == to_micros(day(55.5))
    assert u["_last_event"] == to_micros(day(55.5)) and u["_last_session"] < t
    assert android[f"active_days_{longest}d"] == (2.0 if longest > 36 else 0.0)
    assert android["sessions_7d"] == 0.0 and android["_last_event"] is None
    assert v["sessions_7d"] == 0.0 and v[f"active_days_{longest}d"] == 0.0
    assert v["_last_session"] is None and v["app_like_7d"] == 1.0
    # without per-name features (only paywall and support names told apart): the same totals
    plain = FeatureConfig(windows=windows, trend_days=28, app_events_top=0)
    alone = eng.activity_counts(EventTable(h.frame(), plain), t, plain).sort(
        ["user_id", "platform"]
    )
    assert alone.equals(found.select(alone.columns))
