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


def membership(columns: list[str], table: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """(reason groups, a 0/1 matrix column x group): ``contributions @ matrix`` sums each
    group's columns; columns the table does not know (``bias``) belong to none."""
    groups = table.set_index(FEATURE)[REASON_GROUP]
    known = [c for c in columns if c in groups.index]
    names = sorted(set(groups[known]))
    member = np.zeros((len(columns), len(names)))
    for i, column in enumerate(columns):
        if column in groups.index:
            member[i, names.index(groups[column])] = 1.0
    return names, member


def group_contributions(contributions: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Sum per-feature log-odds contributions (not ``bias``) into one column per reason group."""
    names, member = membership(list(contributions.columns), table)
    return pd.DataFrame(contributions.to_numpy() @ member, index=contributions.index, columns=names)


def strongest(values: np.ndarray, names: list[str], k: int = 3) -> list[list[str]]:
    """Per row of grouped contributions, up to ``k`` groups that raise the risk, strongest
    first."""
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    raising = (np.take_along_axis(values, order, axis=1) > 0).tolist()
    text = [str(name) for name in names]
    return [
        [text[j] for j, up in zip(row, ups, strict=True) if up]
        for row, ups in zip(order.tolist(), raising, strict=True)
    ]


def top_reasons(grouped: pd.DataFrame, k: int = 3) -> pd.Series:
    """Per row, up to ``k`` reason groups that raise the churn risk, strongest first."""
    reasons = strongest(grouped.to_numpy(), list(grouped.columns), k)
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
