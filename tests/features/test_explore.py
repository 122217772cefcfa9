"""features.explore on hand-built events: one subscriber's periods and marks, churn rates by
segment with their intervals, lifetimes that agree with the label's entitlement rule, Kaplan-Meier
curves per cohort, and the quarantine's reasons."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from features import explore
from features import schema as s
from tests.features.conftest import History, day

matplotlib.use("Agg")


def _lifecycle() -> History:
    """u1: a trial, two paid months, a cancellation, then the expiry on day 67;
    u2: a paid month refunded on day 10; u3: on a paid month renewed to day 100 (still in).
    u1 also uses the app: sessions on days 0-3 and an in-app event on day 1."""
    h = History()
    h.sub("u1", 0, "trial_started", expires=7, product_id="monthly")
    h.sub("u1", 7, "activation", expires=37, product_id="monthly")
    h.sub("u1", 37, "renewal", expires=67, product_id="monthly")
    h.sub("u1", 50, "cancellation")
    h.sub("u1", 67, "expiration")
    h.sessions("u1", 0, 4, per_day=2)
    h.add("u1", 1.5, s.KIND_EVENT, "workout")
    h.sub("u2", 2, "activation", expires=32, product_id="monthly")
    h.sub("u2", 10, "refund")
    h.sub("u3", 40, "activation", expires=70, product_id="annual", platform="android")
    h.sub("u3", 70, "renewal", expires=100, product_id="annual", platform="android")
    return h


def test_a_timeline_has_the_periods_their_kinds_and_the_other_events() -> None:
    timeline = explore.subscriber_timeline(_lifecycle().frame(), "u1")
    assert timeline.platform == "ios"
    assert timeline.periods["kind"].tolist() == ["trial", "paid", "paid"]
    assert timeline.periods["start"].tolist() == [day(0), day(7), day(37)]
    assert timeline.periods["end"].tolist() == [day(7), day(37), day(67)]
    assert timeline.marks[s.EVENT].tolist() == ["cancellation", "expiration"]
    assert timeline.activity[s.KIND_SESSION].tolist() == [2, 2, 2, 2]
    assert timeline.activity[s.KIND_EVENT].tolist() == [0, 1, 0, 0]


def test_a_refund_ends_the_period_it_falls_in() -> None:
    timeline = explore.subscriber_timeline(_lifecycle().frame(), "u2")
    assert timeline.periods["end"].tolist() == [day(10)]
    assert timeline.marks[s.EVENT].tolist() == ["refund"]
    assert timeline.activity.empty


def test_a_timeline_names_what_it_cannot_find() -> None:
    events = _lifecycle().sub("u3", 5, "activation", expires=35).frame()  # u3 on ios too
    with pytest.raises(explore.ExploreError, match="no events for this subscriber"):
        explore.subscriber_timeline(events, "nobody")
    with pytest.raises(explore.ExploreError, match="subscriber on android, ios: pass platform="):
        explore.subscriber_timeline(events, "u3")
    with pytest.raises(explore.ExploreError, match="no events on platform 'web'"):
        explore.subscriber_timeline(events, "u3", "web")
    assert len(explore.subscriber_timeline(events, "u3", "android").periods) == 2


def test_the_timeline_plot_draws_one_bar_per_period_and_the_daily_activity() -> None:
    import matplotlib.pyplot as plt

    timeline = explore.subscriber_timeline(_lifecycle().frame(), "u1")
    figure = explore.plot_timeline(timeline)
    top, bottom = figure.axes
    assert len(top.collections) == 3  # one broken_barh per period
    assert len(bottom.patches) == 2 * 4  # sessions and events, stacked, per active day
    assert "u1" in top.get_title()
    plt.close(figure)


def _snapshots() -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples(
        [(pd.Timestamp("2026-02-01", tz="UTC"), f"u{i}", "ios" if i < 6 else "android")
         for i in range(10)],
        names=list(s.SNAPSHOT_INDEX),
    )  # fmt: skip
    return pd.DataFrame(
        {
            s.PRODUCT_ID: ["m"] * 5 + ["a"] * 5,
            "tenure_days": [1, 5, 10, 40, 80, 2, 20, 35, 70, 90],
            s.CHURNED: pd.array(
                [True, True, False, False, None, True, False, False, False, True], "boolean"
            ),
        },
        index=index,
    )


def test_churn_by_a_column_or_an_index_level_leaves_unlabelled_rows_out() -> None:
    by_product = explore.churn_by(_snapshots(), s.PRODUCT_ID)
    assert by_product.loc["m", ["rows", "churned"]].tolist() == [4, 2]  # u4 has no label
    assert by_product.loc["a", "churn_rate"] == pytest.approx(2 / 5)
    by_platform = explore.churn_by(_snapshots(), s.PLATFORM)
    assert by_platform["rows"].to_dict() == {"android": 4, "ios": 5}
    assert by_platform.loc["ios", "churned"] == 3
    # the Wilson interval of 3 out of 5 (scipy's, checked against the closed form)
    z = 1.959963984540054
    centre = (0.6 + z * z / 10) / (1 + z * z / 5)
    half = z / (1 + z * z / 5) * np.sqrt(0.6 * 0.4 / 5 + z * z / 100)
    assert by_platform.loc["ios", ["low", "high"]].tolist() == pytest.approx(
        [centre - half, centre + half]
    )


def test_churn_by_bins_a_numeric_column_and_names_an_unknown_one() -> None:
    table = explore.churn_by(_snapshots(), "tenure_days", bins=[0, 7, 30, 365])
    assert table["rows"].tolist() == [3, 2, 4]
    assert table["churned"].tolist() == [3, 0, 1]
    with pytest.raises(explore.ExploreError, match="by='plan': not a column or index level"):
        explore.churn_by(_snapshots(), "plan")
    with pytest.raises(explore.ExploreError, match="no 'churned' column"):
        explore.churn_by(_snapshots().drop(columns=s.CHURNED), s.PRODUCT_ID)


def test_lifetimes_lapse_where_entitlement_ends_and_censor_the_rest() -> None:
    h = _lifecycle()
    h.add("u3", 110, s.KIND_SESSION, s.KIND_SESSION, platform="android")  # the data ends on 110
    lives = explore.lifetimes(h.frame(), step_days=1)
    u1, u2, u3 = (lives.loc[key] for key in [("u1", "ios"), ("u2", "ios"), ("u3", "android")])
    assert u1[explore.COHORT] == "2026-01" and u1[explore.FIRST_PRODUCT] == "monthly"
    # the first day not entitled: an expiry at day 67 is not entitled at day 67
    assert bool(u1[explore.LAPSED]) and u1[explore.DURATION_DAYS] == 67
    # refunded during day 10: still entitled by the events before day 10, not at day 11
    assert bool(u2[explore.LAPSED]) and u2[explore.DURATION_DAYS] == 9
    # u3 lapses on day 100 (the data ends on 110, less the 24-hour leeway: known up to 109)
    assert bool(u3[explore.LAPSED]) and u3[explore.DURATION_DAYS] == 60
    censored = explore.lifetimes(h.frame(), observed_until=day(90), step_days=1)
    assert not censored.loc[("u3", "android"), explore.LAPSED]
    assert censored.loc[("u3", "android"), explore.DURATION_DAYS] == pytest.approx(49)
    with pytest.raises(explore.ExploreError, match="step_days: expected > 0"):
        explore.lifetimes(h.frame(), step_days=0)


def test_survival_curves_are_kaplan_meier_per_group() -> None:
    lives = pd.DataFrame(
        {
            explore.COHORT: ["a"] * 4 + ["b"] * 2,
            explore.DURATION_DAYS: [10.0, 20.0, 30.0, 40.0, 5.0, 6.0],
            explore.LAPSED: [True, False, True, False, True, True],
        }
    )
    curves = explore.survival_curves(lives, explore.COHORT, min_subscribers=3)
    assert list(curves) == ["a"]  # b has two subscribers
    # 4 at risk: a lapse at 10 (3/4), one censored at 20, a lapse at 30 of 2 at risk (x 1/2)
    assert curves["a"].survival_function_at_times([15, 35]).tolist() == pytest.approx([0.75, 0.375])
    with pytest.raises(explore.ExploreError, match="by='plan': not a column"):
        explore.survival_curves(lives, "plan")


def test_the_quarantine_summary_counts_reasons_with_an_example() -> None:
    quarantine = pd.DataFrame(
        {
            s.SOURCE: ["a.csv", "a.csv", "b.csv", "b.csv"],
            s.LINE: [2, 3, 2, 9],
            s.REASON: ["bad_timestamp", "unknown_event", "bad_timestamp", "bad_timestamp"],
            s.RAW: ["x,yesterday", "y,dance", "z,soon", "w,never"],
            s.DETAIL: ["created_at='yesterday'", "event='dance'", "created_at='soon'", None],
        }
    )
    table = explore.quarantine_summary(quarantine)
    assert table.index.tolist() == ["bad_timestamp", "unknown_event"]
    assert table["rows"].tolist() == [3, 1]
    assert table["files"].tolist() == [2, 1]
    assert table.loc["bad_timestamp", "example_raw"] == "x,yesterday"
    assert table.loc["bad_timestamp", "example_detail"] == "created_at='yesterday'"
    assert table["share"].tolist() == [0.75, 0.25]
    with pytest.raises(explore.ExploreError, match="missing column"):
        explore.quarantine_summary(quarantine.drop(columns=s.RAW))
