"""Scoring a feature frame with a trained model, and the lean path the HTTP service takes.

``score(model, features)`` is the batch path (the model's scikit-learn Pipeline): a feature frame
in, the scores-file contract out. ``LeanScorer`` is derived from the same fitted objects when a
model loads: the feature-engine steps become the lookups they learnt (imputed level, frequent
levels, ordinal codes, dropped columns) and LightGBM's booster scores a numpy matrix, so one
request costs well under a millisecond instead of the Pipeline's 10-20 ms of pandas bookkeeping.
It is not a second copy of the transforms: every number it uses is read from the fitted
Pipeline, and a test holds it to the Pipeline's probabilities (to 1e-9) on a whole hold-out.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from base import LapseError, shown
from features import schema as s
from training.drift import SCORE_DECIMALS
from training.pipeline import ChurnModel, calibration_function
from training.reasons import explain, membership, reason_table, strongest

__all__ = ["TOP_REASONS", "LeanScorer", "RowError", "ScoringError", "score"]

#: Reasons kept per user (the sync sends the first one, if configured).
TOP_REASONS = 3


class ScoringError(LapseError, ValueError):
    """A feature frame the model cannot score (columns it was not trained on)."""


class RowError(ScoringError):
    """A feature row with a value of the wrong type; says the row and the field."""


def score(model: ChurnModel, features: pd.DataFrame, top: int = TOP_REASONS) -> pd.DataFrame:
    """Scores for a feature frame indexed by (user_id, platform).

    Columns: user_id, platform, churn_probability (calibrated), bucket (the model's own bounds)
    and reasons (up to ``top`` reason groups raising the risk, strongest first).
    """
    missing = [c for c in model.features_ if c not in features.columns]
    if missing:
        raise ScoringError(
            f"feature frame lacks {len(missing)} column(s) the model was trained on: "
            f"{missing[:5]}; build the features with the model's own definition "
            "(model.feature_definition)"
        )
    X = features[model.features_]
    probability = model.predict_proba(X)[:, 1]
    reasons, _ = explain(model, X, k=top)
    out = features.index.to_frame(index=False)
    out[s.CHURN_PROBABILITY] = probability.round(SCORE_DECIMALS)
    out[s.BUCKET] = model.buckets(probability)
    out[s.REASONS] = reasons.to_numpy()
    return out


class LeanScorer:
    """A fitted ``ChurnModel``'s scoring path without pandas: rows (mappings) -> a numpy matrix
    in the booster's column order -> calibrated probability, bucket and reasons."""

    def __init__(self, model: ChurnModel) -> None:
        pipe = model.pipeline_
        steps = pipe.named_steps
        self.model = model
        self.features: tuple[str, ...] = tuple(model.features_)
        clf = pipe[-1]
        self.columns: list[str] = list(clf.feature_name_)  # after constant columns were dropped
        self._booster = clf.booster_
        self._iteration = getattr(clf, "best_iteration_", None) or None
        self._codes: dict[str, tuple[dict[str, float], float]] = {}
        if "encode" in steps:
            fill = steps["cat_missing"].imputer_dict_
            frequent = steps["rare"].encoder_dict_
            rare = steps["rare"].replace_with
            encoder = steps["encode"]
            unseen = float(encoder._unseen)
            for column, codes in encoder.encoder_dict_.items():
                keep = set(frequent.get(column, ()))
                # every label the steps can produce maps to its code; the rest become `rare`
                table = {label: float(code) for label, code in codes.items() if label in keep}
                rare_code = float(codes[rare]) if rare in codes else unseen
                self._codes[column] = (table, rare_code)
        self._fill = {c: fill[c] for c in self._codes} if self._codes else {}
        # the numeric columns, read together in one numpy conversion per request
        self._numeric = [c for c in self.columns if c not in self._codes]
        # a row's numeric values as one tuple, read in C (a row missing one falls back to .get)
        self._numeric_values = (
            operator.itemgetter(*self._numeric) if len(self._numeric) > 1 else None
        )
        self._numeric_at = np.array(
            [j for j, c in enumerate(self.columns) if c not in self._codes], dtype=np.intp
        )
        self._coded = [(j, c) for j, c in enumerate(self.columns) if c in self._codes]
        table = reason_table(model.features_, model.reason_groups_)
        self._groups, self._member = membership([*self.columns, "bias"], table)
        self._calibrate = calibration_function(model.calibration_, model.calibrator_)

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The booster's input for ``rows`` (RowError names the row and field of a bad value)."""
        try:  # column by column, numbers converted by numpy (None is NaN, "4" is 4.0)
            return self._columns(rows)
        except (ValueError, TypeError, OverflowError):
            return self._rows(rows)  # a value numpy would not take: name its row and field

    def _columns(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.empty((len(rows), len(self.columns)), dtype=np.float64)
        if self._numeric and rows:
            # every numeric value of every row in one conversion (one numpy call, not one per
            # column: a third of a one-row request's matrix), each as float() reads it
            numeric = self._numeric
            try:
                if self._numeric_values is None:
                    raise KeyError(numeric[0])
                values = list(map(self._numeric_values, rows))
            except KeyError:  # a feature missing from a row reads as null, as .get gives it
                values = [[row.get(c) for c in numeric] for row in rows]
            numbers = np.array(values, dtype=np.float64)
            if numbers.shape != (len(rows), len(numeric)):  # a list among the values
                raise ValueError("numeric columns")
            out[:, self._numeric_at] = numbers
        for j, column in self._coded:
            values = [row.get(column) for row in rows]
            distinct = set(values)  # a batch repeats a few levels: each looked up once
            if not all(v is None or isinstance(v, str) or _is_nan(v) for v in distinct):
                raise TypeError(column)
            codes = {v: self._code(column, v) for v in distinct}
            out[:, j] = [codes[v] for v in values]
        return out

    def _rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.empty((len(rows), len(self.columns)), dtype=np.float64)
        for i, row in enumerate(rows):
            for j, column in enumerate(self.columns):
                value = row.get(column)
                if column in self._codes:
                    if not (value is None or isinstance(value, str) or _is_nan(value)):
                        raise RowError(
                            f"row {i}, field {column!r}: expected text or null (a category), "
                            f"got {shown(value)}"
                        )
                    out[i, j] = self._code(column, value)
                else:
                    out[i, j] = _number(value, i, column)
        return out

    def _code(self, column: str, value: Any) -> float:
        table, rare_code = self._codes[column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = self._fill[column]
        return table.get(value if isinstance(value, str) else str(value), rare_code)

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities of a matrix from ``matrix``."""
        raw = self._booster.predict(matrix, num_iteration=self._iteration, num_threads=1)
        return self._calibrate(raw)

    def reasons(self, matrix: np.ndarray, top: int = TOP_REASONS) -> list[list[str]]:
        """Up to ``top`` reason groups raising each row's risk, strongest first."""
        contributions = self._booster.predict(
            matrix, num_iteration=self._iteration, num_threads=1, pred_contrib=True
        )
        return strongest(contributions @ self._member, self._groups, top)

    def score(
        self, rows: Sequence[Mapping[str, Any]], top: int = TOP_REASONS, reasons: bool = True
    ) -> dict[str, list]:
        """Probability (rounded as in the scores file), bucket and reasons per row; without
        ``reasons`` the reasons are not computed (TreeSHAP costs several times the prediction)
        and come back as None. No rows, no scores (LightGBM divides by the row count)."""
        if not rows:
            return {s.CHURN_PROBABILITY: [], s.BUCKET: [], s.REASONS: []}
        matrix = self.matrix(rows)
        probability = self.probabilities(matrix)
        return {
            s.CHURN_PROBABILITY: probability.round(SCORE_DECIMALS).tolist(),
            s.BUCKET: self.model.buckets(probability).tolist(),
            s.REASONS: self.reasons(matrix, top) if reasons else [None] * len(rows),
        }


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _number(value: Any, row: int, column: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool | int | float | np.number):
        try:
            return float(value)
        except OverflowError:
            raise RowError(
                f"row {row}, field {column!r}: {str(value)[:20]}... is too large for a number"
            ) from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise RowError(f"row {row}, field {column!r}: expected a number or null, got {shown(value)}")
