"""Subscription state at a point in time: who is entitled, in which kind of period, until when.

The state follows spec §a (state after each event) and its pitfalls: events are ordered by time,
access comes from the latest expiry of the running period (not from the last row received), a
refund or revocation ends access at once, a cancellation alone only turns auto-renew off, and a
billing failure (grace, retry, Android hold) keeps the subscriber active until it recovers or
expires. The same function decides who is active at ``as_of`` and who is still entitled at
``as_of + horizon`` for the label.
"""

from __future__ import annotations

import polars as pl

from features import schema as s
from features.registry import Feature
from features.timeline import SUBSCRIBER, FeatureConfig, days

MICROS_PER_HOUR = 3_600 * 1_000_000


def leeway_micros(config: FeatureConfig) -> int:
    """The renewal leeway of ``config`` in epoch microseconds."""
    return round(config.renewal_leeway_hours * MICROS_PER_HOUR)


START_EVENTS = ("activation", "trial_started", "discounted_offer")
#: Events that open or extend a paid/trial period (and so mean auto-renew is on).
CHARGE_EVENTS = (*START_EVENTS, "renewal", "renewal_from_billing_retry", "reactivation")
FAILURE_EVENTS = ("grace_period", "billing_retry", "on_hold")
ENDING_EVENTS = ("expiration", "refund", "revoked")
PAUSE_EVENTS = ("paused",)
AUTO_RENEW_OFF_EVENTS = ("cancellation", "price_declined")
assert set(
    CHARGE_EVENTS + FAILURE_EVENTS + ENDING_EVENTS + PAUSE_EVENTS + AUTO_RENEW_OFF_EVENTS
) <= set(s.CURRENT_EVENTS)

#: ``status`` values of an active subscriber.
TRIAL, OFFER, PAID = "trial", "offer", "paid"
_PERIOD_KIND = {"trial_started": TRIAL, "discounted_offer": OFFER}


_DESCRIBED: list[Feature] = []


def _feature(name: str, kind: str, description: str, reason: str) -> str:
    _DESCRIBED.append(Feature(name, "state", kind, description, reason))
    return name


STATUS = _feature(
    "status",
    "categorical",
    "Where the subscriber stands: trial, offer, paid, grace_period, billing_retry or on_hold",
    "plan_and_tenure",
)
PRODUCT = _feature(
    "product_id", "categorical", "Store product of the running period", "plan_and_tenure"
)
STORE = _feature("store", "categorical", "App store billing the subscription", "context")
CURRENCY = _feature("currency", "categorical", "Currency of the last price paid", "context")
PRICE = _feature(
    "price", "numeric", "Last price paid, in its currency (trials excluded)", "plan_and_tenure"
)
PERIOD_DAYS = _feature(
    "period_days", "numeric", "Length of the running (or last) period in days", "plan_and_tenure"
)
IN_TRIAL = _feature("in_trial", "boolean", "The running period is a free trial", "trial_ending")
IN_OFFER = _feature(
    "in_offer", "boolean", "The running period is a discounted offer", "trial_ending"
)
TRIAL_OR_OFFER_DAYS_LEFT = _feature(
    "trial_or_offer_days_left",
    "numeric",
    "Days until a trial or discounted offer ends (missing when on full price)",
    "trial_ending",
)
AUTO_RENEW_OFF = _feature(
    "auto_renew_off",
    "boolean",
    "Auto-renew is off: cancelled or declined a price change since the last charge",
    "auto_renew_off",
)
DAYS_SINCE_AUTO_RENEW_OFF = _feature(
    "days_since_auto_renew_off",
    "numeric",
    "Days since auto-renew was turned off (missing when it is on)",
    "auto_renew_off",
)
PRICE_DECLINED_PENDING = _feature(
    "price_declined_pending",
    "boolean",
    "Declined a price increase and has not been charged since",
    "price_change",
)
DAYS_TO_EXPIRY = _feature(
    "days_to_expiry",
    "numeric",
    "Days until the paid or trial period ends (negative: days since it ended, in billing trouble "
    "or awaiting a renewal within the leeway)",
    "plan_and_tenure",
)
DAYS_SINCE_CHARGE = _feature(
    "days_since_period_start",
    "numeric",
    "Days since the running period started (last purchase, renewal or recovery)",
    "plan_and_tenure",
)
IN_GRACE = _feature(
    "in_grace_period", "boolean", "Payment failed; in the store's grace period", "billing_trouble"
)
IN_RETRY = _feature(
    "in_billing_retry", "boolean", "Payment failed; in billing retry (iOS)", "billing_trouble"
)
ON_HOLD = _feature("on_hold", "boolean", "Payment failed; Android account hold", "billing_trouble")
BILLING_TROUBLE_DAYS = _feature(
    "billing_trouble_days",
    "numeric",
    "Days since the running payment failure began (0 when payments are fine)",
    "billing_trouble",
)

