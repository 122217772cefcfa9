"""The hidden daily process behind every subscriber: one set of transition probabilities.

The simulator samples these probabilities and the oracle propagates them exactly, so the ground
truth is the true churn probability of the very process that made the data. Every probability
depends only on the subscriber's hidden traits, the calendar day and the kind of period they are
in, never on the sampled path, which is what keeps the oracle exact.

Order of events within a day, for the state held at the start of that day:
1. entitled: refund (paid periods only); otherwise auto-renew may be turned off (or back on);
2. entitled and the period ends today: auto-renew on → charge (renew, or fail into billing retry),
   off → lapse;
3. in billing retry: recover, else one more day of retry; the window's last day lapses;
4. lapsed: win back on this platform, or (some users) switch to the other platform for good.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic import catalog
from features.synthetic.population import KIND_CODES, Population

TRIAL, OFFER, PAID = KIND_CODES["trial"], KIND_CODES["offer"], KIND_CODES["paid"]
#: Apple and Google ask existing subscribers to consent this many days before a price increase.
PRICE_CONSENT_DAYS = 14
ENGAGEMENT_REF = -0.9


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class DayHazards:
    """Daily probabilities for a set of subscribers on one day, all arrays of the same length."""

    refund: np.ndarray
    turn_off: np.ndarray
    turn_on: np.ndarray
    charge_fails: np.ndarray
    recover: np.ndarray
    win_back: np.ndarray
    switch: np.ndarray


class Dynamics:
    """Transition probabilities of the hidden process for one population and calendar."""

    def __init__(self, pop: Population, price_increase_day: int | None) -> None:
        self.pop = pop
        self.price_increase_day = price_increase_day
        self.period_days = np.array(catalog.PERIOD_DAYS)[pop.product]
        self.grace_days = np.array(catalog.GRACE_DAYS)[pop.platform]
        self.retry_days = np.array(catalog.RETRY_WINDOW_DAYS)[pop.platform]

    def engagement(self, idx: np.ndarray, day: int) -> np.ndarray:
        """Hidden log sessions/day of subscribers ``idx`` on ``day``: a drifting per-user level."""
        pop = self.pop
        age = np.maximum(day - pop.install_day[idx], 0) / 30.0
        return np.clip(pop.engagement0[idx] + pop.engagement_trend[idx] * age, -3.5, 1.5)

    def in_price_consent(self, idx: np.ndarray, day: int) -> np.ndarray:
        """Whether ``day`` is in the consent window of a price increase that affects ``idx``."""
        x = self.price_increase_day
        if x is None or not (x - PRICE_CONSENT_DAYS <= day < x):
            return np.zeros(len(idx), bool)
        pop = self.pop
        return (pop.product[idx] == catalog.MONTHLY) & (pop.start_day[idx] < x - PRICE_CONSENT_DAYS)

    def hazards(self, idx: np.ndarray, day: int, kind: np.ndarray | int) -> DayHazards:
        """Probabilities for subscribers ``idx`` on ``day`` whose current period is of ``kind``."""
        pop = self.pop
        kind = np.broadcast_to(np.asarray(kind), idx.shape)
        intent = pop.intent[idx]
        sens = pop.price_sensitivity[idx]
        eng = self.engagement(idx, day) - ENGAGEMENT_REF
        tenure = np.maximum(day - pop.start_day[idx], 0) / 30.0
        consent = self.in_price_consent(idx, day)

        trial_off = -2.4 - 1.0 * intent - 0.8 * eng
        paid_off = (
            -5.9
            - 0.6 * intent
            - 0.9 * eng
            + 1.2 * sens * (kind == OFFER)
            + 3.5 * sens * consent
            - 0.25 * np.log1p(tenure)
        )
        turn_off = _sigmoid(np.where(kind == TRIAL, trial_off, paid_off))
        win_back = _sigmoid(-6.2 + 0.7 * intent + 0.5 * eng)
        return DayHazards(
            refund=np.where(kind == TRIAL, 0.0, _sigmoid(-8.3 - 0.5 * intent)),
            turn_off=turn_off,
            turn_on=_sigmoid(-4.6 + 0.6 * intent),
            charge_fails=_sigmoid(pop.pay_logit[idx] + 0.6 * (kind == TRIAL)),
            recover=pop.recovery_rate[idx],
            win_back=win_back,
            switch=np.where(pop.twin[idx] >= 0, 0.3 * win_back, 0.0),
        )
