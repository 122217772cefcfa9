"""Per-user reasons: LightGBM contributions summed by the registry's marketer-readable reason group.

The grouping lives in one table (``reason_table``), read from the feature registry of the model's
own feature definition (kept on the model as ``reason_groups_``); a column the registry does not
know is filed under ``other`` so its contribution is never silently lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from features import schema
from features.registry import REASON_GROUPS, Feature
from training.pipeline import ModelVersionError

OTHER = "other"
FEATURE = "feature"
REASON_GROUP = "reason_group"
DESCRIPTION = "description"


def reason_table(columns: Iterable[str], groups: Mapping[str, Feature | str]) -> pd.DataFrame:
    """feature -> reason group and the group's description, for the model's feature columns.

    ``groups`` maps a column to its registry entry or straight to its reason group.
    """
    rows = []
    for column in columns:
        entry = groups.get(column)
        group = OTHER if entry is None else getattr(entry, "reason", entry)
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


def explain(model, X: pd.DataFrame, k: int = 3):
    """(top reasons per row, grouped contributions) for a fitted ``ChurnModel`` on ``X``, grouped
    by the reason groups the model was trained with."""
    groups = getattr(model, "reason_groups_", None)
    if groups is None:
        raise ModelVersionError(
            "this model was saved by an older Lapse and does not carry its reason groups; "
            "run `lapse train` again"
        )
    contributions = model.contributions(X)
    grouped = group_contributions(contributions, reason_table(model.features_, groups))
    return top_reasons(grouped, k), grouped
