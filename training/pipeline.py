"""The served model: a scikit-learn Pipeline (feature-engine + LightGBM), calibrator and buckets.

``ChurnModel`` is what is evaluated, logged to MLflow and served: ``predict_proba`` returns
calibrated probabilities, ``buckets`` applies the bucket policy learnt on validation, and
``contributions`` gives LightGBM's per-feature log-odds contributions for per-user reasons.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import lightgbm as lgb
import numpy as np
import pandas as pd
from feature_engine.encoding import OrdinalEncoder, RareLabelEncoder
from feature_engine.imputation import CategoricalImputer
from feature_engine.selection import DropConstantFeatures
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline

from base import LapseError
from features import schema
from features.build import feature_registry
from features.registry import Feature
from features.settings import FeatureConfig
from training import drift
from training.buckets import (
    BucketPolicy,
    BucketPolicyError,
    bucket_bounds,
    bucket_names,
)
from training.settings import BucketSettings

MISSING_CATEGORY = "missing"
RARE_CATEGORY = "rare"
#: Categories rarer than this share of training rows are pooled into RARE_CATEGORY.
RARE_TOL = 0.005
#: Probabilities are kept inside (EPS, 1 - EPS) so log loss stays finite.
EPS = 1e-6


class FeatureSchemaError(LapseError, ValueError):
    """A frame to score lacks feature columns the model was trained on."""


class ModelVersionError(LapseError):
    """A model saved by an older Lapse lacks what this one needs to score with it."""


@dataclass(frozen=True)
class FeatureTypes:
    """Feature columns by how the pipeline treats them (in frame order)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    boolean: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.numeric + self.boolean + self.categorical


def feature_types(
    frame: pd.DataFrame, registry: Mapping[str, Feature] | None = None
) -> FeatureTypes:
    """Classify feature columns: the registry's kind where registered (default: the default
    feature configuration's), else by dtype."""
    registry = feature_registry() if registry is None else registry
    numeric, categorical, boolean = [], [], []
    for column in frame.columns:
        if column == schema.CHURNED:
            continue
        registered = registry.get(column)
        dtype = frame[column].dtype
        if registered is not None:
            kind = registered.kind
        elif pd.api.types.is_bool_dtype(dtype):
            kind = "boolean"
        elif pd.api.types.is_numeric_dtype(dtype):
            kind = "numeric"
        else:
            kind = "categorical"
        {"numeric": numeric, "categorical": categorical, "boolean": boolean}[kind].append(column)
    return FeatureTypes(tuple(numeric), tuple(categorical), tuple(boolean))


class FrameSchema(TransformerMixin, BaseEstimator):
    """Select the trained feature columns in order and give them stable dtypes.

    Booleans become 0/1 floats (missing stays NaN), numerics float64, categoricals pandas ``str``;
    so a request frame built from JSON scores exactly like the training frame.
    """

    def __init__(self, numeric=(), categorical=(), boolean=()):
        self.numeric = numeric
        self.categorical = categorical
        self.boolean = boolean

    def fit(self, X: pd.DataFrame, y=None) -> FrameSchema:
        self.transform(X)
        self.n_features_in_ = len(self.numeric) + len(self.boolean) + len(self.categorical)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        columns = [*self.numeric, *self.boolean, *self.categorical]
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise FeatureSchemaError(
                f"feature column(s) {missing} missing from the frame to score "
                f"(it has {list(X.columns)}); the model was trained on {columns}"
            )
        out = {}
        for c in self.numeric:
            out[c] = pd.to_numeric(X[c], errors="raise").astype("float64")
        for c in self.boolean:
            out[c] = X[c].astype("Float64").astype("float64")
        for c in self.categorical:
            out[c] = X[c].astype("str")
        return pd.DataFrame(out, index=X.index, columns=columns)


