"""The shapes benchmark's settings overrides and its snapshot cache per feature definition."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from training.settings import TrainConfig

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "shapes.py"
_spec = importlib.util.spec_from_file_location("bench_shapes", _PATH)
shapes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes)


def test_overrides_read_json_values_and_group_by_section():
    got = shapes.overrides(
        ["optuna.selection_se=0", "features.windows=[7, 28, 56]", "mlflow.experiment=x y"]
    )
    assert got == {
        "optuna": {"selection_se": 0},
        "features": {"windows": [7, 28, 56]},
        "mlflow": {"experiment": "x y"},
    }
    config = TrainConfig().replace(**got)
    assert config.optuna.selection_se == 0.0
    assert config.features.windows == (7, 28, 56)


@pytest.mark.parametrize("pair", ["optuna.selection_se", "selection_se=0", "optuna.=1"])
def test_overrides_refuse_a_pair_without_section_key_and_value(pair):
    with pytest.raises(SystemExit, match="expected section.key=value"):
        shapes.overrides([pair])


def test_throwaway_config_applies_changes_and_keeps_its_own_stores(tmp_path):
    config = shapes.throwaway_config(tmp_path, "t", 3, {"optuna": {"selection_se": 0}})
    assert config.optuna.selection_se == 0.0
    assert config.optuna.n_trials == 3
    assert str(tmp_path.resolve()) in config.optuna.storage


def test_snapshot_cache_is_shared_by_default_settings_and_separate_for_other_features(tmp_path):
    default = shapes.throwaway_config(tmp_path, "t", 1)
    tuned = shapes.throwaway_config(tmp_path, "t", 1, {"optuna": {"selection_se": 0}})
    wider = shapes.throwaway_config(tmp_path, "t", 1, {"features": {"windows": [7, 28, 56]}})
    other = shapes.throwaway_config(tmp_path, "t", 1, {"features": {"windows": [7, 28, 84]}})
    plain = (tmp_path / "snapshots.parquet", tmp_path / "app_events.json")
    assert shapes.snapshot_cache(tmp_path, default) == plain
    assert shapes.snapshot_cache(tmp_path, tuned) == plain  # training settings share the rows
    mine, theirs = shapes.snapshot_cache(tmp_path, wider), shapes.snapshot_cache(tmp_path, other)
    assert mine[0] != plain[0] and mine[0] != theirs[0]
    assert mine[0].name.startswith("snapshots-") and mine[1].name.startswith("app_events-")
    assert shapes.snapshot_cache(tmp_path, wider) == mine  # stable across calls
    longer = shapes.throwaway_config(tmp_path, "t", 1, {"labels": {"horizon_days": 60}})
    assert shapes.snapshot_cache(tmp_path, longer)[0] not in (plain[0], mine[0])
