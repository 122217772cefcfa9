"""features.build.feature_registry: one described entry per feature column, reason groups checked,
a pure function of the feature configuration."""

from __future__ import annotations

import pytest

from features.build import feature_names, feature_registry
from features.registry import REASON_GROUPS, Feature
from features.settings import FeatureConfig

CONFIGS = [
    FeatureConfig(),
    FeatureConfig(windows=(3, 10), trend_days=10),
    FeatureConfig(windows=(90,)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.windows))
def test_every_built_column_is_described_and_nothing_else(config: FeatureConfig) -> None:
    registry = feature_registry(config)
    assert list(registry) == list(feature_names(config))
    for name, feature in registry.items():
        assert feature.name == name
        assert feature.description.strip() and "\n" not in feature.description
        assert feature.family in ("state", "history", "engagement", "context")
        assert feature.kind in ("numeric", "categorical", "boolean")
        assert feature.reason in REASON_GROUPS


def test_another_configuration_leaves_the_default_registry_as_it_was() -> None:
    before = feature_registry()
    wide = feature_registry(FeatureConfig(windows=(3, 90)))
    assert "sessions_90d" in wide and "sessions_90d" not in feature_registry()
    assert feature_registry() == before


def test_every_reason_group_is_used() -> None:
    assert {f.reason for f in feature_registry().values()} == set(REASON_GROUPS)


def test_a_bad_reason_group_is_refused() -> None:
    with pytest.raises(ValueError, match=r"reason 'vibes' is not one of \['auto_renew_off'"):
        Feature("x", "state", "numeric", "x", "vibes")
