"""The ground-truth check: Brier score against its expectation, clustered by subscriber."""

import numpy as np
import pandas as pd
import pytest

from features import schema as s
from features.synthetic.calibration import check_truth


def truth_frame(p: np.ndarray, y: np.ndarray, users: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            s.USER_ID: [f"u{u}" for u in users],
            s.PLATFORM: "ios",
            s.CHURN_PROBABILITY: p,
            s.CHURNED: pd.array(y, dtype="boolean"),
        }
    )


def test_outcomes_drawn_from_the_truth_pass():
    """Bernoulli draws from the stated probabilities give a small deviation and matching bins."""
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 4, 40_000)
    check = check_truth(truth_frame(p, rng.random(len(p)) < p, np.arange(len(p))))
    assert abs(check.brier_z) < 4
    np.testing.assert_allclose(check.expected_brier, np.mean(p * (1 - p)))
    assert (abs(check.bins.realised - check.bins.probability) < 4 * check.bins.se + 1e-3).all()


def test_miscalibrated_truth_is_caught():
    """Probabilities half the true rate give a Brier score far above its expectation."""
    rng = np.random.default_rng(1)
    p = rng.beta(0.5, 4, 40_000)
    check = check_truth(truth_frame(p / 2, rng.random(len(p)) < p, np.arange(len(p))))
    assert check.brier_z > 6


def test_repeated_subscribers_widen_the_error():
    """The same outcome repeated for one subscriber is one observation, not many."""
    rng = np.random.default_rng(2)
    p = rng.beta(0.5, 4, 5_000)
    y = rng.random(len(p)) < p
    once = check_truth(truth_frame(p, y, np.arange(len(p))))
    four = check_truth(
        truth_frame(np.repeat(p, 4), np.repeat(y, 4), np.repeat(np.arange(len(p)), 4))
    )
    assert four.brier == pytest.approx(once.brier)
    assert four.brier_z == pytest.approx(once.brier_z)


def test_unobserved_outcomes_are_refused():
    """Without any observed outcome there is nothing to check, and the message says why."""
    frame = truth_frame(np.array([0.1]), np.array([True]), np.array([1]))
    frame[s.CHURNED] = pd.array([None], dtype="boolean")
    with pytest.raises(ValueError, match="no observed outcomes among 1"):
        check_truth(frame)
