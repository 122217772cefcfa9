"""Hold-out evaluation: metrics for a score vector, the baselines, the oracle and the bucket table.

Metric names follow DESIGN.md (``holdout_roc_auc`` …, the same with ``baseline_rule_``,
``baseline_logreg_`` or ``oracle_`` in place of ``holdout_``, and ``oracle_ratio``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from feature_engine.imputation import AddMissingIndicator, CategoricalImputer, MeanMedianImputer
from feature_engine.wrappers import SklearnTransformerWrapper
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from features import schema
from features.registry import Feature
from training.pipeline import EPS, MISSING_CATEGORY, FeatureTypes, FrameSchema

#: Registry reason groups whose features make the CRM rule's "at risk" flag.
RULE_REASONS = ("auto_renew_off", "billing_trouble")
ECE_BINS = 10


def expected_calibration_error(y, p, bins: int = ECE_BINS) -> float:
    """ECE: the row-weighted mean |observed churn rate - mean probability| over equal-width bins."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.abs(np.bincount(which, y, bins) - np.bincount(which, p, bins))
    return float(gap.sum() / len(p))


def _ranked(y, p) -> np.ndarray:
    """Outcomes sorted by descending score; ties share their group's mean outcome (no luck)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    _, start, counts = np.unique(-ps, return_index=True, return_counts=True)
    means = np.add.reduceat(ys, start) / counts
    return np.repeat(means, counts)


def top_share(y, p, share: float) -> tuple[float, float]:
    """(lift, recall) when targeting the riskiest ``share`` of users."""
    ranked = _ranked(y, p)
    k = max(1, int(np.ceil(share * len(ranked))))
    caught = ranked[:k].sum()
    total = ranked.sum()
    lift = (caught / k) / (total / len(ranked)) if total else float("nan")
    return float(lift), float(caught / total) if total else float("nan")


def lift_quality(y, p) -> float:
    """Braze's "prediction quality": the average gain over random targeting across all audience
    sizes, scaled so 0 = random and 1 = perfect (area between the cumulative-gains curve and the
    diagonal, over the same area for a perfect ranking). Without ties this equals 2 AUC - 1."""
    ranked = _ranked(y, p)
    n, total = len(ranked), ranked.sum()
    if total == 0 or total == n:
        return float("nan")
    k = np.arange(1, n + 1)
    gains = np.cumsum(ranked) / total
    perfect = np.minimum(k, total) / total
    return float((gains - k / n).sum() / (perfect - k / n).sum())


def score_metrics(y, p, prefix: str) -> dict[str, float]:
    """Every hold-out metric of probabilities ``p`` against outcomes ``y``, named ``<prefix>_…``."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    if not np.isfinite(p).all():  # a score that could not be computed ranks as the average one
        finite = np.isfinite(p)
        p = np.where(finite, p, p[finite].mean() if finite.any() else y.mean())
    p = np.clip(p, EPS, 1 - EPS)
    lift10, recall10 = top_share(y, p, 0.10)
    lift20, recall20 = top_share(y, p, 0.20)
    values = {
        "roc_auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "log_loss": log_loss(y, p, labels=[0, 1]),
        "brier": brier_score_loss(y, p),
        "ece": expected_calibration_error(y, p),
        "top10_lift": lift10,
        "top10_recall": recall10,
        "top20_lift": lift20,
        "top20_recall": recall20,
        "lift_quality": lift_quality(y, p),
    }
    return {f"{prefix}_{name}": float(value) for name, value in values.items()}


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil's (1982) standard error of a ROC AUC on that many positives and negatives."""
    if positives < 1 or negatives < 1:
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return float(np.sqrt(max(var, 0.0)))


#: The ROC AUC standard error the run uses (MLflow param ``roc_auc_se_method``): DeLong's
#: placement values summed per subscriber, Obuchowski's (1997) between-cluster variance.
CLUSTERED_SE = "obuchowski_clustered_delong"


def subscriber_clusters(index: pd.Index) -> np.ndarray:
    """One integer per row naming its subscriber (``SUBSCRIBER_INDEX`` levels), so that one
    subscriber's rows at several cut-offs form one cluster; an index without those levels
    makes every row its own cluster."""
    names = set(index.names)
    if not all(level in names for level in schema.SUBSCRIBER_INDEX):
        return np.arange(len(index))
    who = pd.MultiIndex.from_arrays([index.get_level_values(n) for n in schema.SUBSCRIBER_INDEX])
    return who.factorize()[0]


