"""training.reasons: contributions grouped by the registry's reason groups, top reasons per user."""

import numpy as np
import pandas as pd
import pytest

from tests.training.conftest import AUTO_RENEW_OFF, COUNTRY, ENGAGEMENT, TENURE, TEST_REGISTRY
from training.reasons import (
    OTHER,
    REASON_GROUP,
    explain,
    group_contributions,
    reason_table,
    top_reasons,
)


def test_reason_table_files_unknown_columns_under_other() -> None:
    table = reason_table([AUTO_RENEW_OFF, "not_registered"], TEST_REGISTRY)
    assert list(table[REASON_GROUP]) == ["auto_renew_off", OTHER]
    assert table["description"].iloc[0].startswith("Auto-renew turned off")


def test_grouping_sums_features_and_drops_bias() -> None:
    contrib = pd.DataFrame(
        {ENGAGEMENT: [0.5, -0.2], TENURE: [0.1, 0.3], AUTO_RENEW_OFF: [-1.0, 2.0], "bias": [9, 9]}
    )
    table = reason_table([ENGAGEMENT, TENURE, AUTO_RENEW_OFF], TEST_REGISTRY)
    grouped = group_contributions(contrib, table)
    assert grouped.to_dict("list") == {
        "auto_renew_off": [-1.0, 2.0],
        "falling_engagement": [0.5, -0.2],
        "plan_and_tenure": [0.1, 0.3],
    }
    assert list(top_reasons(grouped, k=2)) == [
        ["falling_engagement", "plan_and_tenure"],
        ["auto_renew_off", "plan_and_tenure"],
    ]
    assert list(top_reasons(grouped * -1, k=3)) == [["auto_renew_off"], ["falling_engagement"]]


def test_explain_points_at_the_planted_cause(fitted_on_snapshots) -> None:
    model, X, _ = fitted_on_snapshots
    top, grouped = explain(model, X, k=3)  # by the groups the model kept
    np.testing.assert_allclose(
        grouped.sum(axis=1) + model.contributions(X)["bias"],
        np.log(model.predict_raw(X) / (1 - model.predict_raw(X))),
        atol=1e-9,
    )
    off = X[AUTO_RENEW_OFF].to_numpy(dtype=bool)
    first = top.map(lambda r: r[0] if r else None)
    assert (first[off] == "auto_renew_off").mean() > 0.8
    assert set(grouped.columns) <= {
        "auto_renew_off",
        "falling_engagement",
        "context",
        "plan_and_tenure",
    }
    assert COUNTRY in model.features_
    with pytest.raises(KeyError):
        grouped["bias"]


def test_strongest_keeps_per_row_the_raising_groups_in_order() -> None:
    """The vectorised top-k equals reading each row's sorted values one by one: ties kept in
    column order, zero, negative and NaN contributions never a reason."""
    from training.reasons import strongest

    rng = np.random.default_rng(4)
    values = rng.choice([-1.0, 0.0, 0.5, 0.5, 2.0, np.nan], size=(300, 6))
    values[0] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    values[1] = [0.5, 0.5, 0.5, 0.5, -1.0, np.nan]
    names = ["a", "b", "c", "d", "e", "f"]
    expected = []
    for row in values:
        order = sorted(range(6), key=lambda j: -row[j] if not np.isnan(row[j]) else np.inf)
        expected.append([names[j] for j in order[:3] if row[j] > 0])
    got = strongest(values, names, 3)
    assert got == expected
    assert got[0] == [] and got[1] == ["a", "b", "c"]
    assert strongest(values[:0], names) == []
