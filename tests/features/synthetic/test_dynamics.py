"""The hidden process's daily probabilities: ranges and the rules the oracle relies on."""

import numpy as np

from features.synthetic import catalog
from features.synthetic.dynamics import OFFER, PAID, PRICE_CONSENT_DAYS, TRIAL, Dynamics
from features.synthetic.population import NOT_SUBSCRIBED, draw_population


def population(n=2000, seed=3):
    return draw_population(np.random.default_rng(seed), n, -30, 60)


def test_every_probability_is_a_probability():
    """All daily probabilities lie in [0, 1] for every kind of period on any day."""
    pop = population()
    dyn = Dynamics(pop, price_increase_day=40)
    idx = np.arange(pop.n)
    for kind in (TRIAL, OFFER, PAID):
        for day in (-30, 0, 30, 39, 200):
            h = dyn.hazards(idx, day, kind)
            for name, values in vars(h).items():
                assert values.shape == idx.shape, name
                assert np.all((values >= 0) & (values <= 1)), (name, kind, day)


def test_trials_are_never_refunded_and_fail_more_often_at_conversion():
    """A trial has no charge to refund; its first charge fails more often than a renewal."""
    pop = population()
    dyn = Dynamics(pop, None)
    idx = np.arange(pop.n)
    trial, paid = dyn.hazards(idx, 10, TRIAL), dyn.hazards(idx, 10, PAID)
    assert np.all(trial.refund == 0)
    assert np.all(paid.refund > 0)
    assert np.all(trial.charge_fails > paid.charge_fails)


def test_price_consent_window_covers_existing_monthly_subscribers_only():
    """Only monthly subscribers who started before the window are asked to accept a new price."""
    pop = population()
    x = 40
    dyn = Dynamics(pop, price_increase_day=x)
    idx = np.arange(pop.n)
    inside = dyn.in_price_consent(idx, x - 1)
    expected = (pop.product == catalog.MONTHLY) & (pop.start_day < x - PRICE_CONSENT_DAYS)
    np.testing.assert_array_equal(inside, expected)
    assert not dyn.in_price_consent(idx, x).any()
    assert not dyn.in_price_consent(idx, x - PRICE_CONSENT_DAYS - 1).any()
    assert not Dynamics(pop, None).in_price_consent(idx, x - 1).any()
    # the window raises voluntary cancellation for exactly those subscribers
    asked = dyn.hazards(idx, x - 1, PAID).turn_off
    unchanged = Dynamics(pop, None).hazards(idx, x - 1, PAID).turn_off
    assert np.all(asked[inside] > unchanged[inside])
    np.testing.assert_array_equal(asked[~inside], unchanged[~inside])


def test_twins_wait_for_a_platform_switch_and_mirror_their_user():
    """A twin shares its user's id and hidden drivers and lives on the other platform."""
    pop = population()
    twins = np.flatnonzero(pop.twin >= 0)
    assert len(twins) > 0
    mirror = pop.twin[twins]
    assert np.all(pop.is_twin[mirror]) and not pop.is_twin[twins].any()
    np.testing.assert_array_equal(pop.user_num[twins], pop.user_num[mirror])
    np.testing.assert_array_equal(pop.intent[twins], pop.intent[mirror])
    np.testing.assert_array_equal(pop.platform[twins], 1 - pop.platform[mirror])
    assert np.all(pop.start_day[mirror] == NOT_SUBSCRIBED)
