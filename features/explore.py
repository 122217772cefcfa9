"""Exploring an event store: one subscriber's lifecycle, churn by segment, survival by cohort and
what the quarantine holds.

The frames the first notebook (``notebooks/01-explore.ipynb``) shows, kept here so they are
tested and a notebook holds no logic of its own. Entitlement and churn follow the label's own
rules (``features.labels.entitled_at``), so a survival curve and the churn label agree on who
lapsed and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import polars as pl

from base import LapseError
from features import schema as s
from features import state as st
from features.labels import entitled_at, observed_end
from features.timeline import (
    DEFAULT_CONFIG,
    MICROS_PER_DAY,
    Events,
    EventTable,
    FeatureConfig,
)

if TYPE_CHECKING:
    from lifelines import KaplanMeierFitter
    from matplotlib.figure import Figure

__all__ = [
    "ExploreError",
    "Timeline",
    "churn_by",
    "lifetimes",
    "plot_timeline",
    "quarantine_summary",
    "subscriber_timeline",
    "survival_curves",
]

#: Kind of each period a charge event opens (anything else is paid).
PERIOD_KINDS = {"trial_started": st.TRIAL, "discounted_offer": st.OFFER}
#: Columns of ``lifetimes``.
STARTED, COHORT, FIRST_PRODUCT, DURATION_DAYS, LAPSED = (
    "started",
    "cohort",
    "first_product",
    "duration_days",
    "lapsed",
)


class ExploreError(LapseError, ValueError):
    """An exploration asked of data that cannot answer it (an unknown subscriber or column)."""


# --- one subscriber's lifecycle ------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """One subscriber's lifecycle: the periods they were entitled (start, end, kind, product),
    their other subscription events (ts, event), and their daily sessions and in-app events."""

    user_id: str
    platform: str
    periods: pd.DataFrame
    marks: pd.DataFrame
    activity: pd.DataFrame


def subscriber_timeline(
    events: pd.DataFrame, user_id: str, platform: str | None = None
) -> Timeline:
    """The lifecycle of ``user_id`` (on ``platform``; needed only when the id has several) from
    canonical events. A period runs from its charge event to its expiry, cut short by a refund
    or revocation inside it; its kind is trial, offer or paid."""
    mine = events[events[s.USER_ID].astype(str) == str(user_id)]
    platforms = sorted(mine[s.PLATFORM].dropna().astype(str).unique())
    if not platforms:
        raise ExploreError(f"user_id {user_id!r}: no events for this subscriber")
    if platform is None:
        if len(platforms) > 1:
            raise ExploreError(
                f"user_id {user_id!r} is a subscriber on {', '.join(platforms)}: pass platform="
            )
        platform = platforms[0]
    elif platform not in platforms:
        raise ExploreError(
            f"user_id {user_id!r}: no events on platform {platform!r} "
            f"(found {', '.join(platforms)})"
        )
    mine = mine[mine[s.PLATFORM].astype(str) == platform].sort_values(s.TS, kind="stable")
    subs = mine[mine[s.KIND] == s.KIND_SUBSCRIPTION]
    charges = subs[subs[s.EVENT].isin(st.CHARGE_EVENTS)]
    ends = subs.loc[subs[s.EVENT].isin(("refund", "revoked")), s.TS]
    periods = pd.DataFrame(
        {
            "start": charges[s.TS].to_numpy(),
            "end": charges[s.EXPIRES_AT].to_numpy(),
            "kind": charges[s.EVENT].map(PERIOD_KINDS).fillna(st.PAID).to_numpy(),
            s.PRODUCT_ID: charges[s.PRODUCT_ID].astype(object).to_numpy(),
        }
    )
    for when in ends:  # access ends at a refund or revocation
        inside = (periods["start"] <= when) & (periods["end"] > when)
        periods.loc[inside, "end"] = when
    marks = subs.loc[~subs[s.EVENT].isin(st.CHARGE_EVENTS), [s.TS, s.EVENT]].reset_index(drop=True)
    used = mine[mine[s.KIND].isin((s.KIND_SESSION, s.KIND_EVENT))]
    activity = (
        used.assign(day=used[s.TS].dt.floor("D"))
        .groupby(["day", s.KIND], observed=True)
        .size()
        .unstack(s.KIND, fill_value=0)
        .reindex(columns=[s.KIND_SESSION, s.KIND_EVENT], fill_value=0)
    )
    activity.columns.name = None
    return Timeline(str(user_id), platform, periods, marks, activity)


#: Colour of each period kind in ``plot_timeline``.
PERIOD_COLOURS = {st.TRIAL: "#9ecae1", st.OFFER: "#fdae6b", st.PAID: "#31a354"}


def plot_timeline(timeline: Timeline) -> Figure:
    """A two-row figure: the entitled periods as bars (coloured by kind) with the other
    subscription events marked on them, and the daily sessions and in-app events below."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 4.5), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    for period in timeline.periods.itertuples(index=False):
        start = mdates.date2num(period.start)
        width = mdates.date2num(period.end) - start
        top.broken_barh([(start, width)], (0.05, 0.5), color=PERIOD_COLOURS[period.kind])
    for event, rows in timeline.marks.groupby(s.EVENT, observed=True):  # above the bars
        top.plot(rows[s.TS], np.full(len(rows), 0.8), "v", markersize=9, label=event)
    top.set_ylim(0, 1)
    top.set_yticks([])
    top.set_title(f"Subscriber {timeline.user_id} ({timeline.platform})")
    kinds = [Patch(color=c, label=k) for k, c in PERIOD_COLOURS.items()]
    handles = kinds + top.get_legend_handles_labels()[0]
    top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    days = timeline.activity.index
    bottom.bar(days, timeline.activity[s.KIND_SESSION], width=0.9, label="sessions")
    bottom.bar(
        days,
        timeline.activity[s.KIND_EVENT],
        width=0.9,
        bottom=timeline.activity[s.KIND_SESSION],
        label="in-app events",
    )
    bottom.set_ylabel("per day")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


