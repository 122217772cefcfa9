"""Render simulated lifecycle steps and app activity as Adjust raw-export rows (one table).

Vocabulary follows ``../shared/specs/adjust-subscriptions.md``: the current 16 event names, or the
legacy (event, subtype) pairs while the app was on legacy subscription recording, with the
platform differences of §a (billing_retry and refund on iOS only, on_hold on Android, Android
win-backs as a new ``activation`` chain, no Android reactivation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import schema as s
from features.synthetic import catalog
from features.synthetic.identity import Identities
from features.synthetic.population import Population
from features.synthetic.simulate import (
    ACTIVITY_EVENT,
    ACTIVITY_INSTALL,
    ACTIVITY_SESSION,
    Step,
)

TRIAL, OFFER, PAID = 0, 1, 2
_KIND_WORD = ("trial", "offer", "subscription")
CHARGES = (Step.START, Step.RENEW, Step.RECOVER, Step.WIN_BACK)
FAILURES = (Step.FAIL, Step.GRACE_END, Step.RETRY_EXHAUSTED)
ACTIVITY_NAMES = {
    ACTIVITY_INSTALL: s.ACTIVITY_INSTALL,
    ACTIVITY_SESSION: s.ACTIVITY_SESSION,
    ACTIVITY_EVENT: s.ACTIVITY_EVENT,
}


def _vocabulary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tables [step, kind, platform] → current name, legacy name, legacy subtype (or None)."""
    shape = (len(Step), 3, 2)
    cur = np.full(shape, None, object)
    leg = np.full(shape, None, object)
    sub = np.full(shape, None, object)
    for k, word in enumerate(_KIND_WORD):
        initial = "initial_" + word
        cur[Step.START, k] = ("trial_started", "discounted_offer", "activation")[k]
        leg[Step.START, k], sub[Step.START, k] = "activation", initial
        cur[Step.RENEW, k] = "renewal"
        if k == PAID:
            leg[Step.RENEW, k], sub[Step.RENEW, k] = "renewal", "renewed_subscription"
            recovered = "renewed_subscription_from_retry"
        else:
            leg[Step.RENEW, k], sub[Step.RENEW, k] = "first_conversion", "converted_" + word
            recovered = f"converted_{word}_from_retry"
        cur[Step.FAIL, k] = "grace_period"
        leg[Step.FAIL, k], sub[Step.FAIL, k] = "entered_billing_retry", f"{word}_in_retry"
        cur[Step.GRACE_END, k] = ("billing_retry", "on_hold")
        cur[Step.RECOVER, k] = "renewal_from_billing_retry"
        leg[Step.RECOVER, k], sub[Step.RECOVER, k] = "renewal_from_billing_retry", recovered
        cur[Step.RETRY_EXHAUSTED, k] = "expiration"
        leg[Step.RETRY_EXHAUSTED, k] = "cancellation"
        sub[Step.RETRY_EXHAUSTED, k] = f"failed_{word}_from_retry"
        cur[Step.TURN_OFF, k] = "cancellation"
        cur[Step.TURN_ON, k, catalog.IOS] = "reactivation"
        cur[Step.EXPIRE, k] = "expiration"
        leg[Step.EXPIRE, k], sub[Step.EXPIRE, k] = "cancellation", f"failed_{word}"
        cur[Step.REFUND, k] = ("refund", "revoked")
        # legacy recording had no refund event; the period is reported as ended unrenewed
        leg[Step.REFUND, k], sub[Step.REFUND, k] = "cancellation", f"failed_{word}"
        cur[Step.WIN_BACK, k] = ("reactivation", "activation")
        leg[Step.WIN_BACK, k] = ("reactivation", "activation")
        sub[Step.WIN_BACK, k] = ("reactivated_subscription", "initial_subscription")
        cur[Step.PRICE_ACCEPT, k] = "price_accepted"
    return cur, leg, sub


CURRENT_NAME, LEGACY_NAME, LEGACY_SUBTYPE = _vocabulary()


@dataclass
class Calendar:
    """Where the export sits in time: its first second (Unix), length, vocabulary switch, prices."""

    start_epoch: int
    days: int
    legacy_end_day: int
    price_increase_day: int | None


