"""The app's own in-app events as features: chosen at training, kept in the definition."""

from __future__ import annotations

import math

import pytest

from features import schema as s
from features.build import build_features, feature_registry
from features.engagement import choose_app_events
from features.settings import FeatureConfig
from features.timeline import EventTable, to_micros


@pytest.fixture
def app(history):
    """Two subscribers and a non-subscriber; the store ends on day 60."""
    h = history
    h.sub("a", 1, "activation", expires=90).sub("b", 1, "activation", expires=90)
    for d in range(30, 60):  # a: 'like' daily over the last 30 days, 'post' on 3 of the last 7
        h.add("a", d + 0.5, s.KIND_EVENT, "like")
    for d in (53, 55, 57):
        h.add("a", d + 0.5, s.KIND_EVENT, "post")
    h.add("b", 20.5, s.KIND_EVENT, "like")  # b: one like, 39.5 days before the cut-off
    for d in range(40):  # a non-subscriber's many 'spam' events never make the list
        h.add("x", d + 0.5, s.KIND_EVENT, "spam").add("x", d + 0.6, s.KIND_EVENT, "spam")
    h.install("a", 0).install("b", 0)
    return h.frame()


def test_the_most_frequent_subscriber_events_are_chosen(app, day):
    table = EventTable(app, FeatureConfig())
    t = to_micros(day(60))
    assert choose_app_events(table, t, FeatureConfig()) == ("like", "post")
    assert choose_app_events(table, t, FeatureConfig(app_events_top=1)) == ("like",)
    listed = FeatureConfig(app_events_top=1, app_events=("Post Created!",))
    assert choose_app_events(table, t, listed) == ("Post Created!", "like")
    assert FeatureConfig(app_events_top=0, app_events=("post",)).app_event_names == ("post",)


def test_per_event_counts_rates_trends_recency_and_shares(app, day):
    config = FeatureConfig(app_events_chosen=("like", "post"))
    f = build_features(app, day(60), config)
    a, b = f.loc[("a", "ios")], f.loc[("b", "ios")]
    assert (a["app_like_7d"], a["app_like_14d"], a["app_like_28d"]) == (7, 14, 28)
    assert a["app_post_7d"] == 3 and a["app_post_28d"] == 3
    assert a["app_like_rate_28d"] == pytest.approx(1.0)
    assert a["app_post_share_28d"] == pytest.approx(3 / 31)
    assert a["app_like_share_28d"] == pytest.approx(28 / 31)
    assert a["app_like_days_since_last"] == pytest.approx(0.5)
    assert a["app_post_days_since_last"] == pytest.approx(2.5)
    # trend: log rate over 7 days minus over 28 days (0.5 added to counts)
    assert a["app_post_trend_7d_vs_28d"] == pytest.approx(math.log(3.5 / 7) - math.log(3.5 / 28))
    assert b["app_like_28d"] == 0 and b["app_like_days_since_last"] == pytest.approx(39.5)
    assert math.isnan(b["app_like_share_28d"])  # no in-app event at all in the window


def test_the_registry_describes_them_under_the_configured_reason():
    config = FeatureConfig(app_events_chosen=("like",), app_events_reason="context")
    registry = feature_registry(config)
    like = [f for f in registry.values() if f.name.startswith("app_like_")]
    assert len(like) == 3 + 4 and {f.reason for f in like} == {"context"}
    assert "app_like_7d" not in feature_registry(FeatureConfig())
    with pytest.raises(ValueError, match="app_events_reason"):
        FeatureConfig(app_events_reason="nonsense")