def preprocessor(types: FeatureTypes) -> Pipeline:
    """The feature-engine steps shared by training and serving (unfitted).

    Numeric NaNs are left for LightGBM, which learns where missing values go; categoricals get an
    explicit "missing" level, rare levels pooled, then target-ordered integer codes (unseen = -1).
    """
    cats = list(types.categorical)
    steps: list[tuple[str, object]] = [
        ("schema", FrameSchema(types.numeric, types.categorical, types.boolean))
    ]
    if cats:
        steps += [
            ("cat_missing", CategoricalImputer(fill_value=MISSING_CATEGORY, variables=cats)),
            (
                "rare",
                RareLabelEncoder(
                    tol=RARE_TOL, n_categories=0, replace_with=RARE_CATEGORY, variables=cats
                ),
            ),
            (
                "encode",
                OrdinalEncoder(encoding_method="ordered", variables=cats, unseen="encode"),
            ),
        ]
    steps.append(
        (
            "drop_constant",
            # "include" would fillna numerics with a string (a pandas 4 error); a column that is
            # one value or missing therefore counts as constant
            DropConstantFeatures(variables=list(types.all), missing_values="ignore"),
        )
    )
    return Pipeline(steps)


def classifier(params: dict, seed: int) -> lgb.LGBMClassifier:
    """LightGBM, deterministic and quiet, with many rounds (early stopping decides)."""
    fixed = dict(
        objective="binary",
        n_estimators=2000,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        subsample_freq=1,
        # pred_contrib (per-user reasons) grows with depth squared; on the 100k benchmark depth 8
        # kept the hold-out AUC (0.9069 vs 0.9075 unlimited) at 70% of the contribution time
        max_depth=8,
        # one thread: on small data, or cores shared with other work, OpenMP threads mostly spin
        n_jobs=1,
        verbose=-1,
    )
    return lgb.LGBMClassifier(**{**fixed, **params})


#: The validation metrics every fit records: the first one in the fit's list stops it.
STOPPING_METRICS = ("binary_logloss", "auc")


def fit_classifier(
    clf: lgb.LGBMClassifier,
    Xt: pd.DataFrame,
    y: pd.Series,
    Xvt: pd.DataFrame,
    yv: pd.Series,
    callbacks: list | None = None,
    early_stopping_rounds: int = 50,
    early_stopping_metric: str = "binary_logloss",
) -> lgb.LGBMClassifier:
    """Fit on preprocessed training rows and stop early on ``early_stopping_metric`` of the
    validation rows (``valid_0``); both log loss and AUC are recorded every round.

    Log loss is the default: on apps with rare churners (annual plans, 2% churn) validation AUC
    stops improving after ~100 slow rounds while the future's ranking goes on improving to
    ~300-400 (docs/benchmarks.md: "Early stopping on log loss")."""
    clf = clf.set_params(
        metric=[early_stopping_metric, *(m for m in STOPPING_METRICS if m != early_stopping_metric)]
    )
    return clf.fit(
        Xt,
        np.asarray(y, dtype=int),
        eval_X=(Xvt,),
        eval_y=(np.asarray(yv, dtype=int),),
        callbacks=[
            lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False),
            *(callbacks or []),
        ],
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _fit_calibrator(method: str, p: np.ndarray, y: np.ndarray, seed: int):
    if method == "isotonic":
        return IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(p, y)
    return LogisticRegression(C=1e6, random_state=seed).fit(_logit(p)[:, None], y)


#: Isotonic calibration is a step function: every raw score on one step would share one
#: probability, a tie that costs ranking (on a small app's few hundred validation rows a step
#: holds dozens of users). This much of the raw score added back orders users within a step as
#: LightGBM does, moving no probability by more than 1e-6.
TIE_BREAK = 1e-6


def apply_calibrator(method: str, calibrator, p: np.ndarray) -> np.ndarray:
    """Calibrated probabilities from raw ones, kept inside (EPS, 1 - EPS), in the raw order."""
    if method == "isotonic":
        q = calibrator.predict(p) + TIE_BREAK * np.asarray(p, dtype=float)
    else:
        q = calibrator.predict_proba(_logit(p)[:, None])[:, 1]
    return np.clip(q, EPS, 1 - EPS)