# Internal state columns (not features).
ACTIVE = "_active"
ENTITLED = "_entitled"
LAST_EVENT = "_last_event"
EXPIRY = "_expiry"


def state_at(subs: pl.DataFrame, t: int, config: FeatureConfig) -> pl.DataFrame:
    """Per subscriber with any subscription row before ``t``: status, activity and state features.

    ``subs`` are ordered subscription rows (``timeline.ordered``), all before ``t``; the result
    is keyed by SUBSCRIBER and carries user_id and platform.
    ``_active`` follows DESIGN.md: in a trial, offer or paid period whose expiry is after ``t``
    minus the renewal leeway (``config.renewal_leeway_hours``: a renewal delivered late is not
    yet seen), or in grace, billing retry or account hold. ``_entitled`` is the strict test at
    ``t`` (expiry after ``t``); the label adds the late renewals it can see (``labels``).
    """
    key = SUBSCRIBER
    ev = pl.col(s.EVENT)
    is_end = ev.is_in(ENDING_EVENTS + PAUSE_EVENTS)
    is_charge = ev.is_in(CHARGE_EVENTS)
    is_failure = ev.is_in(FAILURE_EVENTS)
    is_off = ev.is_in(AUTO_RENEW_OFF_EVENTS)
    never = pl.lit(None, dtype=pl.Int64)

    # rows after the subscriber's last ending event make up the running chain of periods
    marked = subs.with_columns(
        pl.when(is_end).then(pl.col(s.TS)).otherwise(never).max().over(key).alias("_last_end"),
        pl.when(~is_failure).then(pl.col(s.TS)).otherwise(never).max().over(key).alias("_last_ok"),
    )
    running = pl.col("_last_end").is_null() | (pl.col(s.TS) > pl.col("_last_end"))
    charge_ts = pl.when(is_charge).then(pl.col(s.TS))
    per_sub = marked.group_by(key).agg(
        pl.col(s.USER_ID).first(),
        pl.col(s.PLATFORM).first(),
        ev.last().alias(LAST_EVENT),
        pl.col(s.TS).last().alias("_last_ts"),
        pl.col(s.EXPIRES_AT).filter(running).max().alias(EXPIRY),
        charge_ts.max().alias("_charge_ts"),
        pl.col(s.EVENT).filter(is_charge).last().alias("_charge_event"),
        pl.col(s.PRICE).filter(is_charge & (pl.col(s.PRICE) > 0)).last().alias(PRICE),
        pl.col(s.CURRENCY).filter(is_charge & (pl.col(s.PRICE) > 0)).last().alias(CURRENCY),
        pl.col(s.PRODUCT_ID).drop_nulls().last().alias(PRODUCT),
        pl.col(s.STORE).drop_nulls().last().alias(STORE),
        pl.col(s.TS).filter(is_off).max().alias("_off_ts"),
        ev.filter(is_off).last().alias("_off_event"),
        pl.col(s.TS)
        .filter(is_failure & (pl.col(s.TS) > pl.col("_last_ok").fill_null(-1)))
        .min()
        .alias("_trouble_start"),
    )

    last = pl.col(LAST_EVENT)
    in_trouble = last.is_in(FAILURE_EVENTS) & (
        days(pl.lit(t) - pl.col("_last_ts")) <= config.max_retry_days
    )
    ended = last.is_in(ENDING_EVENTS + PAUSE_EVENTS)
    open_period = ~ended & ~last.is_in(FAILURE_EVENTS)
    off = pl.col("_off_ts").is_not_null() & (
        pl.col("_charge_ts").is_null() | (pl.col("_off_ts") > pl.col("_charge_ts"))
    )
    # a period that ended less than the leeway ago, with no ending row and auto-renew on, is a
    # renewal not yet delivered: still active (the label decides later whether it came); with
    # auto-renew off no renewal is coming, so the period ends at its expiry
    leeway = leeway_micros(config)
    # (up to the leeway inclusive: a renewal delivered exactly then still continues the period)
    awaiting = (pl.col(EXPIRY) >= t - leeway) & ~off if leeway > 0 else pl.lit(False)
    recent_enough = (pl.col(EXPIRY) > t) | awaiting
    entitled_period = open_period & recent_enough
    active = (in_trouble | entitled_period).fill_null(False)
    entitled = (in_trouble | (open_period & (pl.col(EXPIRY) > t))).fill_null(False)
    kind = pl.col("_charge_event").replace_strict(
        _PERIOD_KIND, default=PAID, return_dtype=pl.String
    )
    status = (
        pl.when(in_trouble)
        .then(last)
        .when(entitled_period)
        .then(kind)
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    # period length: from the last charge to the expiry it set (trial 7, monthly 30, annual 365)
    period = days(pl.col(EXPIRY) - pl.col("_charge_ts"))
    return per_sub.with_columns(
        active.alias(ACTIVE),
        entitled.alias(ENTITLED),
        status.alias(STATUS),
        (kind == TRIAL).cast(pl.Float64).alias(IN_TRIAL),
        (kind == OFFER).cast(pl.Float64).alias(IN_OFFER),
        pl.when(kind != PAID)
        .then(days(pl.col(EXPIRY) - t))
        .otherwise(None)
        .alias(TRIAL_OR_OFFER_DAYS_LEFT),
        off.cast(pl.Float64).alias(AUTO_RENEW_OFF),
        pl.when(off).then(days(pl.lit(t) - pl.col("_off_ts"))).alias(DAYS_SINCE_AUTO_RENEW_OFF),
        (off & (pl.col("_off_event") == "price_declined"))
        .cast(pl.Float64)
        .alias(PRICE_DECLINED_PENDING),
        days(pl.col(EXPIRY) - t).alias(DAYS_TO_EXPIRY),
        days(pl.lit(t) - pl.col("_charge_ts")).alias(DAYS_SINCE_CHARGE),
        pl.when(period > 0).then(period.round(0)).alias(PERIOD_DAYS),
        (in_trouble & (last == "grace_period")).fill_null(False).cast(pl.Float64).alias(IN_GRACE),
        (in_trouble & (last == "billing_retry")).fill_null(False).cast(pl.Float64).alias(IN_RETRY),
        (in_trouble & (last == "on_hold")).fill_null(False).cast(pl.Float64).alias(ON_HOLD),
        pl.when(in_trouble)
        .then(days(pl.lit(t) - pl.col("_trouble_start")))
        .otherwise(0.0)
        .alias(BILLING_TROUBLE_DAYS),
    )


#: The state features, in output order.
FEATURES = (
    STATUS,
    PRODUCT,
    STORE,
    CURRENCY,
    PRICE,
    PERIOD_DAYS,
    IN_TRIAL,
    IN_OFFER,
    TRIAL_OR_OFFER_DAYS_LEFT,
    AUTO_RENEW_OFF,
    DAYS_SINCE_AUTO_RENEW_OFF,
    PRICE_DECLINED_PENDING,
    DAYS_TO_EXPIRY,
    DAYS_SINCE_CHARGE,
    IN_GRACE,
    IN_RETRY,
    ON_HOLD,
    BILLING_TROUBLE_DAYS,
)
#: Each column of FEATURES described, in the same order (what the registry reads).
DESCRIPTIONS: tuple[Feature, ...] = tuple({f.name: f for f in _DESCRIBED}[n] for n in FEATURES)