# --- churn by segment ----------------------------------------------------------------------------


def churn_by(
    snapshots: pd.DataFrame, by: str, bins: list[float] | None = None, level: float = 0.95
) -> pd.DataFrame:
    """The churn rate of labelled snapshot rows per value of ``by`` (a column or an index
    level such as ``platform``), cut into ``bins`` when given: rows, churned, churn_rate and
    its Wilson interval. Rows without a label (horizon not over) are left out."""
    from scipy.stats import binomtest

    if s.CHURNED not in snapshots.columns:
        raise ExploreError(
            f"snapshots: no {s.CHURNED!r} column; build them with features.snapshots"
        )
    labelled = snapshots[snapshots[s.CHURNED].notna()]
    if by in labelled.columns:
        values = labelled[by]
    elif by in (labelled.index.names or []):
        values = labelled.index.get_level_values(by).to_series(index=labelled.index)
    else:
        known = ", ".join([*map(str, labelled.index.names), *map(str, labelled.columns)])
        raise ExploreError(f"by={by!r}: not a column or index level of the snapshots ({known})")
    if bins is not None:
        values = pd.cut(values.astype(float), bins=bins, right=False)
    churned = labelled[s.CHURNED].astype(bool)
    grouped = churned.groupby(values.to_numpy(), observed=True, dropna=False)
    table = pd.DataFrame({"rows": grouped.size(), "churned": grouped.sum()})
    table.index.name = by
    table = table[table["rows"] > 0]
    table["churn_rate"] = table["churned"] / table["rows"]
    intervals = [
        binomtest(int(k), int(n)).proportion_ci(level, method="wilson")
        for k, n in zip(table["churned"], table["rows"], strict=True)
    ]
    table["low"] = [ci.low for ci in intervals]
    table["high"] = [ci.high for ci in intervals]
    return table


# --- survival by cohort --------------------------------------------------------------------------