def clustered_auc_standard_error(y, p, clusters=None) -> float:
    """Standard error of the ROC AUC of scores ``p`` when rows come in ``clusters`` (one label
    per row: a subscriber seen at several cut-offs is one cluster, not several independent rows).

    Each row's DeLong placement value (share of the other class it outranks, ties half) is
    summed per cluster, and the variance is Obuchowski's (1997, Biometrics 53:567) between-cluster
    one: S10/N1 + S01/N0 + 2 S11/(N1 N0). With one row per cluster (``clusters`` None) it is
    DeLong's (1988) standard error. NaN when either class has fewer than two clusters."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    if clusters is None:
        codes = np.arange(len(y))
    else:
        codes = np.unique(np.asarray(clusters), return_inverse=True)[1].ravel()
    if len(codes) != len(y) or len(p) != len(y):
        raise ValueError(
            f"clustered_auc_standard_error needs one score and one cluster per outcome; found "
            f"{len(y)} outcomes, {len(p)} scores and {len(codes)} cluster labels"
        )
    n1, n0 = int(y.sum()), int((~y).sum())
    pos_at, neg_at = codes[y], codes[~y]
    k10, k01 = len(np.unique(pos_at)), len(np.unique(neg_at))
    if k10 < 2 or k01 < 2:
        return float("nan")
    ranks = rankdata(p)
    v10 = (ranks[y] - rankdata(p[y])) / n0  # per positive: share of negatives below it
    v01 = 1 - (ranks[~y] - rankdata(p[~y])) / n1  # per negative: share of positives above it
    auc = v10.mean()
    k = int(codes.max()) + 1
    x = np.bincount(pos_at, v10, k) - np.bincount(pos_at, minlength=k) * auc
    z = np.bincount(neg_at, v01, k) - np.bincount(neg_at, minlength=k) * auc
    present = len(np.unique(codes))
    s10 = k10 / ((k10 - 1) * n1) * np.dot(x, x)
    s01 = k01 / ((k01 - 1) * n0) * np.dot(z, z)
    s11 = present / (present - 1) * np.dot(x, z)
    var = s10 / n1 + s01 / n0 + 2 * s11 / (n1 * n0)
    return float(np.sqrt(max(var, 0.0)))


def oracle_ratio(model_auc: float, oracle_auc: float) -> float:
    """(AUC - 0.5) / (AUC_oracle - 0.5): how much of the achievable ranking skill the model has."""
    return float((model_auc - 0.5) / (oracle_auc - 0.5)) if oracle_auc != 0.5 else float("nan")


def bucket_table(y, p, buckets, order: list[str]) -> pd.DataFrame:
    """Per bucket: users, mean probability, expected churners and non-churners targeted (from the
    calibrated probabilities) and the realised churners and churn rate."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": p, "bucket": buckets})
    grouped = frame.groupby("bucket", sort=False)
    table = pd.DataFrame(
        {
            "users": grouped.size(),
            "mean_probability": grouped["p"].mean(),
            "expected_churners": grouped["p"].sum(),
            "expected_non_churners": grouped["p"].apply(lambda s: float((1 - s).sum())),
            "realised_churners": grouped["y"].sum().astype(int),
            "realised_churn_rate": grouped["y"].mean(),
        }
    )
    table = table.reindex([b for b in order if b in table.index])
    table["share"] = table["users"] / len(frame)
    table.index.name = schema.BUCKET
    return table


DECILES = 10


