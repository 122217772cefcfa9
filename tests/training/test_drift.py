"""training.drift: the reference a model keeps of its training data, and PSI against it, held
to a slow obvious implementation; categoricals, missing values, constants, empty populations."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest

from features import schema
from training import drift
from training.drift import (
    EPS,
    DriftReferenceError,
    DriftReport,
    column_reference,
    population_stability,
    psi,
    reference_from_json,
)


def slow_psi(reference_values: list, current_values: list, kind: str) -> float:
    """PSI written out: bins from the reference by hand, every value placed by comparisons."""

    def is_missing(v) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    if kind == "categorical":
        present = [str(v) for v in reference_values if not is_missing(v)]
        counts: dict[str, int] = {}
        for v in present:
            counts[v] = counts.get(v, 0) + 1
        levels = sorted(counts, key=lambda k: (-counts[k], k))[: drift.MAX_LEVELS]

        def place(v) -> str:
            if is_missing(v):
                return "<missing>"
            return str(v) if str(v) in levels else "<other>"

        bins = [*levels, "<other>", "<missing>"]
    else:
        present = sorted(float(v) for v in reference_values if not is_missing(v))
        n = len(present)
        edges = []
        for k in range(drift.BINS + 1):  # the inverted-CDF quantile: the smallest value reaching q
            index = max(0, -(-k * n // drift.BINS) - 1)  # ceil(k n / BINS) - 1, in integers
            if present[index] not in edges:
                edges.append(present[index])

        def place(v) -> str:
            if is_missing(v):
                return "<missing>"
            v = float(v)
            if v < edges[0]:
                return "<below>"
            if v == edges[0]:
                return "0"
            for i in range(1, len(edges)):
                if edges[i - 1] < v <= edges[i]:
                    return str(i)
            return "<above>"

        bins = ["<below>", *(str(i) for i in range(len(edges))), "<above>", "<missing>"]

    def shares(values: list) -> dict[str, float]:
        placed = [place(v) for v in values]
        return {b: round(placed.count(b) / len(values), 6) for b in bins}

    expected, actual = shares(reference_values), shares(current_values)
    total = 0.0
    for b in bins:
        e, a = max(expected[b], EPS), max(actual[b], EPS)
        total += (a - e) * math.log(a / e)
    return total


def _with_missing(values: np.ndarray, rng, share: float) -> list:
    return [None if rng.random() < share else v for v in values.tolist()]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numeric_psi_equals_the_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    before = _with_missing(np.round(rng.gamma(2.0, 3.0, 400), 1), rng, 0.1)
    after = _with_missing(np.round(rng.gamma(2.5, 3.0, 300), 1), rng, 0.2)
    spec = column_reference(pd.Series(before, dtype="Float64"), "numeric")
    got = psi(spec, pd.Series(after, dtype="Float64"))
    assert got == pytest.approx(slow_psi(before, after, "numeric"), rel=1e-9, abs=1e-12)
    assert got > 0.01  # a shifted gamma and twice the missing values move the shares


@pytest.mark.parametrize("seed", [0, 1])
def test_categorical_psi_equals_the_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    levels = np.array([f"c{i:02d}" for i in range(25)], dtype=object)  # more than MAX_LEVELS
    before = _with_missing(levels[rng.zipf(1.6, 500) % 25], rng, 0.05)
    after = _with_missing(levels[(rng.zipf(1.6, 200) + 3) % 25], rng, 0.05) + ["never-seen"] * 9
    spec = column_reference(pd.Series(before, dtype="str"), "categorical")
    assert len(spec["levels"]) == drift.MAX_LEVELS
    assert len(spec["shares"]) == drift.MAX_LEVELS + 2  # + other (rare and unseen) + missing
    got = psi(spec, pd.Series(after, dtype="str"))
    assert got == pytest.approx(slow_psi(before, after, "categorical"), rel=1e-9)
    assert got > 0.2  # the levels moved by three places


def test_the_same_population_is_stable_and_a_shift_is_not() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 5000)
    spec = column_reference(x, "numeric")
    assert psi(spec, x) == pytest.approx(0.0, abs=1e-9)
    assert psi(spec, rng.normal(0, 1, 5000)) < 0.02  # sampling noise only
    assert psi(spec, rng.normal(0.5, 1, 5000)) > 0.2  # half a standard deviation
    assert psi(spec, x + 10) > 5  # everything above the training maximum: its own bin


def test_missing_values_are_a_bin_of_their_own() -> None:
    x = pd.Series([1.0, 2.0, 3.0, 4.0] * 50)
    spec = column_reference(x, "numeric")
    assert spec["shares"][-1] == 0.0
    half_missing = pd.Series([1.0, None, 3.0, None] * 50, dtype="Float64")
    assert psi(spec, half_missing) > 1.0  # half the rows now sit in a bin that was empty


def test_a_constant_feature_is_flagged_when_its_value_moves_either_way() -> None:
    spec = column_reference(np.full(300, 7.0), "numeric")
    assert spec["edges"] == [7.0] and spec["shares"] == [0.0, 1.0, 0.0, 0.0]
    assert psi(spec, np.full(50, 7.0)) == 0.0
    assert psi(spec, np.full(50, 8.0)) > 5 and psi(spec, np.full(50, 6.0)) > 5


def test_booleans_and_all_missing_columns() -> None:
    flags = pd.Series([True, False, False, None] * 25, dtype="boolean")
    spec = column_reference(flags, "boolean")
    assert spec["edges"] == [0.0, 1.0] and spec["shares"] == [0.0, 0.5, 0.25, 0.0, 0.25]
    assert psi(spec, pd.Series([True] * 10, dtype="boolean")) > 1
    empty = column_reference(pd.Series([None] * 10, dtype="Float64"), "numeric")
    assert empty["edges"] == [] and empty["shares"] == [0.0, 1.0]
    assert psi(empty, pd.Series([None] * 3, dtype="Float64")) == 0.0


def test_an_empty_population_has_no_psi() -> None:
    spec = column_reference(np.arange(100.0), "numeric")
    assert psi(spec, np.array([])) is None
    ref = drift.reference(pd.DataFrame({"a": np.arange(100.0)}), np.linspace(0, 1, 100), {})
    report = population_stability(ref, pd.DataFrame({"a": []}), [], threshold=0.2)
    assert not report.available and report.reason == "no subscribers were scored"
    assert not report.drifted


def test_population_stability_names_the_features_past_the_threshold() -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(
        {
            "steady": rng.normal(0, 1, 2000),
            "moved": rng.normal(0, 1, 2000),
            "country": pd.array(rng.choice(["US", "DE"], 2000), dtype="str"),
        }
    )
    score = rng.beta(2, 5, 2000)
    ref = drift.reference(X, score, {"country": "categorical"})
    now = X.assign(moved=X["moved"] + 1.0, country="BR")
    report = population_stability(ref, now, score, threshold=0.2)
    assert report.flagged == ("country", "moved")  # largest PSI first
    assert report.feature_psi["steady"] == 0.0 and report.score_psi == 0.0
    shifted = population_stability(ref, X, np.clip(score + 0.2, 0, 1), threshold=0.2)
    assert shifted.flagged == (drift.SCORE,)
    assert population_stability(ref, now, score, threshold=50).flagged == ()
    # an exempt feature (it measures the calendar) is reported past the threshold, not flagged
    calendar = population_stability(ref, now, score, threshold=0.2, exempt=("moved", "steady"))
    assert calendar.flagged == ("country",) and calendar.exempted == ("moved",)
    assert calendar.feature_psi == report.feature_psi
    assert DriftReport.from_dict(calendar.to_dict()) == calendar
    # the score is never exempt
    assert population_stability(
        ref, X, np.clip(score + 0.2, 0, 1), 0.2, exempt=(drift.SCORE,)
    ).flagged == (drift.SCORE,)


def test_a_fitted_model_carries_its_reference_through_mlflow(fitted_on_snapshots, tmp_path):
    """Saved and loaded as MLflow saves it (skops), the model keeps the reference: the features
    of its training rows and the score on validation rows."""
    import mlflow.sklearn
    import skops.io

    model, X_hold, _ = fitted_on_snapshots
    path = tmp_path / "model"
    mlflow.sklearn.save_model(
        model, path, skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model))
    )
    loaded = mlflow.sklearn.load_model(str(path))
    ref = loaded.drift_reference
    assert ref == model.drift_reference and set(ref["features"]) == set(model.features_)
    assert ref["rows"] == 1800 and ref["score_rows"] == 600  # 3 training and 1 valid cut-off
    assert ref["features"]["t_country"]["kind"] == "categorical"
    assert ref["features"]["t_auto_renew_off"]["edges"] == [0.0, 1.0]
    report = population_stability(ref, X_hold, loaded.predict_proba(X_hold)[:, 1], threshold=0.2)
    assert report.available and report.flagged == ()  # the hold-out is drawn like training
    assert set(report.feature_psi) == set(model.features_)


def test_a_model_without_a_reference_reports_drift_unavailable(fitted_on_snapshots) -> None:
    model, X_hold, _ = fitted_on_snapshots
    old = copy.deepcopy(model)
    del old.drift_reference_
    assert old.drift_reference is None
    report = population_stability(old.drift_reference, X_hold, [0.1] * len(X_hold), 0.2)
    assert not report.available and "older Lapse" in report.reason and not report.drifted


def test_a_reference_this_lapse_cannot_read_is_named() -> None:
    with pytest.raises(DriftReferenceError, match="format version 99, expected 1"):
        reference_from_json('{"version": 99}')
    with pytest.raises(DriftReferenceError, match="not JSON"):
        reference_from_json("{")
    with pytest.raises(ValueError, match="may not be called"):
        drift.reference(pd.DataFrame({schema.CHURN_PROBABILITY: [0.1]}), [0.1], {})
