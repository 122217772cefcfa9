"""Per-user reasons: LightGBM contributions summed by the registry's marketer-readable reason group.

The grouping lives in one table (``reason_table``), read from ``features.registry``; a column the
registry does not know is filed under ``other`` so its contribution is never silently lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from features import schema
from features.registry import FEATURES, REASON_GROUPS, Feature

OTHER = "other"
FEATURE = "feature"
REASON_GROUP = "reason_group"
DESCRIPTION = "description"


def reason_table(
    columns: Iterable[str], registry: Mapping[str, Feature] = FEATURES
) -> pd.DataFrame:
    """feature -> reason group and the group's description, for the model's feature columns."""
    rows = []
    for column in columns:
        group = registry[column].reason if column in registry else OTHER
        rows.append(
            {
                FEATURE: column,
                REASON_GROUP: group,
                DESCRIPTION: REASON_GROUPS.get(group, "Features without a registry entry"),
            }
        )
    return pd.DataFrame(rows, columns=[FEATURE, REASON_GROUP, DESCRIPTION])


def group_contributions(contributions: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Sum per-feature log-odds contributions (not ``bias``) into one column per reason group."""
    groups = table.set_index(FEATURE)[REASON_GROUP]
    features = [c for c in contributions.columns if c in groups.index]
    names = sorted(set(groups[features]))
    member = np.zeros((len(features), len(names)))
    member[np.arange(len(features)), [names.index(groups[f]) for f in features]] = 1.0
    return pd.DataFrame(
        contributions[features].to_numpy() @ member, index=contributions.index, columns=names
    )


def top_reasons(grouped: pd.DataFrame, k: int = 3) -> pd.Series:
    """Per row, up to ``k`` reason groups that raise the churn risk, strongest first."""
    values = grouped.to_numpy()
    names = np.asarray(grouped.columns)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    reasons = [[str(names[j]) for j in row if values[i, j] > 0] for i, row in enumerate(order)]
    return pd.Series(reasons, index=grouped.index, name=schema.REASONS)


def explain(model, X: pd.DataFrame, k: int = 3, registry: Mapping[str, Feature] = FEATURES):
    """(top reasons per row, grouped contributions) for a fitted ``ChurnModel`` on ``X``."""
    contributions = model.contributions(X)
    grouped = group_contributions(contributions, reason_table(model.features_, registry))
    return top_reasons(grouped, k), grouped
