"""features.registry: one described entry per feature column, reason groups checked."""

from __future__ import annotations

import pytest

from features.build import feature_names
from features.registry import FEATURES, REASON_GROUPS, Feature, register


def test_every_built_column_is_registered_and_described() -> None:
    # (other window configurations register their own engagement columns as they are built)
    assert set(feature_names()) <= set(FEATURES)
    for name, feature in FEATURES.items():
        assert feature.name == name
        assert feature.description.strip() and "\n" not in feature.description
        assert feature.family in ("state", "history", "engagement", "context")
        assert feature.kind in ("numeric", "categorical", "boolean")
        assert feature.reason in REASON_GROUPS


def test_every_reason_group_is_used() -> None:
    assert {f.reason for f in FEATURES.values()} == set(REASON_GROUPS)


def test_a_bad_reason_group_and_a_second_registration_are_refused() -> None:
    with pytest.raises(ValueError, match=r"reason 'vibes' is not one of \['auto_renew_off'"):
        Feature("x", "state", "numeric", "x", "vibes")
    existing = next(iter(FEATURES.values()))
    with pytest.raises(ValueError, match=f"feature {existing.name!r} is registered twice"):
        register(existing)
