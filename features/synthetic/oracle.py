"""The oracle: the exact probability of churn within the horizon, given the hidden state.

It propagates each subscriber's state distribution day by day through the same transition
probabilities the simulator samples (``dynamics.Dynamics``), in the same order, so it is the best
prediction any model can make. Churned means not entitled at the start of day ``cutoff + horizon``:
lapsed, or moved to the other platform (``DESIGN.md``, "The churn label").
"""

from __future__ import annotations

import numpy as np

from features.synthetic.dynamics import PAID, Dynamics
from features.synthetic.simulate import Phase, Snapshot


def churn_probability(dyn: Dynamics, snap: Snapshot, horizon: int) -> np.ndarray:
    """P(not entitled at ``snap.day + horizon``) for each subscriber in ``snap``.

    State per subscriber: the current period (auto-renew on/off, ending on its known day), the
    days spent in billing retry, periods begun inside the horizon (on/off, by end day; the last
    column collects those ending at or after the horizon), lapsed, and gone. A period begun on day
    k ends no earlier than k + the shortest period, so only end days from there on get a column.
    """
    idx = snap.idx
    n = len(idx)
    rows = np.arange(n)
    period = dyn.period_days[idx]
    window = dyn.retry_days[idx]
    entitled = snap.phase == Phase.ENTITLED
    cur_on = (entitled & snap.auto_renew).astype(float)
    cur_off = (entitled & ~snap.auto_renew).astype(float)
    retry = np.zeros((n, int(window.max()) if n else 1))
    in_retry = snap.phase == Phase.RETRY
    retry[rows[in_retry], snap.retry_day[in_retry]] = 1.0
    exhausted_col = np.arange(retry.shape[1])[None, :] + 1 == window[:, None]
    shortest = int(period.min()) if n else horizon
    width = max(horizon - shortest, 0) + 1  # end days shortest .. horizon-1, then "later"
    new_on = np.zeros((n, width))
    new_off = np.zeros((n, width))
    lapsed = (snap.phase == Phase.LAPSED).astype(float)
    gone = (snap.phase == Phase.GONE).astype(float)

    for k in range(horizon):
        day = snap.day + k
        hc = dyn.hazards(idx, day, snap.kind)
        hp = dyn.hazards(idx, day, PAID)
        begins = np.clip(k + period - shortest, 0, width - 1)  # column of a period begun today

        # 1. entitled: refund, auto-renew toggles
        lapsed_next = lapsed.copy()
        lapsed_next += (cur_on + cur_off) * hc.refund
        keep_c = 1.0 - hc.refund
        cur_on, cur_off = (
            (cur_on * (1 - hc.turn_off) + cur_off * hc.turn_on) * keep_c,
            (cur_on * hc.turn_off + cur_off * (1 - hc.turn_on)) * keep_c,
        )
        lapsed_next += (new_on + new_off).sum(axis=1) * hp.refund
        keep_p = (1.0 - hp.refund)[:, None]
        off_p, on_p = hp.turn_off[:, None], hp.turn_on[:, None]
        new_on, new_off = (
            (new_on * (1 - off_p) + new_off * on_p) * keep_p,
            (new_on * off_p + new_off * (1 - on_p)) * keep_p,
        )

        # 2. periods ending today: charge (renew or fail) or lapse
        ends = snap.end_day == day
        failed_today = np.where(ends, cur_on * hc.charge_fails, 0.0)
        renewed = np.where(ends, cur_on * (1 - hc.charge_fails), 0.0)
        lapsed_next += np.where(ends, cur_off, 0.0)
        cur_on = np.where(ends, 0.0, cur_on)
        cur_off = np.where(ends, 0.0, cur_off)
        if shortest <= k:  # periods begun inside the horizon can end today
            col = k - shortest
            failed_today += new_on[:, col] * hp.charge_fails
            renewed += new_on[:, col] * (1 - hp.charge_fails)
            lapsed_next += new_off[:, col]
            new_on[:, col] = 0.0
            new_off[:, col] = 0.0
        new_on[rows, begins] += renewed

        # 3. billing retry: recover, or one more day (the window's last day lapses)
        rho = hp.recover[:, None]
        new_on[rows, begins] += (retry * rho).sum(axis=1)
        stay = retry * (1 - rho)
        lapsed_next += (stay * exhausted_col).sum(axis=1)
        retry = np.zeros_like(retry)
        retry[:, 1:] = np.where(exhausted_col[:, :-1], 0.0, stay[:, :-1])
        retry[:, 0] = failed_today

        # 4. lapsed at the start of the day: win back, or move platform
        new_on[rows, begins] += lapsed * hp.win_back
        gone = gone + lapsed * hp.switch
        lapsed = lapsed_next - lapsed * (hp.win_back + hp.switch)

    return np.clip(lapsed + gone, 0.0, 1.0)
