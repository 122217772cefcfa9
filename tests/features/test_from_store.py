"""Features of a store built in subscriber partitions equal the whole build, row for row; the
store is read one partition at a time, also where it was written before buckets existed."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features import schema as s
from features.build import build_features
from features.from_store import (
    read_events,
    sample_by_cutoff,
    store_app_events,
    store_features,
    store_snapshots,
)
from features.ingest.partitions import BYTES_PER_ROW
from features.ingest.store import BUCKET, MANIFEST, event_rows, events_span, load_events
from features.labelled import snapshots
from features.settings import FeatureConfig
from tests.features.conftest import day, random_history, write_store

CONFIG = FeatureConfig()


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return random_history(users=80, seed=3, app_events=True)


@pytest.fixture(scope="module")
def store(events, tmp_path_factory):
    return write_store(events, tmp_path_factory.mktemp("store"), commits=3)


@pytest.fixture(scope="module")
def legacy(events, tmp_path_factory):
    """The same events in a store written before the bucket column (no mark, no column)."""
    folder = write_store(events, tmp_path_factory.mktemp("legacy"), commits=2)
    manifest = json.loads((folder / MANIFEST).read_text())
    for commit in manifest["commits"]:
        commit.pop("bucketed")
        for rel in commit["events"]:
            table = pq.read_table(folder / rel)
            pq.write_table(table.drop_columns([BUCKET]), folder / rel)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def _whole(store, as_of):
    return build_features(read_events(store, CONFIG, end=as_of), as_of, CONFIG)


def test_partition_reads_split_the_store_into_whole_subscribers(store, legacy) -> None:
    """Every event lands in exactly one partition, with all of its subscriber's events; a store
    from before the bucket column gives the same partitions."""
    everything = load_events(store)
    for folder in (store, legacy):
        parts = [load_events(folder, partition=(i, 4)) for i in range(4)]
        assert sum(map(len, parts)) == len(everything)
        owners = [set(zip(p[s.USER_ID], p[s.PLATFORM], strict=True)) for p in parts]
        assert all(a.isdisjoint(b) for i, a in enumerate(owners) for b in owners[i + 1 :])
        assert all(len(p) for p in parts)
        rebuilt = pd.concat(parts).sort_values([s.EVENT_KEY]).reset_index(drop=True)
        pd.testing.assert_frame_equal(
            rebuilt, everything.sort_values([s.EVENT_KEY]).reset_index(drop=True)
        )


def test_streamed_build_equals_the_whole_build(store) -> None:
    partitions = 3
    whole = _whole(store, day(60))
    assert len(whole) > 20
    built = store_features(store, day(60), CONFIG, partitions=partitions)
    pd.testing.assert_frame_equal(built.frame, whole)
    assert (built.partitions, built.ran_on) == (partitions, "in-process")
    count, first, last = events_span(store, day(60), include_sandbox=False)
    assert built.events == count == len(read_events(store, CONFIG, end=day(60)))


def test_a_store_from_before_buckets_builds_the_same(store, legacy) -> None:
    pd.testing.assert_frame_equal(
        store_features(legacy, day(75), CONFIG, partitions=2).frame, _whole(store, day(75))
    )


def test_memory_setting_decides_the_partition_count(store) -> None:
    rows = event_rows(store)
    tight = CONFIG.model_copy(update={"max_memory_gib": rows * BYTES_PER_ROW / 2**30 / 1.5})
    built = store_features(store, day(60), tight)
    assert built.partitions == 2
    pd.testing.assert_frame_equal(built.frame, _whole(store, day(60)))


def test_nobody_active_names_the_span(store) -> None:
    from features.ingest import StoreError

    with pytest.raises(StoreError, match=r"no subscriber is active at 2025-12-01 00:00 UTC \("):
        store_features(store, "2025-12-01", CONFIG, partitions=3)


@pytest.mark.slow
def test_partitioned_snapshots_and_app_events_equal_the_whole(store, events) -> None:
    """Labels see the whole store's last event; app events are counted over all partitions."""
    config = CONFIG.model_copy(update={"app_events_top": 2})
    everything = read_events(store, config)
    from features.engagement import choose_app_events
    from features.timeline import EventTable, to_micros

    chosen = choose_app_events(EventTable(everything, config), to_micros(day(70)), config)
    assert len(chosen) == 2
    assert store_app_events(store, day(70), config, partitions=3) == chosen
    config = config.model_copy(update={"app_events_chosen": chosen})
    cutoffs = [day(30), day(45), day(60)]
    whole = snapshots(everything, cutoffs, 14, config)
    _, _, last = events_span(store, None, include_sandbox=False)
    built = store_snapshots(store, cutoffs, 14, config, observed_until=last, partitions=3)
    pd.testing.assert_frame_equal(built.frame, whole)
    assert built.built_rows == len(whole) and built.fraction == 1.0


@pytest.mark.slow
def test_sampled_snapshots_keep_each_cut_off_share(store) -> None:
    cutoffs = [day(30), day(45), day(60)]
    _, _, last = events_span(store, None, include_sandbox=False)
    full = store_snapshots(store, cutoffs, 14, CONFIG, observed_until=last, partitions=2)
    sampled = store_snapshots(
        store, cutoffs, 14, CONFIG, observed_until=last, partitions=2, max_rows=60, seed=1
    )
    assert sampled.built_rows == len(full.frame) and 0 < sampled.fraction < 1
    per_cutoff = full.frame.groupby(level=s.AS_OF).size()
    kept = sampled.frame.groupby(level=s.AS_OF).size()
    assert (abs(kept - per_cutoff * sampled.fraction) <= 2).all()  # rounding in each partition
    assert sampled.frame.index.isin(full.frame.index).all()
    again = sample_by_cutoff(full.frame, 0.5, seed=4)
    assert again.equals(sample_by_cutoff(full.frame, 0.5, seed=4))
