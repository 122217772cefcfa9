"""The oracle's exact propagation against closed forms and a slow per-path Monte Carlo reference."""

import numpy as np
import pytest

from features.synthetic.dynamics import PAID, DayHazards
from features.synthetic.oracle import churn_probability
from features.synthetic.simulate import Phase, Snapshot

ENTITLED, RETRY, LAPSED, GONE = Phase.ENTITLED, Phase.RETRY, Phase.LAPSED, Phase.GONE


class ConstantDynamics:
    """Duck-typed ``Dynamics`` whose daily probabilities are the same for everyone, every day."""

    def __init__(self, n: int, period: int, window: int, **probabilities: float) -> None:
        self.period_days = np.full(n, period)
        self.retry_days = np.full(n, window)
        zero = dict.fromkeys(DayHazards.__dataclass_fields__, 0.0)
        self.probabilities = {**zero, **probabilities}

    def hazards(self, idx, day, kind) -> DayHazards:
        return DayHazards(**{k: np.full(len(idx), v) for k, v in self.probabilities.items()})


def snapshot(phase, auto_renew, end_day, retry_day=None, kind=None, day=0) -> Snapshot:
    n = len(phase)
    return Snapshot(
        day=day,
        idx=np.arange(n),
        phase=np.array(phase, np.int8),
        kind=np.array(kind if kind is not None else [PAID] * n, np.int8),
        auto_renew=np.array(auto_renew, bool),
        end_day=np.array(end_day, np.int64),
        retry_day=np.array(retry_day if retry_day is not None else [0] * n, np.int32),
    )


def test_auto_renew_off_before_the_horizon_end_is_certain_churn():
    """Nothing can rescue a period that ends unrenewed when win-back and re-enabling are off."""
    dyn = ConstantDynamics(2, period=30, window=10)
    snap = snapshot([ENTITLED, ENTITLED], [False, False], end_day=[5, 40])
    np.testing.assert_allclose(churn_probability(dyn, snap, 30), [1.0, 0.0])


def test_failed_charge_lapses_only_if_retry_window_closes_inside_horizon():
    """Churn = P(fail) * P(no recovery on each of the window's days), if the window fits."""
    f, r = 0.3, 0.2
    dyn = ConstantDynamics(1, period=30, window=10, charge_fails=f, recover=r)
    inside = churn_probability(dyn, snapshot([ENTITLED], [True], end_day=[5]), 30)
    np.testing.assert_allclose(inside, [f * (1 - r) ** 10])
    wide = ConstantDynamics(1, period=30, window=40, charge_fails=f, recover=r)
    np.testing.assert_allclose(churn_probability(wide, snapshot([ENTITLED], [True], [5]), 30), [0])


def test_turning_auto_renew_off_counts_every_day_up_to_the_period_end():
    """Toggles on the last day happen before the period ends: 6 chances if it ends on day 5."""
    q = 0.05
    dyn = ConstantDynamics(1, period=30, window=10, turn_off=q)
    np.testing.assert_allclose(
        churn_probability(dyn, snapshot([ENTITLED], [True], [5]), 30), [1 - (1 - q) ** 6]
    )


def test_lapsed_users_can_win_back_from_the_next_day_on():
    """A period lapsing on the cut-off day leaves horizon - 1 days to win the subscriber back."""
    w = 0.02
    dyn = ConstantDynamics(1, period=30, window=10, win_back=w)
    np.testing.assert_allclose(
        churn_probability(dyn, snapshot([ENTITLED], [False], [0]), 30), [(1 - w) ** 29]
    )


def test_refunds_end_entitlement_on_any_day_of_the_horizon():
    """A paid period far from its end churns only by a refund, on any of the horizon's days."""
    r = 0.01
    dyn = ConstantDynamics(1, period=365, window=10, refund=r)
    np.testing.assert_allclose(
        churn_probability(dyn, snapshot([ENTITLED], [True], [300]), 30), [1 - (1 - r) ** 30]
    )


def reference_path(rng, p, period, window, phase, auto_renew, end, retry_day, horizon) -> bool:
    """One sampled path, following the documented order of events literally."""
    for k in range(horizon):
        start = phase
        if start == ENTITLED:
            if rng.random() < p["refund"]:
                phase = LAPSED
                continue
            u = rng.random()
            if auto_renew and u < p["turn_off"]:
                auto_renew = False
            elif not auto_renew and u < p["turn_on"]:
                auto_renew = True
            if end == k:
                if not auto_renew:
                    phase = LAPSED
                elif rng.random() < p["charge_fails"]:
                    phase, retry_day = RETRY, 0
                else:
                    end = k + period
        elif start == RETRY:
            if rng.random() < p["recover"]:
                phase, auto_renew, end = ENTITLED, True, k + period
            else:
                retry_day += 1
                if retry_day == window:
                    phase = LAPSED
        elif start == LAPSED:
            u = rng.random()
            if u < p["win_back"]:
                phase, auto_renew, end = ENTITLED, True, k + period
            elif u < p["win_back"] + p["switch"]:
                phase = GONE
    return phase in (LAPSED, GONE)


@pytest.mark.parametrize(
    ("phase", "auto_renew", "end", "retry_day"),
    [(ENTITLED, True, 3, 0), (ENTITLED, False, 8, 0), (RETRY, True, 0, 4), (LAPSED, False, 0, 0)],
)
def test_matches_monte_carlo_when_periods_renew_inside_the_horizon(
    phase, auto_renew, end, retry_day
):
    """Short periods (10 days) and a 25-day horizon exercise every state, including re-renewals."""
    p = dict(
        refund=0.004,
        turn_off=0.03,
        turn_on=0.05,
        charge_fails=0.25,
        recover=0.15,
        win_back=0.04,
        switch=0.01,
    )
    period, window, horizon, paths = 10, 7, 25, 20_000
    dyn = ConstantDynamics(1, period=period, window=window, **p)
    exact = churn_probability(dyn, snapshot([phase], [auto_renew], [end], [retry_day]), horizon)[0]
    rng = np.random.default_rng(11)
    hits = sum(
        reference_path(rng, p, period, window, phase, auto_renew, end, retry_day, horizon)
        for _ in range(paths)
    )
    se = np.sqrt(exact * (1 - exact) / paths)
    assert abs(hits / paths - exact) < 4 * se + 1e-9
