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
    brier_z: float  # (brier - expected) / its standard error under the truth
    oracle_roc_auc: float
    bins: pd.DataFrame  # per probability decile: mean probability, realised rate, count


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
    var = p * (1 - p)
    expected = float(var.mean())
    brier = float(np.mean((p - y) ** 2))
    # Var((p - y)^2) for y ~ Bernoulli(p) is p(1-p)(1-2p)^2
    se = float(np.sqrt(np.sum(var * (1 - 2 * p) ** 2)) / len(p))
    decile = pd.qcut(p, bins, labels=False, duplicates="drop")
    table = (
        pd.DataFrame({"probability": p, "realised": y, "bin": decile})
        .groupby("bin")
        .agg(
            probability=("probability", "mean"),
            realised=("realised", "mean"),
            n=("realised", "size"),
        )
    )
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