def _transaction_ids(numbers: np.ndarray, renewal: np.ndarray, platform: np.ndarray) -> np.ndarray:
    """Apple-style numeric ids on iOS; on Android a Google order id per chain, ``..N`` per renewal.

    Charge numbers are scrambled (a bijection) so ids do not reveal the app's charge volume.
    """
    scrambled = (numbers * 7919 + 104729) % 10**12
    out = np.empty(len(numbers), object)
    for i, (num, k, plat) in enumerate(
        zip(scrambled.tolist(), renewal.tolist(), platform.tolist(), strict=True)
    ):
        if plat == catalog.IOS:
            out[i] = str(230000000000000 + num)
        else:
            d = f"{num:012d}{num * 31 % 1000:03d}"
            base = f"GPA.33{d[:2]}-{d[2:6]}-{d[6:10]}-{d[10:]}"
            out[i] = base if k == 0 else f"{base}..{k - 1}"
    return out


def subscription_rows(
    pop: Population,
    ids: Identities,
    steps: dict[str, np.ndarray],
    cal: Calendar,
    sandbox_product: int = catalog.MONTHLY,
) -> dict[str, np.ndarray]:
    """One row per exported lifecycle step, with transaction chains threaded through.

    A step's row is created at its time, plus its ``delay`` where ``steps`` has that column
    (renewals delivered after the expiry they continue); the purchase and expiry times it
    reports are the hidden process's.
    """
    platform = np.concatenate([pop.platform, np.arange(len(ids.sandbox) - pop.n) % 2])
    product = np.concatenate(
        [pop.product, np.full(len(ids.sandbox) - pop.n, sandbox_product, np.int8)]
    )
    order = np.lexsort((steps["ts"], steps["sub"]))
    st = {k: v[order] for k, v in steps.items()}
    sub, ts, step, kind = st["sub"], st["ts"], st["step"], st["kind"]
    n = len(sub)

    # transactions: numbered by time across the app; each row sees its subscriber's latest one
    charge = np.isin(step, CHARGES)
    number = np.full(n, -1, np.int64)
    charge_pos = np.flatnonzero(charge)
    number[charge_pos[np.argsort(ts[charge_pos], kind="stable")]] = np.arange(len(charge_pos))
    latest = np.maximum.accumulate(np.where(charge, np.arange(n), -1))  # first step is a START
    group = sub * 1000 + st["chain"]
    first_in_group = np.concatenate([[True], group[1:] != group[:-1]])
    chain_start = np.maximum.accumulate(np.where(first_in_group, np.arange(n), -1))
    charges_so_far = np.cumsum(charge)
    renewal = charges_so_far - charges_so_far[chain_start]  # 0 for the chain's first charge
    plat = platform[sub]
    # an Android chain keeps its first order id and appends ..0, ..1 for each renewal
    base_number = np.where(plat == catalog.ANDROID, number[chain_start], number)
    charge_ids = np.full(n, None, object)
    charge_ids[charge_pos] = _transaction_ids(
        base_number[charge_pos], renewal[charge_pos], plat[charge_pos]
    )
    txn = charge_ids[latest]
    original = charge_ids[chain_start]
    previous = np.concatenate([[-1], latest[:-1]])
    has_previous = charge & ~first_in_group & (previous >= 0)
    expired = np.where(has_previous, charge_ids[np.maximum(previous, 0)], None)
    failure = np.isin(step, FAILURES)
    txn = np.where(failure, None, txn)

    period = np.array(catalog.PERIOD_DAYS)[product[sub]] * 86400.0
    first_len = np.where(kind == TRIAL, catalog.TRIAL_DAYS * 86400.0, period)
    new_expiry = np.where(step == Step.START, ts + first_len, ts + period)
    sandbox = sub >= pop.n  # store sandbox periods last minutes: take them as simulated
    new_expiry = np.where(sandbox, st["period_end"], new_expiry)
    purchased = np.where(charge, ts, st["period_start"])
    expiration = np.where(charge, new_expiry, np.where(failure, np.nan, st["period_end"]))
    cancelled = np.select(
        [step == Step.TURN_OFF, step == Step.REFUND, step == Step.EXPIRE, failure],
        [ts, ts, st["off_ts"], st["period_end"]],
        np.nan,
    )

    country = pop.country[np.minimum(sub, pop.n - 1)]
    country = np.where(sub >= pop.n, 0, country)  # sandbox testers shop in the US storefront
    monthly = np.array([c.monthly for c in catalog.COUNTRIES])[country]
    raised = np.array([c.monthly_new for c in catalog.COUNTRIES])[country]
    annual = np.array([c.annual for c in catalog.COUNTRIES])[country]
    offer = np.array([c.offer for c in catalog.COUNTRIES])[country]
    day = np.floor(ts / 86400.0)
    if cal.price_increase_day is None:
        monthly_now = monthly
    else:
        monthly_now = np.where(day >= cal.price_increase_day, raised, monthly)
    full = np.where(product[sub] == catalog.ANNUAL, annual, monthly_now)
    revenue = np.where(
        charge & ~((step == Step.START) & (kind == TRIAL)),
        np.where((step == Step.START) & (kind == OFFER), offer, full),
        np.nan,
    )
    currency = np.array([c.currency for c in catalog.COUNTRIES], object)[country]
    current = CURRENT_NAME[step, kind, plat]
    price_declined = (step == Step.TURN_OFF) & st["consent"] & (plat == catalog.IOS)
    current = np.where(price_declined, "price_declined", current)

    created = ts + st["delay"] if "delay" in st else ts
    keep = (created >= 0) & (step != Step.SWITCH)
    refund = step == Step.REFUND
    return {
        "sub": sub[keep],
        "created": created[keep],
        "current": current[keep],
        "legacy": LEGACY_NAME[step, kind, plat][keep],
        "subtype": LEGACY_SUBTYPE[step, kind, plat][keep],
        "legacy_expiration": np.where(refund, ts, expiration)[keep],
        "purchased": purchased[keep],
        "expiration": expiration[keep],
        "cancelled": cancelled[keep],
        "transaction": txn[keep],
        "original": original[keep],
        "expired": expired[keep],
        "revenue": np.where(np.isnan(revenue), np.nan, revenue)[keep],
        "currency": np.where(np.isnan(revenue), None, currency)[keep],
        "product": np.array(catalog.PRODUCT_IDS, object)[plat, product[sub]][keep],
    }