def lifetimes(
    events: Events,
    config: FeatureConfig = DEFAULT_CONFIG,
    observed_until: date | datetime | str | pd.Timestamp | None = None,
    step_days: float = 2.0,
) -> pd.DataFrame:
    """One row per subscriber (user_id, platform): when their first period started, its cohort
    (the month), its product, the days until they first lapsed (not entitled, by the label's
    rule, on a grid of ``step_days``) and whether they lapsed; those still entitled at the end
    of the data are censored there. The input of ``survival_curves``."""
    if step_days <= 0:
        raise ExploreError(f"step_days: expected > 0, got {step_days}")
    end = observed_end(EventTable(events, config), observed_until)
    # entitlement reads only the subscription rows: a table of those alone is far cheaper to
    # cut at each step than the whole store
    kinds = events[s.KIND]
    if isinstance(events, pd.DataFrame):
        table = EventTable(events[(kinds == s.KIND_SUBSCRIPTION).to_numpy()], config)
    else:
        import pyarrow.compute as pc

        table = EventTable(events.filter(pc.equal(kinds, s.KIND_SUBSCRIPTION)), config)
    key = list(s.SUBSCRIBER_INDEX)
    subs = table.lifecycle(end).filter(pl.col(s.KIND) == s.KIND_SUBSCRIPTION)
    firsts = (
        subs.filter(pl.col(s.EVENT).is_in(st.START_EVENTS))
        .group_by(key, maintain_order=True)
        .first()
        .select(*key, pl.col(s.TS).alias(STARTED), pl.col(s.PRODUCT_ID).alias(FIRST_PRODUCT))
    )
    last = end - st.leeway_micros(config)  # entitlement later than this is not yet known
    step = round(step_days * MICROS_PER_DAY)
    lapsed_at = firsts.select(*key).with_columns(pl.lit(None, dtype=pl.Int64).alias("_lapsed"))
    if len(firsts):
        first_start = int(firsts[STARTED].min())
        for t in range(first_start + step, last + 1, step):
            # subscribers started before t, not entitled at t, not yet known to have lapsed
            started = firsts.filter(pl.col(STARTED) < t).select(key)
            gone = started.join(entitled_at(table, t, config), on=key, how="anti")
            gone = gone.with_columns(pl.lit(t, dtype=pl.Int64).alias("_now"))
            lapsed_at = (
                lapsed_at.join(gone, on=key, how="left")
                .with_columns(pl.coalesce("_lapsed", "_now").alias("_lapsed"))
                .drop("_now")
            )
    out = firsts.join(lapsed_at, on=key, how="left").with_columns(
        pl.col("_lapsed").is_not_null().alias(LAPSED),
        ((pl.coalesce("_lapsed", pl.lit(last)) - pl.col(STARTED)) / MICROS_PER_DAY).alias(
            DURATION_DAYS
        ),
    )
    frame = out.select(*key, STARTED, FIRST_PRODUCT, DURATION_DAYS, LAPSED).to_pandas()
    frame[STARTED] = pd.to_datetime(frame[STARTED], unit="us", utc=True)
    frame.insert(3, COHORT, frame[STARTED].dt.strftime("%Y-%m"))
    frame = frame[frame[DURATION_DAYS] >= 0]  # started after the last knowable day
    return frame.set_index(key).sort_index()


def survival_curves(
    lives: pd.DataFrame, by: str, min_subscribers: int = 20
) -> dict[str, KaplanMeierFitter]:
    """A Kaplan-Meier estimate (lifelines) of the days a subscriber stays, per value of ``by``
    (a ``lifetimes`` column or index level, e.g. cohort, first_product, platform); groups with
    fewer than ``min_subscribers`` are left out, as their curve would mostly be noise."""
    from lifelines import KaplanMeierFitter

    frame = lives.reset_index()
    if by not in frame.columns:
        raise ExploreError(f"by={by!r}: not a column of the lifetimes ({', '.join(frame.columns)})")
    curves = {}
    for value, group in frame.groupby(by, observed=True, sort=True):
        if len(group) < min_subscribers:
            continue
        fitter = KaplanMeierFitter(label=str(value))
        curves[str(value)] = fitter.fit(group[DURATION_DAYS], group[LAPSED])
    return curves


# --- the quarantine ------------------------------------------------------------------------------


def quarantine_summary(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Why rows landed in the quarantine (``features.load_quarantine``): per reason the rows,
    the files they came from, and one example's detail and raw text, most rows first."""
    missing = [c for c in (s.REASON, s.SOURCE, s.RAW) if c not in quarantine.columns]
    if missing:
        raise ExploreError(f"quarantine: missing column(s) {', '.join(missing)}")
    grouped = quarantine.groupby(s.REASON, observed=True, sort=False)
    detail = s.DETAIL if s.DETAIL in quarantine.columns else None
    table = pd.DataFrame(
        {
            "rows": grouped.size(),
            "files": grouped[s.SOURCE].nunique(),
            "example_detail": grouped[detail].first() if detail else None,
            "example_raw": grouped[s.RAW].first(),
        }
    )
    table["share"] = table["rows"] / max(len(quarantine), 1)
    return table.sort_values(["rows"], ascending=False, kind="stable")
