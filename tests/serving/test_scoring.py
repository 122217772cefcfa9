"""serving.scoring: the batch path (the Pipeline) and the lean path the service takes agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import schema as s
from serving.scoring import LeanScorer, RowError, score
from training.pipeline import ChurnModel
from training.registry import ModelNotFoundError  # noqa: F401 - the service's start error

CATEGORIES = np.array(["US", "DE", "FR", "BR", "JP", "rare-1", "rare-2"], dtype=object)
WEIGHTS = [0.35, 0.25, 0.15, 0.15, 0.094, 0.003, 0.003]


def frame(n: int, seed: int, unseen: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature rows with missing values everywhere, rare and (optionally) unseen categories,
    and a constant column the pipeline drops; churn follows auto-renew off and sessions."""
    rng = np.random.default_rng(seed)
    off = (rng.random(n) < 0.25).astype(float)
    off[rng.random(n) < 0.05] = np.nan
    sessions = rng.poisson(6, n).astype(float)
    sessions[rng.random(n) < 0.1] = np.nan
    country = rng.choice(CATEGORIES, n, p=WEIGHTS).astype(object)
    country[rng.random(n) < 0.05] = None
    if unseen:
        country[rng.random(n) < 0.1] = "never-seen"
    network = rng.choice(np.array(["Organic", "Meta", None], dtype=object), n, p=[0.5, 0.4, 0.1])
    logit = -2.0 + 2.5 * np.nan_to_num(off) - 0.3 * (np.nan_to_num(sessions, nan=6) - 6)
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    index = pd.MultiIndex.from_arrays(
        [pd.Index([f"u{seed}-{i}" for i in range(n)], dtype="str"), ["ios"] * n],
        names=list(s.SUBSCRIBER_INDEX),
    )
    features = pd.DataFrame(
        {
            "auto_renew_off": off,
            "sessions_28d": sessions,
            "price": np.full(n, 9.99),  # constant: dropped, contributes nothing
            "country": pd.array(country, dtype="str"),
            "network": pd.array(network, dtype="str"),
        },
        index=index,
    )
    return features, churned


@pytest.fixture(scope="module", params=["isotonic", "platt"])
def model(request) -> ChurnModel:
    X, y = frame(4000, 1)
    Xv, yv = frame(2000, 2)
    fitted = ChurnModel({"num_leaves": 15, "learning_rate": 0.1}, seed=3).fit(
        X, y, X_valid=Xv, y_valid=yv
    )
    if fitted.calibration_ != request.param:  # exercise both calibrators on the same model
        from training.pipeline import _fit_calibrator

        raw = fitted.predict_raw(Xv)
        fitted.calibration_ = request.param
        fitted.calibrator_ = _fit_calibrator(request.param, raw, yv.astype(int), 3)
    return fitted


def records(features: pd.DataFrame) -> list[dict]:
    """Rows as JSON would bring them: None for missing, plain Python values."""
    plain = features.astype(object).where(features.notna(), None)
    return plain.to_dict("records")


def test_the_lean_path_gives_the_pipelines_probabilities_on_a_whole_hold_out(model) -> None:
    X, _ = frame(3000, 7, unseen=True)
    lean = LeanScorer(model)
    assert "price" not in lean.columns  # the constant column was dropped in both paths
    matrix = lean.matrix(records(X))
    np.testing.assert_allclose(
        lean.probabilities(matrix), model.predict_proba(X)[:, 1], rtol=0, atol=1e-9
    )


def test_the_lean_path_gives_the_batch_paths_buckets_and_reasons(model) -> None:
    X, _ = frame(500, 8, unseen=True)
    batch = score(model, X)
    lean = LeanScorer(model).score(records(X))
    np.testing.assert_allclose(lean[s.CHURN_PROBABILITY], batch[s.CHURN_PROBABILITY], atol=1e-9)
    assert lean[s.BUCKET] == batch[s.BUCKET].tolist()
    assert lean[s.REASONS] == [list(r) for r in batch[s.REASONS]]


