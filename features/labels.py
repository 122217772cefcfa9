"""The churn label (DESIGN.md): an active subscriber at ``as_of`` churns when not entitled at
``as_of + horizon``.

Entitlement at the horizon's end is decided by the same state machine as activity at ``as_of``
(``state.state_at``), on the events before that moment: a renewal, recovery or win-back before
then counts, a trial that ended without converting is churn, a refund or revocation ends access
at once, and grace, billing retry and account hold still count as entitled (the subscriber can
recover). A renewal, recovery or reactivation delivered within ``config.renewal_leeway_hours``
of the expiry it continues keeps entitlement continuous (``entitled_at``), so the label looks
that far past the horizon. Sandbox rows are left out. A label exists only where the whole
horizon (and the leeway after it) is observed: the horizon plus leeway must end by
``observed_until``, which defaults to the latest event time in
``events`` (pass the store's own end when the events are a slice of it).
"""

from __future__ import annotations

import pandas as pd
import polars as pl

from features import schema as s
from features import state as st
from features.build import AsOf, active_state
from features.timeline import (
    DEFAULT_CONFIG,
    MICROS_PER_DAY,
    Events,
    EventTable,
    FeatureConfig,
    FeatureInputError,
    to_micros,
)


def observed_end(table: EventTable, observed_until: AsOf | None) -> int:
    """Epoch microseconds up to which the store is complete: the argument, else the last event."""
    if observed_until is not None:
        return to_micros(observed_until)
    last = table.last_ts()
    return -(2**62) if last is None else int(last)


def entitled_at(table: EventTable, end: int, config: FeatureConfig) -> pl.DataFrame:
    """(user_id, platform) of every subscriber entitled at ``end``: by the events before it
    (``state.state_at``'s strict test), or by a renewal, recovery or reactivation delivered
    after ``end`` but within the leeway of the expiry it continues (read from the events up
    to ``end`` + leeway; a refund or revocation before ``end`` is not continued)."""
    key = list(s.SUBSCRIBER_INDEX)
    leeway = st.leeway_micros(config)
    rows = table.lifecycle(end + leeway).filter(pl.col(s.KIND) == s.KIND_SUBSCRIPTION)
    before = rows.filter(pl.col(s.TS) < end)
    state = st.state_at(before, end, config)
    strict = state.filter(pl.col(st.ENTITLED)).select(key)
    if leeway <= 0:
        return strict
    # the latest expiry any row before ``end`` announced, and whether access was taken back
    lapsed = before.group_by(key).agg(
        pl.col(s.EXPIRES_AT).max().alias("_previous_expiry"),
        pl.col(s.EVENT).last().is_in(("refund", "revoked")).alias("_taken_back"),
    )
    continued = (
        rows.filter(
            (pl.col(s.TS) >= end)
            & pl.col(s.EVENT).is_in(st.CHARGE_EVENTS)
            & (pl.col(s.EXPIRES_AT) > end)
        )
        .join(lapsed, on=key, how="inner")
        .filter(
            ~pl.col("_taken_back")
            & (pl.col("_previous_expiry") <= end)
            & (pl.col(s.TS) <= pl.col("_previous_expiry") + leeway)
        )
        .select(key)
        .unique()
    )
    return pl.concat([strict, continued]).unique()


def observed_by(t: int, horizon_days: int, config: FeatureConfig) -> int:
    """Epoch microseconds by which the labels of cut-off ``t`` are complete: the horizon and
    the renewal leeway after it; a store observed until then (or later) can label ``t``."""
    return t + horizon_days * MICROS_PER_DAY + st.leeway_micros(config)


def labels_at(
    table: EventTable, t: int, horizon_days: int, config: FeatureConfig, observed_until: int
) -> pl.DataFrame:
    """(user_id, platform, churned) for subscribers active at ``t``; empty unless the horizon
    and the renewal leeway after it are observed."""
    if horizon_days < 1:
        raise FeatureInputError(f"horizon_days: expected >= 1, got {horizon_days}")
    key = list(s.SUBSCRIBER_INDEX)
    end = t + horizon_days * MICROS_PER_DAY
    active = active_state(table, t, config).select(key)
    if observed_by(t, horizon_days, config) > observed_until:
        return active.head(0).with_columns(pl.lit(None, dtype=pl.Boolean).alias(s.CHURNED))
    later = entitled_at(table, end, config).with_columns(pl.lit(True).alias(st.ENTITLED))
    return (
        active.join(later, on=key, how="left")
        .select(*key, (~pl.col(st.ENTITLED).fill_null(False)).alias(s.CHURNED))
        .sort(key)
    )


def to_series(frame: pl.DataFrame) -> pd.Series:
    """The polars label frame as a nullable-boolean Series named CHURNED."""
    out = frame.to_pandas().set_index(list(s.SUBSCRIBER_INDEX))[s.CHURNED]
    return out.astype("boolean").rename(s.CHURNED)


def churn_labels(
    events: Events,
    as_of: AsOf,
    horizon_days: int = 30,
    config: FeatureConfig = DEFAULT_CONFIG,
    observed_until: AsOf | None = None,
) -> pd.Series:
    """Churned (True/False) for each subscriber active at ``as_of``, indexed by (user_id, platform).

    Empty when ``as_of + horizon_days`` is after ``observed_until`` (default: the latest event
    time in ``events``): a label is never guessed from a horizon not yet over.
    """
    table = EventTable(events, config)
    end = observed_end(table, observed_until)
    return to_series(labels_at(table, to_micros(as_of), horizon_days, config, end))
