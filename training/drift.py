"""Population stability: a compact reference of a model's training data, and the PSI of a scored
population against it.

``reference(X, score)`` keeps, per feature and for the score, the bins and the share of rows in
each (not the rows): numeric (and boolean) columns are binned at their quantiles, with bins of
their own below the smallest and above the largest training value; categorical columns keep
their most frequent levels, the rest in "other" (where unseen levels also go); every column has
a bin for missing values. ``psi(reference, values)`` bins new values the same way and returns

    PSI = sum over bins of (current share - reference share) * ln(current share / reference share)

with both shares floored at ``EPS`` so an empty bin stays finite. Rules of thumb: below 0.1 no
shift, 0.1-0.2 moderate, above 0.2 a shift worth acting on (``monitoring.psi_threshold``).

Why not a library: the maintained drift libraries (evidently, nannyml, popmon, alibi-detect)
each pull a large dependency tree into a package whose only need is a 20-line statistic, and
feature-engine's ``DropPSIFeatures`` (already a dependency) bins two samples of raw rows it
holds at once, where a served model keeps a few hundred numbers instead of its training rows.
The tests hold this implementation to a slow, obvious one written out in the test file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from base import LapseError

#: Quantile bins per numeric column (ten: deciles, the usual PSI resolution).
BINS = 10
#: Most frequent categorical levels kept by name; the rest are pooled in "other".
MAX_LEVELS = 20
#: Shares are floored at this before the logarithm, so a bin empty on one side stays finite.
EPS = 1e-4
#: The reference's key for the model's score (no feature may be called that).
SCORE = "churn_probability"
#: Format version of the stored reference.
VERSION = 1

__all__ = [
    "BINS",
    "EPS",
    "SCORE",
    "DriftReferenceError",
    "DriftReport",
    "bin_shares",
    "column_reference",
    "population_stability",
    "feature_counts",
    "psi",
    "stability_of_counts",
    "reference",
    "reference_from_json",
]


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    if total == 0:
        return [0.0] * len(counts)
    return [round(float(c) / total, 6) for c in counts]


def column_reference(values: pd.Series | np.ndarray, kind: str, bins: int = BINS) -> dict:
    """The bins of one column and the share of ``values`` in each (kind: numeric, boolean or
    categorical). Shares list every bin in order, the missing-value bin last."""
    if kind == "categorical":
        series = pd.Series(values, dtype="object")
        present = series[series.notna()].astype(str)
        counts = present.value_counts(sort=False)
        # most frequent first, ties by name, so the same data gives the same reference
        order = sorted(counts.index, key=lambda level: (-counts[level], level))
        levels = order[:MAX_LEVELS]
        spec = {"kind": "categorical", "levels": levels}
    else:
        x = _numeric(values)
        finite = x[~np.isnan(x)]
        spec_edges = _quantile_edges(np.sort(finite), bins)
        spec = {"kind": "numeric", "edges": spec_edges}
    spec["shares"] = _shares(_counts(spec, values))
    return spec


def _quantile_edges(ordered: np.ndarray, bins: int) -> list[float]:
    """The distinct values at the 0, 1/bins, ..., 1 quantiles of sorted values (each the
    smallest value reaching its quantile: an observed value, so ties keep whole bins)."""
    n = len(ordered)
    if n == 0:
        return []
    index = [max(0, -(-k * n // bins) - 1) for k in range(bins + 1)]  # ceil(k n / bins) - 1
    return [float(e) for e in np.unique(ordered[index])]


def _numeric(values) -> np.ndarray:
    """Values as float64 with NaN for missing (booleans as 0/1, text that is no number missing)."""
    series = pd.Series(values)
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype("Float64")
    else:
        series = pd.to_numeric(series, errors="coerce")
    return series.to_numpy(dtype="float64", na_value=np.nan)


def _counts(spec: Mapping[str, Any], values) -> np.ndarray:
    """Rows of ``values`` per bin of ``spec`` (the missing-value bin last)."""
    if spec["kind"] == "categorical":
        levels = list(spec["levels"])
        series = pd.Series(values, dtype="object")
        missing = series.isna().to_numpy()
        codes = pd.Index(levels, dtype="object").get_indexer(series.astype(str).to_numpy())
        index = np.where(codes < 0, len(levels), codes)  # levels..., other, missing
        index[missing] = len(levels) + 1
        return np.bincount(index, minlength=len(levels) + 2)
    edges = np.asarray(spec["edges"], dtype="float64")
    x = _numeric(values)
    missing = np.isnan(x)
    if not len(edges):  # no value at training: one bin for any value, one for missing
        return np.array([int((~missing).sum()), int(missing.sum())])
    n_bins = len(edges) + 2  # below, [e0], (e0, e1], ..., (e_last, inf)
    index = np.searchsorted(edges, x, side="left") + 1
    index[x < edges[0]] = 0
    index[missing] = n_bins
    return np.bincount(index, minlength=n_bins + 1)


def bin_shares(spec: Mapping[str, Any], values) -> np.ndarray:
    """The share of ``values`` in each bin of a column reference (all zero when empty)."""
    return np.asarray(_shares(_counts(spec, values)), dtype="float64")


def psi(spec: Mapping[str, Any], values) -> float | None:
    """The population stability index of ``values`` against a column reference; None when
    there are no values to compare."""
    return _psi_of_counts(spec, _counts(spec, values))


def reference(
    X: pd.DataFrame, score: Sequence[float] | np.ndarray, kinds: Mapping[str, str]
) -> dict:
    """The drift reference of a model: every feature of ``X`` (``kinds``: column -> numeric,
    boolean or categorical) and its ``score`` on the reference rows."""
    if SCORE in X.columns:
        raise ValueError(f"a feature may not be called {SCORE!r}: the score's reference is")
    return {
        "version": VERSION,
        "rows": len(X),
        "score_rows": len(score),
        "bins": BINS,
        "features": {c: column_reference(X[c], kinds.get(c, "numeric")) for c in X.columns},
        "score": column_reference(np.asarray(score, dtype="float64"), "numeric"),
    }


class DriftReferenceError(LapseError, ValueError):
    """A stored drift reference this Lapse cannot read."""


def reference_from_json(text: str) -> dict:
    """A reference kept as JSON (by the model, or as a run's ``drift_reference.json``)."""
    try:
        reference = json.loads(text)
    except ValueError as exc:
        raise DriftReferenceError(f"drift reference: not JSON ({exc})") from None
    if not isinstance(reference, dict) or reference.get("version") != VERSION:
        found = reference.get("version") if isinstance(reference, dict) else type(reference)
        raise DriftReferenceError(
            f"drift reference: format version {found!r}, expected {VERSION}; run `lapse train` "
            "again with this Lapse"
        )
    return reference


@dataclass(frozen=True)
class DriftReport:
    """PSI of the score and of each feature; ``flagged``: features (and ``churn_probability``
    for the score) past the threshold, largest first. ``available`` is False with a ``reason``
    when there was nothing to compare (a model without a reference, an empty population)."""

    threshold: float
    rows: int
    score_psi: float | None = None
    feature_psi: dict[str, float] = field(default_factory=dict)
    flagged: tuple[str, ...] = ()
    available: bool = True
    reason: str | None = None
    #: Features past the threshold that are exempt from flagging (``monitoring.drift_exempt``:
    #: they grow with the calendar), largest first: reported, never flagged.
    exempted: tuple[str, ...] = ()

    @property
    def drifted(self) -> bool:
        return bool(self.flagged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "rows": self.rows,
            "available": self.available,
            "reason": self.reason,
            "score_psi": self.score_psi,
            "feature_psi": self.feature_psi,
            "flagged": list(self.flagged),
            "exempted": list(self.exempted),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        return cls(
            threshold=float(data["threshold"]),
            rows=int(data["rows"]),
            score_psi=data.get("score_psi"),
            feature_psi={k: float(v) for k, v in (data.get("feature_psi") or {}).items()},
            flagged=tuple(data.get("flagged") or ()),
            available=bool(data.get("available", True)),
            reason=data.get("reason"),
            exempted=tuple(data.get("exempted") or ()),
        )

    @classmethod
    def unavailable(cls, threshold: float, rows: int, reason: str) -> DriftReport:
        return cls(threshold, rows, available=False, reason=reason)


def feature_counts(reference: Mapping[str, Any] | None, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """Rows of ``X`` per bin of each referenced feature. Counts add up over subscriber
    partitions, so a cluster's workers count their own rows and only counts travel."""
    if reference is None:
        return {}
    return {
        name: _counts(spec, X[name])
        for name, spec in reference["features"].items()
        if name in X.columns
    }


def _psi_of_counts(spec: Mapping[str, Any], counts: np.ndarray) -> float | None:
    if counts.sum() == 0:
        return None
    expected = np.maximum(np.asarray(spec["shares"], dtype="float64"), EPS)
    actual = np.maximum(np.asarray(_shares(counts), dtype="float64"), EPS)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def population_stability(
    reference: Mapping[str, Any] | None,
    X: pd.DataFrame,
    score: Sequence[float] | np.ndarray,
    threshold: float,
    exempt: Sequence[str] = (),
) -> DriftReport:
    """PSI of ``score`` and of each referenced feature of ``X`` against ``reference``; features
    in ``exempt`` past the threshold are reported as ``exempted``, not flagged.

    Unavailable (not an error) without a reference (a model trained before references were
    kept) or without rows (nobody to compare).
    """
    counts = feature_counts(reference, X)
    return stability_of_counts(reference, counts, len(X), score, threshold, exempt)


def stability_of_counts(
    reference: Mapping[str, Any] | None,
    counts: Mapping[str, np.ndarray],
    rows: int,
    score: Sequence[float] | np.ndarray,
    threshold: float,
    exempt: Sequence[str] = (),
) -> DriftReport:
    """``population_stability`` from per-feature bin counts (``feature_counts``, summed over
    partitions) of ``rows`` scored subscribers."""
    if reference is None:
        return DriftReport.unavailable(
            threshold,
            rows,
            "the model carries no training reference (trained by an older "
            "Lapse); run `lapse train` again to get drift checks",
        )
    if rows == 0:
        return DriftReport.unavailable(threshold, 0, "no subscribers were scored")
    specs = reference["features"]
    values = {name: _psi_of_counts(specs[name], c) for name, c in counts.items() if name in specs}
    feature_psi = {k: round(v, 6) for k, v in values.items() if v is not None}
    score_psi = psi(reference["score"], np.asarray(score, dtype="float64"))
    over = {k: v for k, v in feature_psi.items() if v > threshold}
    if score_psi is not None and score_psi > threshold:
        over[SCORE] = score_psi
    ranked = sorted(over, key=lambda k: (-over[k], k))
    return DriftReport(
        threshold=threshold,
        rows=rows,
        score_psi=None if score_psi is None or math.isnan(score_psi) else round(score_psi, 6),
        feature_psi=feature_psi,
        flagged=tuple(k for k in ranked if k == SCORE or k not in exempt),
        exempted=tuple(k for k in ranked if k != SCORE and k in exempt),
    )