def test_numbers_as_text_are_read_and_a_word_is_refused_naming_row_and_field(model) -> None:
    X, _ = frame(3, 9)
    rows = records(X)
    rows[1]["sessions_28d"] = "4"
    as_text = LeanScorer(model).matrix(rows)
    rows[1]["sessions_28d"] = 4.0
    np.testing.assert_array_equal(as_text, LeanScorer(model).matrix(rows))
    rows[2]["auto_renew_off"] = "yes"
    with pytest.raises(RowError, match="row 2, field 'auto_renew_off': expected a number"):
        LeanScorer(model).matrix(rows)


def test_without_reasons_the_same_scores_come_back_with_no_reasons(model) -> None:
    X, _ = frame(200, 10, unseen=True)
    lean = LeanScorer(model)
    full = lean.score(records(X))
    bare = lean.score(records(X), reasons=False)
    assert bare[s.CHURN_PROBABILITY] == full[s.CHURN_PROBABILITY]
    assert bare[s.BUCKET] == full[s.BUCKET]
    assert bare[s.REASONS] == [None] * 200 and all(r is not None for r in full[s.REASONS])


def test_the_lean_calibration_is_the_fitted_calibrators(model) -> None:
    from training.pipeline import apply_calibrator, calibration_function

    raw = np.concatenate([np.linspace(0, 1, 2001), [1e-12, 1 - 1e-12]])
    expected = apply_calibrator(model.calibration_, model.calibrator_, raw)
    got = calibration_function(model.calibration_, model.calibrator_)(raw)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sessions_28d", [4], "row 1, field 'sessions_28d': expected a number or null, got [4]"),
        ("sessions_28d", 10**400, "row 1, field 'sessions_28d': 1000000000"),
        ("country", 7, "row 1, field 'country': expected text or null (a category), got 7"),
        ("country", ["US"], "row 1, field 'country': expected text or null (a category)"),
        ("country", {"a": 1}, "row 1, field 'country': expected text or null (a category)"),
    ],
)
def test_a_value_numpy_would_not_read_is_named_by_row_and_field(
    model, field, value, message
) -> None:
    X, _ = frame(3, 11)
    rows = records(X)
    rows[1][field] = value
    with pytest.raises(RowError) as caught:
        LeanScorer(model).matrix(rows)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_the_lean_calibration_is_apply_calibrator_for_either_method(method) -> None:
    """Regression (hostile review): isotonic's tie-break (issue 12) was in apply_calibrator, not
    in the lean path the service scores with, so an isotonic model served probabilities up to
    1e-6 off its own and ties within a step in another order."""
    from training.pipeline import _fit_calibrator, apply_calibrator, calibration_function

    rng = np.random.default_rng(3)
    p = rng.uniform(size=400)
    y = (rng.uniform(size=400) < p).astype(int)
    calibrator = _fit_calibrator(method, p, y, 0)
    raw = np.concatenate([np.linspace(0, 1, 2001), [1e-12, 1 - 1e-12]])
    expected = apply_calibrator(method, calibrator, raw)
    got = calibration_function(method, calibrator)(raw)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_rows_lacking_a_numeric_feature_read_it_as_missing(model) -> None:
    """The one-tuple-per-row read of the numeric columns falls back, for a row without one of
    them, to reading it as null: the same matrix as the row-by-row path, and the same scores
    as the row sent with the value null."""
    features, _ = frame(60, 8, unseen=True)
    rows = records(features)
    lean = LeanScorer(model)
    sent = [dict(row) for row in rows]
    for row in sent[::3]:
        del row["sessions_28d"]
    nulls = [{**row, "sessions_28d": None} if i % 3 == 0 else row for i, row in enumerate(rows)]
    matrix = lean.matrix(sent)
    np.testing.assert_array_equal(matrix, lean._rows(sent))
    np.testing.assert_array_equal(matrix, lean.matrix(nulls))
    assert np.isnan(matrix[::3, lean.columns.index("sessions_28d")]).all()
    assert lean.score(sent) == lean.score(nulls)
    # every row whole: the fast read, equal to the row-by-row one
    np.testing.assert_array_equal(lean.matrix(rows), lean._rows(rows))


def test_no_rows_are_no_scores(model) -> None:
    """Regression (hostile review): an empty batch reached LightGBM, which divides by the row
    count (ZeroDivisionError); it is now three empty lists, with or without reasons."""
    lean = LeanScorer(model)
    empty = {s.CHURN_PROBABILITY: [], s.BUCKET: [], s.REASONS: []}
    assert lean.score([]) == empty
    assert lean.score([], reasons=False) == empty
