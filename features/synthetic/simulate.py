"""Sample the hidden process day by day: lifecycle transitions, app activity, snapshots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from features.synthetic import catalog
from features.synthetic.dynamics import ENGAGEMENT_REF, PAID, TRIAL, Dynamics
from features.synthetic.population import NOT_SUBSCRIBED

DAY = 86400.0


class Phase(IntEnum):
    """Where a subscriber is in their lifecycle at the start of a day."""

    NOT_STARTED = 0
    ENTITLED = 1  # trial, offer or paid period running
    RETRY = 2  # a charge failed: grace, then billing retry / account hold
    LAPSED = 3
    GONE = 4  # moved to the other platform (a new subscriber)


class Step(IntEnum):
    """A lifecycle transition, rendered later as zero or more Adjust rows."""

    START = 0
    RENEW = 1
    FAIL = 2
    GRACE_END = 3
    RECOVER = 4
    RETRY_EXHAUSTED = 5
    TURN_OFF = 6
    TURN_ON = 7
    EXPIRE = 8
    REFUND = 9
    WIN_BACK = 10
    PRICE_ACCEPT = 11
    SWITCH = 12


@dataclass
class Snapshot:
    """Hidden state of the subscribers active at the start of a cut-off day."""

    day: int
    idx: np.ndarray
    phase: np.ndarray
    kind: np.ndarray
    auto_renew: np.ndarray
    end_day: np.ndarray
    retry_day: np.ndarray
    churned: np.ndarray | None = None  # realised outcome, filled when the horizon is observed


@dataclass
class _Log:
    """Growing columnar log, one list of arrays per column."""

    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **cols: np.ndarray | float | int) -> None:
        n = max(np.size(v) for v in cols.values() if np.ndim(v))
        if n == 0:
            return
        for name, value in cols.items():
            self.columns.setdefault(name, []).append(np.broadcast_to(value, (n,)).copy())

    def frame(self, dtypes: dict[str, type]) -> dict[str, np.ndarray]:
        return {
            name: np.concatenate(self.columns[name]).astype(dt)
            if name in self.columns
            else np.empty(0, dt)
            for name, dt in dtypes.items()
        }


STEP_COLUMNS = {
    "sub": np.int64,
    "ts": np.float64,
    "step": np.int8,
    "kind": np.int8,
    "period_start": np.float64,
    "period_end": np.float64,
    "off_ts": np.float64,
    "consent": np.bool_,
    "chain": np.int32,
}
ACTIVITY_COLUMNS = {"sub": np.int64, "ts": np.float64, "activity": np.int8, "event": np.int8}
ACTIVITY_INSTALL, ACTIVITY_SESSION, ACTIVITY_EVENT = 0, 1, 2


@dataclass
class Simulation:
    """What happened: transitions, app activity and the cut-off snapshots."""

    steps: dict[str, np.ndarray]
    activity: dict[str, np.ndarray]
    snapshots: list[Snapshot]


def simulate(
    dyn: Dynamics,
    first_day: int,
    end_day: int,
    cutoffs: list[int],
    horizon: int,
    rng: np.random.Generator,
    activity_rng: np.random.Generator,
    on_day: Callable[[int], None] | None = None,
    app_events: tuple[tuple[float, float], ...] = (),
) -> Simulation:
    """Run days ``first_day`` .. ``end_day - 1``; record activity for days >= 0 only.

    ``app_events``: (rate, drive) of each of the app's own engagement-driven event kinds, which
    then take event codes 0..k-1 (paywall views and support contacts k and k+1); empty: the
    fitness app's events of ``catalog.IN_APP_EVENTS``.
    """
    pop = dyn.pop
    n = pop.n
    phase = np.zeros(n, np.int8)
    kind = pop.first_kind.copy()
    auto_renew = np.zeros(n, bool)
    period_start = np.full(n, np.nan)
    period_end = np.full(n, np.nan)
    period_end_day = np.full(n, NOT_SUBSCRIBED, np.int64)
    retry_day = np.zeros(n, np.int32)
    retry_start = np.full(n, np.nan)
    off_ts = np.full(n, np.nan)
    chain = np.zeros(n, np.int32)
    install_day = pop.install_day  # twins' entries are filled in when their user switches
    install_ts = pop.install_ts
    start_day = pop.start_day
    start_ts = pop.start_ts
    period_days = dyn.period_days
    grace_days = dyn.grace_days
    retry_days = dyn.retry_days
    steps = _Log()
    activity = _Log()
    snapshots: list[Snapshot] = []
    pending_outcomes: dict[int, Snapshot] = {}

    def log(
        step: Step, idx: np.ndarray, ts: np.ndarray, consent: np.ndarray | bool = False
    ) -> None:
        if len(idx):
            steps.add(
                sub=idx,
                ts=ts,
                step=int(step),
                kind=kind[idx],
                period_start=period_start[idx],
                period_end=period_end[idx],
                off_ts=off_ts[idx],
                consent=consent,
                chain=chain[idx],
            )

    def begin_period(
        idx: np.ndarray, ts: np.ndarray, day: int | np.ndarray, length: np.ndarray
    ) -> None:
        phase[idx] = Phase.ENTITLED
        auto_renew[idx] = True
        off_ts[idx] = np.nan
        period_start[idx] = ts
        period_end[idx] = ts + length * DAY
        period_end_day[idx] = day + length

    cutoff_set = set(cutoffs)
    for day in range(first_day, end_day + 1):
        if day in pending_outcomes:
            snap = pending_outcomes.pop(day)
            snap.churned = phase[snap.idx] >= Phase.LAPSED
        if day in cutoff_set:
            active = np.flatnonzero((phase == Phase.ENTITLED) | (phase == Phase.RETRY))
            snap = Snapshot(
                day,
                active,
                phase[active].copy(),
                kind[active].copy(),
                auto_renew[active].copy(),
                period_end_day[active].copy(),
                retry_day[active].copy(),
            )
            snapshots.append(snap)
            pending_outcomes[day + horizon] = snap
        if day == end_day:
            break
        t0 = day * DAY
        ent = np.flatnonzero(phase == Phase.ENTITLED)
        ret = np.flatnonzero(phase == Phase.RETRY)
        lap = np.flatnonzero(phase == Phase.LAPSED)
        new = np.flatnonzero((phase == Phase.NOT_STARTED) & (start_day == day))

        # 1. entitled: refund, or auto-renew toggled
        h = dyn.hazards(ent, day, kind[ent])
        u = rng.random((4, len(ent)))
        ends = period_end_day[ent] == day
        before = np.where(
            ends, period_end[ent], t0 + DAY
        )  # events today happen before the period end
        when = t0 + u[3] * (before - t0)
        refunded = u[0] < h.refund
        r = ent[refunded]
        off_ts[r] = when[refunded]
        log(Step.REFUND, r, when[refunded])
        phase[r] = Phase.LAPSED
        keep = ~refunded
        was_on = auto_renew[ent]
        toggles = keep & (u[1] < np.where(was_on, h.turn_off, h.turn_on))
        went_off = toggles & was_on
        went_on = toggles & ~was_on
        consent = dyn.in_price_consent(ent, day)
        auto_renew[ent[went_off]] = False
        off_ts[ent[went_off]] = when[went_off]
        log(Step.TURN_OFF, ent[went_off], when[went_off], consent[went_off])
        auto_renew[ent[went_on]] = True
        off_ts[ent[went_on]] = np.nan
        log(Step.TURN_ON, ent[went_on], when[went_on])
        if dyn.price_increase_day is not None and day == dyn.price_increase_day - 1:
            accept = keep & consent & auto_renew[ent]
            log(Step.PRICE_ACCEPT, ent[accept], t0 + u[3][accept] * (before[accept] - t0) * 0.99)

        # 2. periods ending today: charge, or lapse
        ending = keep & ends
        charge = ending & auto_renew[ent]
        fails = charge & (u[2] < h.charge_fails)
        f = ent[fails]
        log(Step.FAIL, f, period_end[f])
        phase[f] = Phase.RETRY
        retry_day[f] = 0
        retry_start[f] = period_end[f]
        ok = ent[charge & ~fails]
        log(Step.RENEW, ok, period_end[ok])
        kind[ok] = PAID
        begin_period(ok, period_end[ok], day, period_days[ok])
        gone = ent[ending & ~auto_renew[ent]]
        log(Step.EXPIRE, gone, period_end[gone])
        phase[gone] = Phase.LAPSED

        # 3. billing retry
        h = dyn.hazards(ret, day, PAID)
        u = rng.random((2, len(ret)))
        rec = u[0] < h.recover
        rc = ret[rec]
        rec_ts = t0 + u[1][rec] * DAY
        log(Step.RECOVER, rc, rec_ts)
        kind[rc] = PAID
        begin_period(rc, rec_ts, day, period_days[rc])
        st = ret[~rec]
        retry_day[st] += 1
        g = st[retry_day[st] == grace_days[st]]
        log(Step.GRACE_END, g, retry_start[g] + grace_days[g] * DAY)
        x = st[retry_day[st] == retry_days[st]]
        log(Step.RETRY_EXHAUSTED, x, retry_start[x] + retry_days[x] * DAY)
        phase[x] = Phase.LAPSED

        # 4. lapsed: win back here, or move to the other platform
        h = dyn.hazards(lap, day, PAID)
        u = rng.random((3, len(lap)))
        wb = u[0] < h.win_back
        w = lap[wb]
        wb_ts = t0 + u[1][wb] * DAY
        chain[w] += pop.platform[w] == catalog.ANDROID  # Google issues a new purchase token chain
        kind[w] = PAID
        begin_period(w, wb_ts, day, period_days[w])
        log(Step.WIN_BACK, w, wb_ts)
        sw = ~wb & (u[0] < h.win_back + h.switch)
        s = lap[sw]
        log(Step.SWITCH, s, t0 + u[1][sw] * DAY)
        phase[s] = Phase.GONE
        tw = pop.twin[s]
        tw_install = t0 + DAY + u[2][sw] * 3 * DAY
        install_ts[tw] = tw_install
        install_day[tw] = np.floor(tw_install / DAY)
        start_ts[tw] = tw_install + 1800.0
        start_day[tw] = np.floor(start_ts[tw] / DAY)

        # first periods starting today
        kind[new] = pop.first_kind[new]
        length = np.where(kind[new] == TRIAL, catalog.TRIAL_DAYS, period_days[new])
        begin_period(new, start_ts[new], day, length)
        log(Step.START, new, start_ts[new])

        if day >= 0:
            if app_events:
                _record_app_events(
                    dyn, day, phase, install_day, install_ts, activity, activity_rng, app_events
                )
            else:
                _record_activity(dyn, day, phase, install_day, install_ts, activity, activity_rng)
        if on_day is not None:
            on_day(day)

    return Simulation(steps.frame(STEP_COLUMNS), activity.frame(ACTIVITY_COLUMNS), snapshots)


def _record_activity(
    dyn: Dynamics,
    day: int,
    phase: np.ndarray,
    install_day: np.ndarray,
    install_ts: np.ndarray,
    activity: _Log,
    rng: np.random.Generator,
) -> None:
    """Installs, sessions and in-app events of one day, driven by the hidden engagement level."""
    t0 = day * DAY
    fresh = np.flatnonzero(install_day == day)
    activity.add(sub=fresh, ts=install_ts[fresh], activity=ACTIVITY_INSTALL, event=-1)
    users = np.flatnonzero((install_day <= day) & (phase != Phase.GONE))
    ph = phase[users]
    factor = np.select([ph == Phase.LAPSED, ph == Phase.RETRY], [0.3, 0.8], 1.0)
    rate = np.exp(dyn.engagement(users, day)) * factor
    # paywall views rise for users without access, support contacts during billing trouble
    paywall = np.where((ph == Phase.LAPSED) | (ph == Phase.NOT_STARTED), 0.08, 0.01)
    support = np.where(ph == Phase.RETRY, 0.15, 0.005)
    n_sessions = rng.poisson(rate)
    n_events = rng.poisson(0.6 * rate)
    n_paywall = rng.poisson(paywall)
    n_support = rng.poisson(support)
    shares = np.array([share for _, _, share in catalog.IN_APP_EVENTS[:3]])
    for activity_kind, counts, event in (
        (ACTIVITY_SESSION, n_sessions, None),
        (ACTIVITY_EVENT, n_events, "engagement"),
        (ACTIVITY_EVENT, n_paywall, 3),
        (ACTIVITY_EVENT, n_support, 4),
    ):
        who = np.repeat(users, counts)
        if not len(who):
            continue
        start = np.maximum(t0, install_ts[who])
        ts = start + rng.random(len(who)) * (t0 + DAY - start)
        if event is None:
            ev = -1
        elif event == "engagement":
            ev = rng.choice(3, len(who), p=shares / shares.sum())
        else:
            ev = event
        activity.add(sub=who, ts=ts, activity=activity_kind, event=ev)


def _record_app_events(
    dyn: Dynamics,
    day: int,
    phase: np.ndarray,
    install_day: np.ndarray,
    install_ts: np.ndarray,
    activity: _Log,
    rng: np.random.Generator,
    app_events: tuple[tuple[float, float], ...],
) -> None:
    """Like ``_record_activity``, with the app's own event kinds in place of the workout events.

    Kind j's daily count is Poisson(rate_j * e^(drive_j * (engagement - reference)) * access):
    a positive drive falls with the hidden engagement level, which falls ahead of churn (and
    raises the daily probability of turning auto-renew off), a negative drive rises. Counts
    depend on the hidden state only and feed nothing back, so the oracle stays exact.
    """
    t0 = day * DAY
    fresh = np.flatnonzero(install_day == day)
    activity.add(sub=fresh, ts=install_ts[fresh], activity=ACTIVITY_INSTALL, event=-1)
    users = np.flatnonzero((install_day <= day) & (phase != Phase.GONE))
    ph = phase[users]
    factor = np.select([ph == Phase.LAPSED, ph == Phase.RETRY], [0.3, 0.8], 1.0)
    eng = dyn.engagement(users, day)
    rate = np.exp(eng) * factor
    k = len(app_events)
    paywall = np.where((ph == Phase.LAPSED) | (ph == Phase.NOT_STARTED), 0.08, 0.01)
    support = np.where(ph == Phase.RETRY, 0.15, 0.005)
    draws = [(ACTIVITY_SESSION, rng.poisson(rate), -1)]
    for j, (mean, drive) in enumerate(app_events):
        draws.append(
            (ACTIVITY_EVENT, rng.poisson(mean * np.exp(drive * (eng - ENGAGEMENT_REF)) * factor), j)
        )
    draws += [
        (ACTIVITY_EVENT, rng.poisson(paywall), k),
        (ACTIVITY_EVENT, rng.poisson(support), k + 1),
    ]
    for activity_kind, counts, event in draws:
        who = np.repeat(users, counts)
        if not len(who):
            continue
        start = np.maximum(t0, install_ts[who])
        ts = start + rng.random(len(who)) * (t0 + DAY - start)
        activity.add(sub=who, ts=ts, activity=activity_kind, event=event)