def calibration_function(method: str, calibrator) -> Callable[[np.ndarray], np.ndarray]:
    """``apply_calibrator`` as the arithmetic the fitted calibrator learnt (Platt's coefficient
    and intercept, isotonic's interpolation between its thresholds plus TIE_BREAK): the same
    numbers, without scikit-learn's input checks, which cost more than the model on a one-row
    request."""
    if method == "isotonic":
        low, high, interpolate = calibrator.X_min_, calibrator.X_max_, calibrator.f_

        def isotonic(p: np.ndarray) -> np.ndarray:
            q = interpolate(np.clip(p, low, high)).astype(p.dtype) + TIE_BREAK * p
            return np.clip(q, EPS, 1 - EPS)

        return isotonic
    slope, intercept = float(calibrator.coef_[0, 0]), float(calibrator.intercept_[0])

    def platt(p: np.ndarray) -> np.ndarray:
        return np.clip(expit(_logit(p) * slope + intercept), EPS, 1 - EPS)

    return platt


def choose_calibration(p: np.ndarray, y: np.ndarray, seed: int) -> tuple[str, dict[str, float]]:
    """Pick isotonic or Platt by two-fold cross-fitted log loss on the validation rows.

    Fitting and scoring on the same rows would always favour the more flexible isotonic fit.
    """
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(p)) % 2
    scores: dict[str, float] = {}
    for method in ("isotonic", "platt"):
        losses = []
        for k in (0, 1):
            fit, test = fold != k, fold == k
            if len(np.unique(y[fit])) < 2 or len(np.unique(y[test])) < 2:
                continue
            cal = _fit_calibrator(method, p[fit], y[fit], seed)
            losses.append(log_loss(y[test], apply_calibrator(method, cal, p[test]), labels=[0, 1]))
        scores[method] = float(np.mean(losses)) if losses else float("inf")
    return min(scores, key=lambda m: (scores[m], m != "platt")), scores


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Pipeline + calibrator + bucket policy + feature definition: the one object evaluated,
    logged and served.

    ``bucket_policy`` is the one the Braze sync uses (``[buckets]``; default: high >= 0.5,
    medium >= 0.2); a share policy is turned into probability bounds on validation, so the
    served model buckets exactly as it was evaluated, whatever population it scores.
    ``feature_config`` is the ``[features]`` definition the training frame was built with: every
    scoring path builds its features from the model's own (``feature_config_``), and the
    per-user reasons group contributions by that definition's registry (``reason_groups_``).
    """

    def __init__(
        self,
        params: dict | None = None,
        seed: int = 0,
        bucket_policy: BucketPolicy | None = None,
        early_stopping_rounds: int = 50,
        feature_config: FeatureConfig | None = None,
        early_stopping_metric: str = "binary_logloss",
    ):
        self.params = params
        self.seed = seed
        self.bucket_policy = bucket_policy
        self.early_stopping_rounds = early_stopping_rounds
        self.feature_config = feature_config
        self.early_stopping_metric = early_stopping_metric

    def __setstate__(self, state: dict) -> None:
        # a model registered before training.early_stopping_metric stopped on AUC; without the
        # attribute its get_params (repr, clone) would fail
        state.setdefault("early_stopping_metric", "auc")
        super().__setstate__(state)

    def fit(
        self,
        X: pd.DataFrame,
        y,
        *,
        X_valid: pd.DataFrame,
        y_valid,
        registry: Mapping[str, Feature] | None = None,
    ) -> ChurnModel:
        """Fit on training rows; early stopping, calibration and buckets on validation rows.
        ``registry`` describes the columns (default: the feature definition's registry)."""
        if registry is None:
            registry = feature_registry(self.feature_config or FeatureConfig())
        pre = preprocessor(feature_types(X, registry)).fit(X, np.asarray(y, dtype=int))
        clf = fit_classifier(
            classifier(self.params or {}, self.seed),
            pre.transform(X),
            y,
            pre.transform(X_valid),
            y_valid,
            early_stopping_rounds=self.early_stopping_rounds,
            early_stopping_metric=self.early_stopping_metric,
        )
        return self.assemble(pre, clf, X_valid, y_valid, registry, X_reference=X)

    def assemble(
        self,
        pre: Pipeline,
        clf,
        X_valid: pd.DataFrame,
        y_valid,
        registry: Mapping[str, Feature] | None = None,
        X_reference: pd.DataFrame | None = None,
        X_population: pd.DataFrame | None = None,
    ) -> ChurnModel:
        """Join a fitted preprocessor and classifier, then calibrate and bucket on validation;
        keep the feature definition, the reason group of each column (``registry``) and the
        drift reference (``drift_reference``): the features' bins on ``X_reference`` (the
        training rows; default the validation rows) and the score's on the validation rows,
        which the classifier did not learn from, as it will score new subscribers.
        ``X_population`` (the newest cut-off the training data holds, labelled or not) replaces
        both: drift is then measured against the population closest to the one scored next."""
        config = self.feature_config or FeatureConfig()
        if registry is None:
            registry = feature_registry(config)
        # plain JSON and a plain dict: the saved model (skops) holds no settings class
        self.feature_config_ = config.model_dump_json()
        self.pipeline_ = Pipeline([*pre.steps, ("model", clf)])
        self.features_ = (
            list(pre.named_steps["schema"].numeric)
            + list(pre.named_steps["schema"].boolean)
            + list(pre.named_steps["schema"].categorical)
        )
        self.reason_groups_ = {
            name: registry[name].reason for name in self.features_ if name in registry
        }
        self.n_features_in_ = len(self.features_)
        self.feature_names_in_ = np.asarray(self.features_, dtype=object)
        self.classes_ = np.array([0, 1])
        yv = np.asarray(y_valid, dtype=int)
        raw = self.pipeline_.predict_proba(X_valid)[:, 1]
        self.calibration_, self.calibration_scores_ = choose_calibration(raw, yv, self.seed)
        self.calibrator_ = _fit_calibrator(self.calibration_, raw, yv, self.seed)
        q = apply_calibrator(self.calibration_, self.calibrator_, raw)
        policy = self.bucket_policy or BucketSettings().policy()
        if policy.mode == "given":
            raise BucketPolicyError(
                "buckets.mode 'given' takes buckets from a scores file; a trained model needs "
                "'probability' or 'share'"
            )
        schema_step = pre.named_steps["schema"]
        kinds = {c: "numeric" for c in schema_step.numeric}
        kinds |= {c: "boolean" for c in schema_step.boolean}
        kinds |= {c: "categorical" for c in schema_step.categorical}
        rows = X_valid if X_reference is None else X_reference
        scored = q
        if X_population is not None:
            rows = X_population
            raw_population = self.pipeline_.predict_proba(rows[self.features_])[:, 1]
            scored = apply_calibrator(self.calibration_, self.calibrator_, raw_population)
        # plain JSON, like the feature definition: the saved model holds a text, no new class
        self.drift_reference_ = json.dumps(drift.reference(rows[self.features_], scored, kinds))
        bounds = bucket_bounds(policy, q)
        self.bucket_policy_ = replace(
            policy,
            mode="probability",
            cuts=tuple(zip([n for n, _ in policy.cuts], bounds.tolist(), strict=True)),
        )
        return self

    @property
    def feature_definition(self) -> FeatureConfig:
        """The feature definition this model was trained on (build scoring features with it)."""
        text = getattr(self, "feature_config_", None)
        if text is None:
            raise ModelVersionError(
                "this model was saved by an older Lapse and does not carry its feature "
                "definition; run `lapse train` again"
            )
        return FeatureConfig.model_validate_json(text)

    @property
    def drift_reference(self) -> dict | None:
        """The bins and shares of the training data's features and score (``training.drift``),
        or None for a model saved before Lapse kept them."""
        text = getattr(self, "drift_reference_", None)
        return None if text is None else drift.reference_from_json(text)

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """LightGBM's uncalibrated churn probability."""
        return self.pipeline_.predict_proba(X)[:, 1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): column 1 is P(churn within the horizon)."""
        q = apply_calibrator(self.calibration_, self.calibrator_, self.predict_raw(X))
        return np.column_stack([1.0 - q, q])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where the calibrated churn probability is at least one half."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def buckets(self, probability: np.ndarray) -> np.ndarray:
        """Bucket name per probability: the first bound it reaches, else the rest (no history,
        so no hysteresis; the sync adds that against what Braze acknowledged)."""
        return bucket_names(probability, self.bucket_policy_)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-feature log-odds contributions (LightGBM ``pred_contrib``) plus a ``bias`` column.

        Rows sum to the raw log-odds; features dropped as constant contribute nothing.
        """
        contrib = self.pipeline_.predict(X, pred_contrib=True)
        names = list(self.pipeline_[-1].feature_name_) + ["bias"]
        return pd.DataFrame(contrib, index=X.index, columns=names)
