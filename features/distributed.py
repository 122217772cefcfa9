"""``build_features`` on a dask.distributed cluster: events split by a hash of the subscriber, each
partition built by the very same function on a worker, the results concatenated.

A Lapse event store is read by the workers themselves, each its own partition
(``features.from_store.store_features``); a frame in memory is split here and scattered.

Every feature depends on one subscriber's own events only, so a partition that holds all of a
subscriber's rows gives exactly the rows ``build_features`` gives on the whole table.
"""

from __future__ import annotations

from contextlib import nullcontext
from os import PathLike
from pathlib import Path

import dask.dataframe as dd
import pandas as pd
from distributed import Client

from features import schema as s
from features.build import AsOf, build_features
from features.cluster import Workplace
from features.ingest.partitions import subscriber_partition
from features.timeline import (
    DEFAULT_CONFIG,
    NEEDED_COLUMNS,
    TIME_COLUMNS,
    FeatureConfig,
    FeatureInputError,
    micros,
    to_timestamp,
)

_PART = "_partition"


def _build_partition(
    part: pd.DataFrame, as_of: pd.Timestamp, config: FeatureConfig
) -> pd.DataFrame:
    return build_features(part.drop(columns=[_PART], errors="ignore"), as_of, config).reset_index()


def build_features_distributed(
    events_or_store: pd.DataFrame | dd.DataFrame | str | PathLike[str],
    as_of: AsOf,
    client: Client | str,
    config: FeatureConfig = DEFAULT_CONFIG,
    partitions: int | None = None,
) -> pd.DataFrame:
    """``build_features`` over user-hash partitions on a dask cluster; the same frame as locally.

    ``events_or_store``: a pandas frame (split here and scattered), a dask frame, a Lapse event
    store (each worker reads its own partition of it), or a folder of Parquet event files (read
    and shuffled by dask). ``client``: a ``distributed.Client`` or a scheduler
    address (``tcp://host:8786``). ``partitions`` defaults to twice the cluster's worker threads.
    """
    as_of = to_timestamp(as_of)
    if not isinstance(events_or_store, pd.DataFrame | dd.DataFrame) and is_store(events_or_store):
        from features.from_store import store_features

        owned = isinstance(client, str)
        with Client(client) if owned else nullcontext(client) as cl:
            where = Workplace.of(cl)
            return store_features(
                events_or_store, as_of, config, where=where, partitions=partitions
            ).frame
    frame = (
        events_or_store
        if isinstance(events_or_store, pd.DataFrame | dd.DataFrame)
        else dd.read_parquet(events_or_store)
    )
    missing = [c for c in s.SUBSCRIBER_INDEX if c not in frame.columns]
    if missing:  # before any work is shipped to the cluster
        raise FeatureInputError(f"events: missing subscriber column(s) {missing}")
    owned = isinstance(client, str)
    with Client(client) if owned else nullcontext(client) as cl:
        n = partitions or max(2, 2 * sum(cl.nthreads().values()))
        if isinstance(frame, pd.DataFrame):
            parts = _split(frame, n)
            futures = cl.map(_build_partition, cl.scatter(parts), as_of=as_of, config=config)
            built = cl.gather(futures)
        else:
            built = [_shuffle_and_build(frame, as_of, config, n).compute()]
    out = pd.concat(built, ignore_index=True) if built else _empty(config, as_of)
    return out.set_index(list(s.SUBSCRIBER_INDEX)).sort_index()


def is_store(path: str | PathLike[str]) -> bool:
    """Whether ``path`` is a Lapse event store (a folder with a manifest)."""
    from features.ingest.store import MANIFEST

    return (Path(path) / MANIFEST).is_file()


def _split(events: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    columns = [c for c in NEEDED_COLUMNS if c in events.columns]
    part = subscriber_partition(events, n)
    return [events.loc[part == i, columns] for i in range(n)]


def _shuffle_and_build(
    frame: dd.DataFrame, as_of: pd.Timestamp, config: FeatureConfig, n: int
) -> dd.DataFrame:
    columns = [c for c in NEEDED_COLUMNS if c in frame.columns]
    # times travel as epoch microseconds: the P2P shuffle's Arrow conversion of tz-aware
    # columns reads the deprecated ``Series.values``, and integers are cheaper to move
    frame = frame[columns].map_partitions(_times_as_micros)
    frame = frame.assign(
        **{_PART: frame.map_partitions(subscriber_partition, n, meta=(_PART, "int64"))}
    )
    shuffled = frame.shuffle(on=_PART, npartitions=n)
    meta = _empty(config, as_of)
    return shuffled.map_partitions(_build_partition, as_of, config, meta=meta)


def _times_as_micros(part: pd.DataFrame) -> pd.DataFrame:
    """Time columns as int64 epoch microseconds (``timeline.EventTable`` reads both)."""
    out = part.copy()
    for name in TIME_COLUMNS:
        if name in out.columns and not pd.api.types.is_integer_dtype(out[name]):
            out[name] = micros(out[name])
    return out


def _empty(config: FeatureConfig, as_of: pd.Timestamp) -> pd.DataFrame:
    """The (empty) output frame, as columns: what a partition without active subscribers gives."""
    empty = pd.DataFrame({c: pd.Series(dtype="str") for c in s.SUBSCRIBER_INDEX})
    empty[s.TS] = pd.Series(dtype="datetime64[us, UTC]")
    empty[s.KIND] = pd.Series(dtype="str")
    empty[s.EVENT] = pd.Series(dtype="str")
    return build_features(empty, as_of, config).reset_index()
