"""History before ``as_of``: tenure, renewals, failed payments, cancellations, win-backs.

Counts come from the ordered subscription rows. A billing failure is counted once per episode
(grace, then retry or hold, is one failed charge); a win-back is a new period that starts after
access had ended, which also catches Android resubscriptions that arrive as a new ``activation``
chain (spec pitfall 5).
"""

from __future__ import annotations

import polars as pl

from features import schema as s
from features.registry import Feature
from features.state import (
    AUTO_RENEW_OFF_EVENTS,
    CHARGE_EVENTS,
    ENDING_EVENTS,
    FAILURE_EVENTS,
    PAUSE_EVENTS,
)
from features.timeline import SUBSCRIBER, days

_DESCRIBED: list[Feature] = []


def _feature(name: str, kind: str, description: str, reason: str) -> str:
    _DESCRIBED.append(Feature(name, "history", kind, description, reason))
    return name


TENURE = _feature(
    "tenure_days", "numeric", "Days since the first subscription event", "plan_and_tenure"
)
RENEWALS = _feature(
    "renewals",
    "numeric",
    "Successful renewals and conversions, recoveries included",
    "plan_and_tenure",
)
FAILED_RENEWALS = _feature(
    "failed_renewals",
    "numeric",
    "Payment failures (one per failure episode)",
    "subscription_history",
)
RECOVERIES = _feature(
    "billing_recoveries",
    "numeric",
    "Renewals after a billing problem was fixed",
    "subscription_history",
)
CANCELLATIONS = _feature(
    "past_cancellations",
    "numeric",
    "Times auto-renew was turned off (cancellations and declined price changes)",
    "subscription_history",
)
REACTIVATIONS = _feature(
    "reactivations",
    "numeric",
    "Reactivation events (iOS: resubscribed or auto-renew back on)",
    "subscription_history",
)
EXPIRATIONS = _feature(
    "past_expirations", "numeric", "Periods that ended without renewal", "subscription_history"
)
REFUNDS = _feature("refunds", "numeric", "Refunded or revoked purchases", "subscription_history")
WIN_BACKS = _feature(
    "win_backs",
    "numeric",
    "Times the subscriber came back after access had ended (any platform's way of reporting it)",
    "subscription_history",
)
PRICE_ACCEPTED = _feature(
    "price_changes_accepted",
    "numeric",
    "Price increases the subscriber consented to",
    "price_change",
)
PRICE_DECLINED = _feature(
    "price_changes_declined", "numeric", "Price increases the subscriber declined", "price_change"
)
OFFERS = _feature("discounted_offers", "numeric", "Discounted offers taken", "subscription_history")
HAD_TRIAL = _feature(
    "had_trial", "boolean", "Started with (or ever took) a free trial", "plan_and_tenure"
)
DAYS_SINCE_CANCELLATION = _feature(
    "days_since_last_cancellation",
    "numeric",
    "Days since auto-renew was last turned off (missing if never)",
    "subscription_history",
)


def history(subs: pl.DataFrame, t: int) -> pl.DataFrame:
    """Per subscriber (SUBSCRIBER): history features over the ordered subscription rows (all
    before ``t``)."""
    key = SUBSCRIBER
    ev = pl.col(s.EVENT)
    previous = pl.when(pl.col(key) == pl.col(key).shift(1)).then(ev.shift(1))
    counts = {
        RENEWALS: ev.is_in(("renewal", "renewal_from_billing_retry")),
        FAILED_RENEWALS: ev.is_in(FAILURE_EVENTS)
        & ~previous.is_in(FAILURE_EVENTS).fill_null(False),
        RECOVERIES: ev == "renewal_from_billing_retry",
        CANCELLATIONS: ev.is_in(AUTO_RENEW_OFF_EVENTS),
        REACTIVATIONS: ev == "reactivation",
        EXPIRATIONS: ev == "expiration",
        REFUNDS: ev.is_in(("refund", "revoked")),
        WIN_BACKS: ev.is_in(CHARGE_EVENTS)
        & previous.is_in(ENDING_EVENTS + PAUSE_EVENTS).fill_null(False),
        PRICE_ACCEPTED: ev == "price_accepted",
        PRICE_DECLINED: ev == "price_declined",
        OFFERS: ev == "discounted_offer",
    }
    marked = subs.with_columns(
        *(cond.cast(pl.Float64).alias(name) for name, cond in counts.items())
    )
    return marked.group_by(key).agg(
        days(pl.lit(t) - pl.col(s.TS).min()).alias(TENURE),
        *(pl.col(name).sum() for name in counts),
        (ev == "trial_started").any().cast(pl.Float64).alias(HAD_TRIAL),
        days(pl.lit(t) - pl.col(s.TS).filter(ev.is_in(AUTO_RENEW_OFF_EVENTS)).max()).alias(
            DAYS_SINCE_CANCELLATION
        ),
    )


FEATURES = (
    TENURE,
    RENEWALS,
    FAILED_RENEWALS,
    RECOVERIES,
    CANCELLATIONS,
    REACTIVATIONS,
    EXPIRATIONS,
    REFUNDS,
    WIN_BACKS,
    PRICE_ACCEPTED,
    PRICE_DECLINED,
    OFFERS,
    HAD_TRIAL,
    DAYS_SINCE_CANCELLATION,
)
#: Each column of FEATURES described, in the same order (what the registry reads).
DESCRIPTIONS: tuple[Feature, ...] = tuple({f.name: f for f in _DESCRIBED}[n] for n in FEATURES)
