"""Check the generator's ground truth against the outcomes it realised.

If the oracle is the true churn probability, the outcomes are Bernoulli draws from it: the Brier
score of truth vs outcome then has expectation mean(p(1-p)), and binned truth matches the binned
outcome rate. A large deviation means the oracle and the simulator disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features import schema as s


@dataclass(frozen=True)
class TruthCheck:
    """How well the oracle's probabilities describe the realised churn outcomes."""

    rows: int
    observed: int
    mean_probability: float
    realised_rate: float
    brier: float
    expected_brier: float
    brier_z: float  # (brier - expected) / its standard error, clustered by subscriber
    oracle_roc_auc: float
    bins: pd.DataFrame  # per probability decile: mean probability, realised rate, count, se


def _clustered_se(residual: np.ndarray, cluster: np.ndarray) -> float:
    """Standard error of mean(residual) when rows of one cluster are correlated.

    A subscriber appears at consecutive cut-offs whose horizons overlap, so their outcomes are
    not independent; summing residuals per subscriber first gives an honest (sandwich) error.
    """
    sums = pd.Series(residual).groupby(cluster).sum().to_numpy()
    return float(np.sqrt(np.sum(sums**2)) / len(residual))


def check_truth(truth: pd.DataFrame, bins: int = 10) -> TruthCheck:
    """Compare ``churn_probability`` with ``churned`` where the outcome was observed."""
    observed = truth[truth[s.CHURNED].notna()]
    p = observed[s.CHURN_PROBABILITY].to_numpy(float)
    y = observed[s.CHURNED].to_numpy(float)
    if len(p) == 0:
        raise ValueError(
            f"no observed outcomes among {len(truth)} ground-truth rows: every cut-off's horizon "
            "runs past the end of the data"
        )
    subscriber = pd.factorize(
        observed[s.USER_ID].astype(str) + "/" + observed[s.PLATFORM].astype(str)
    )[0]
    expected_each = p * (1 - p)
    brier_each = (p - y) ** 2
    expected = float(expected_each.mean())
    brier = float(brier_each.mean())
    se = _clustered_se(brier_each - expected_each, subscriber)
    decile = pd.qcut(p, bins, labels=False, duplicates="drop")
    frame = pd.DataFrame({"probability": p, "realised": y, "bin": decile, "who": subscriber})
    table = frame.groupby("bin").agg(
        probability=("probability", "mean"),
        realised=("realised", "mean"),
        n=("realised", "size"),
    )
    table["se"] = [
        _clustered_se((g.realised - g.probability).to_numpy(), g.who.to_numpy())
        for _, g in frame.groupby("bin")
    ]
    return TruthCheck(
        rows=len(truth),
        observed=len(p),
        mean_probability=float(p.mean()),
        realised_rate=float(y.mean()),
        brier=brier,
        expected_brier=expected,
        brier_z=(brier - expected) / se if se > 0 else 0.0,
        oracle_roc_auc=float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        bins=table,
    )