def sandbox_steps(
    rng: np.random.Generator,
    first_sub: int,
    testers: int,
    days: int,
    beat: int = catalog.SANDBOX_RENEW_SECONDS,
) -> dict[str, np.ndarray]:
    """QA testers buying a product in the store sandbox: renewals every ``beat`` seconds (the
    monthly product's 5 minutes by default)."""
    cols: dict[str, list] = {
        k: []
        for k in (
            "sub",
            "ts",
            "step",
            "kind",
            "period_start",
            "period_end",
            "off_ts",
            "consent",
            "chain",
        )
    }
    for t in range(testers):
        begin = float(rng.integers(1, max(days - 1, 2))) * 86400.0 + rng.random() * 40000.0
        renewals = int(rng.integers(3, catalog.SANDBOX_MAX_RENEWALS + 1))
        for j in range(renewals + 2):
            step = Step.START if j == 0 else (Step.RENEW if j <= renewals else Step.EXPIRE)
            start = begin + (j - 1 if step == Step.EXPIRE else j) * beat
            for k, v in (
                ("sub", first_sub + t),
                ("ts", begin + j * beat),
                ("step", int(step)),
                ("kind", PAID),
                ("period_start", start),
                ("period_end", start + beat),
                ("off_ts", np.nan),
                ("consent", False),
                ("chain", 0),
            ):
                cols[k].append(v)
    dtypes = {"sub": np.int64, "step": np.int8, "kind": np.int8, "consent": bool, "chain": np.int32}
    return {k: np.asarray(v, dtype=dtypes.get(k, np.float64)) for k, v in cols.items()}


def epoch_strings(seconds: np.ndarray, start_epoch: int) -> pa.Array:
    """Relative seconds → Unix epoch seconds as text (null where missing)."""
    values = pa.array(np.floor(seconds) + start_epoch, mask=np.isnan(seconds)).cast(pa.int64())
    return pc.cast(values, pa.string())