def decile_table(y, p, groups: int = DECILES) -> pd.DataFrame:
    """Per risk decile (1 = the riskiest tenth by probability; ties split by position): users,
    mean predicted probability and realised churn rate, for predicted-vs-realised plots."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    which = np.empty(len(p), dtype=int)
    which[order] = np.arange(len(p)) * groups // max(len(p), 1) + 1
    frame = pd.DataFrame({"decile": which, "y": np.asarray(y, dtype=float), "p": p})
    grouped = frame.groupby("decile")
    return pd.DataFrame(
        {
            "users": grouped.size(),
            "mean_probability": grouped["p"].mean(),
            "realised_churn_rate": grouped["y"].mean(),
        }
    )


# --- baselines -------------------------------------------------------------------------------


def rule_columns(columns, registry: Mapping[str, Feature], reasons=RULE_REASONS) -> list[str]:
    """Feature columns a CRM team would flag on: those the registry files under ``reasons``."""
    return [c for c in columns if c in registry and registry[c].reason in reasons]


class RuleBaseline:
    """ "At risk" when any rule column is set (cancelled, billing trouble); each group scored with
    its churn rate on the training rows, so log loss and calibration are comparable."""

    def __init__(self, columns: list[str]):
        if not columns:
            raise ValueError(
                f"no feature in the frame has a reason in {RULE_REASONS}; the rule needs one"
            )
        self.columns = columns

    def flag(self, X: pd.DataFrame) -> np.ndarray:
        values = X[self.columns].apply(pd.to_numeric, errors="coerce").astype("float64")
        return (values.fillna(0.0) > 0).any(axis=1).to_numpy()

    def fit(self, X: pd.DataFrame, y) -> RuleBaseline:
        y = np.asarray(y, dtype=float)
        flag = self.flag(X)
        base = y.mean()
        self.rates_ = {
            key: (y[flag == key].sum() + base) / ((flag == key).sum() + 1) for key in (True, False)
        }
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        flag = self.flag(X)
        q = np.where(flag, self.rates_[True], self.rates_[False])
        return np.column_stack([1 - q, q])


#: The logistic regression's inverse L2 strengths tried on validation (``tuned_logreg``).
LOGREG_C_GRID = (0.003, 0.03, 0.3, 3.0)


def signed_log1p(values):
    """sign(x) log(1 + |x|): counts and days on a log scale, negative trends kept negative."""
    values = np.asarray(values, dtype=float)
    return np.sign(values) * np.log1p(np.abs(values))


def logreg_baseline(types: FeatureTypes, seed: int, C: float = 0.3) -> Pipeline:
    """An honest logistic regression on the same features (L2, ``C``): numerics on a signed
    log1p scale, median-imputed with missing-value indicators, top categories one-hot,
    standardised. ``tuned_logreg`` picks ``C`` on validation."""
    numeric = [*types.numeric, *types.boolean]
    cats = list(types.categorical)
    steps: list[tuple[str, object]] = [
        ("schema", FrameSchema(types.numeric, types.categorical, types.boolean))
    ]
    if numeric:
        steps += [
            ("flags", AddMissingIndicator(variables=numeric, missing_only=True)),
            ("median", MeanMedianImputer(imputation_method="median", variables=numeric)),
        ]
    if types.numeric:
        steps.append(
            (
                "log1p",
                SklearnTransformerWrapper(
                    FunctionTransformer(signed_log1p, feature_names_out="one-to-one"),
                    variables=list(types.numeric),
                ),
            )
        )
    if cats:
        steps += [
            ("cat_missing", CategoricalImputer(fill_value=MISSING_CATEGORY, variables=cats)),
            # sklearn's encoder, wrapped: feature-engine's does a pandas-4-deprecated inplace drop
            (
                "onehot",
                SklearnTransformerWrapper(
                    OneHotEncoder(
                        max_categories=10, handle_unknown="infrequent_if_exist", sparse_output=False
                    ),
                    variables=cats,
                ),
            ),
        ]
    steps += [
        ("scale", StandardScaler().set_output(transform="pandas")),
        ("model", LogisticRegression(C=C, l1_ratio=0, max_iter=2000, random_state=seed)),
    ]
    return Pipeline(steps)


def tuned_logreg(
    types: FeatureTypes, seed: int, X, y, X_valid, y_valid, grid=LOGREG_C_GRID
) -> tuple[Pipeline, float, float]:
    """The logistic regression fitted on (X, y) with the ``C`` of ``grid`` that gives the best
    validation PR AUC: (pipeline, C, its validation PR AUC)."""
    best: tuple[float, float, Pipeline] | None = None
    for C in grid:
        fitted = logreg_baseline(types, seed, C).fit(X, y)
        value = average_precision_score(
            np.asarray(y_valid, dtype=int), fitted.predict_proba(X_valid)[:, 1]
        )
        if best is None or value > best[0]:
            best = (float(value), C, fitted)
    assert best is not None
    return best[2], best[1], best[0]


def join_truth(holdout_index: pd.MultiIndex, truth: pd.DataFrame) -> pd.Series:
    """The oracle's churn probability for each hold-out row (NaN where the truth has no row)."""
    keys = list(schema.SNAPSHOT_INDEX)
    rows = holdout_index.to_frame(index=False)[keys]
    rows[schema.AS_OF] = pd.to_datetime(rows[schema.AS_OF], utc=True).astype("datetime64[us, UTC]")
    known = truth[[*keys, schema.CHURN_PROBABILITY]].copy()
    known[schema.AS_OF] = pd.to_datetime(known[schema.AS_OF], utc=True).astype(
        "datetime64[us, UTC]"
    )
    for key in (schema.USER_ID, schema.PLATFORM):
        rows[key] = rows[key].astype("str")
        known[key] = known[key].astype("str")
    merged = rows.merge(known.drop_duplicates(subset=keys), on=keys, how="left")
    return pd.Series(
        merged[schema.CHURN_PROBABILITY].to_numpy(dtype=float), index=holdout_index, name="oracle"
    )
