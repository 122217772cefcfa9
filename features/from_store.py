"""Features of an event store: the one way every caller (``lapse features``, training,
rescoring, notebooks) reads the store for features, so the store check, the columns read and
the sandbox rule cannot differ between them.

A build is split into subscriber partitions (``features.ingest.partitions``): each partition
reads only its own subscribers' events from the store and runs the same ``build_features``,
one after another in this process (peak memory is one partition's, not the store's) or side by
side on a dask cluster (``features.cluster``); the partitions' rows, in order, are the whole
build's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from features import schema as s
from features.build import Progress, build_features
from features.cluster import Workplace
from features.ingest.partitions import partition_count
from features.ingest.store import MANIFEST, StoreError, event_rows, events_span, load_events
from features.settings import FeatureConfig
from features.timeline import NEEDED_COLUMNS, to_timestamp

_HERE = Workplace("in-process")


@dataclass(frozen=True)
class StoreFeatures:
    """The features of every subscriber active at ``as_of`` and the events they came from."""

    frame: pd.DataFrame
    as_of: pd.Timestamp
    events: int
    first_event: pd.Timestamp | None
    last_event: pd.Timestamp | None
    partitions: int = 1
    ran_on: str = "in-process"
    dashboard: str | None = None


class StaleStoreError(StoreError):
    """The newest stored event is too far before the cut-off: the store was not fed."""


def check_store(store: str | os.PathLike[str]) -> Path:
    """The store folder, or StoreError when no ingest has made one there."""
    path = Path(store)
    if not (path / MANIFEST).is_file():
        raise StoreError(f"{path}: no event store here (no {MANIFEST}); run `lapse ingest` first")
    return path


def read_events(
    store: str | os.PathLike[str],
    config: FeatureConfig,
    end: date | datetime | str | pd.Timestamp | None = None,
    partition: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """The stored events features and labels read (before ``end``, if given), sandbox rows
    only where ``config`` includes them; with ``partition=(index, count)`` only that partition's
    subscribers."""
    return load_events(
        check_store(store),
        end=None if end is None else to_timestamp(end),
        columns=list(NEEDED_COLUMNS),
        include_sandbox=config.include_sandbox,
        partition=partition,
    )


def plan_partitions(
    store: str | os.PathLike[str], split: FeatureConfig, where: Workplace | None = None
) -> int:
    """How many subscriber partitions a build over ``store`` takes: ``split.partitions`` when
    set, else enough for ``split.max_memory_gib`` each; on a cluster at least two per worker,
    so every worker has work."""
    count = partition_count(event_rows(check_store(store)), split.max_memory_gib, split.partitions)
    if where is not None and where.client is not None and split.partitions == 0:
        count = max(count, 2 * where.workers)
    return count


def partition_features(
    index: int,
    *,
    store: str,
    as_of: pd.Timestamp,
    config: FeatureConfig,
    count: int,
) -> pd.DataFrame:
    """``build_features`` on partition ``index`` of ``count``: its subscribers' events only (a
    task: it runs wherever the workplace sends it, reading the store itself)."""
    events = read_events(store, config, end=as_of, partition=(index, count))
    return build_features(events, as_of, config)


def check_span(
    store: str | os.PathLike[str],
    when: pd.Timestamp,
    config: FeatureConfig,
    max_stale_days: float | None = None,
) -> tuple[int, pd.Timestamp | None, pd.Timestamp | None]:
    """The count, first and last time of the events before ``when`` (one streamed pass over
    ``ts``); StaleStoreError when the last is more than ``max_stale_days`` before ``when``."""
    events, first, last = events_span(check_store(store), when, config.include_sandbox)
    if max_stale_days is not None and last is not None:
        lag = (when - last) / pd.Timedelta(days=1)
        if lag > max_stale_days:
            raise StaleStoreError(
                f"{Path(store)}: the newest event before {when:%Y-%m-%d} is from "
                f"{last:%Y-%m-%d %H:%M} UTC, {lag:.1f} days earlier (more than "
                f"{max_stale_days:g}); scores from stale data would null or mis-bucket real "
                "users. Ingest the latest export first, or pass --as-of inside the stored data"
            )
    return events, first, last


def nobody_active(
    store: str | os.PathLike[str],
    when: pd.Timestamp,
    events: int,
    first: pd.Timestamp | None,
    last: pd.Timestamp | None,
) -> StoreError:
    """The error for a cut-off at which no subscriber is active, naming the data's span."""
    span = (
        f"its events before then span {first:%Y-%m-%d} .. {last:%Y-%m-%d}"
        if events
        else "it holds no events before then"
    )
    return StoreError(
        f"{Path(store)}: no subscriber is active at {when:%Y-%m-%d %H:%M} UTC ({span}); "
        "choose an --as-of inside the stored data"
    )


def store_features(
    store: str | os.PathLike[str],
    as_of: date | datetime | str | pd.Timestamp,
    config: FeatureConfig,
    progress: Progress | None = None,
    max_stale_days: float | None = None,
    where: Workplace | None = None,
    partitions: int | None = None,
) -> StoreFeatures:
    """Features (``build_features``) of the subscribers active at ``as_of``, from the events
    stored before it, built in ``partitions`` subscriber partitions (default: ``plan_partitions``
    with ``config``'s split) at ``where`` (default: this process). Raises StoreError when nobody
    is active then, naming the data's span, and StaleStoreError, before any feature work, when
    ``max_stale_days`` is given and the newest of those events is older than that (features of
    a stalled store would mislead)."""
    when = to_timestamp(as_of)
    where = where or _HERE
    check_store(store)  # before any progress is shown
    report = progress or (lambda stage, done, total: None)
    report("load", 0, 1)
    events, first, last = check_span(store, when, config, max_stale_days)
    report("load", 1, 1)
    count = partitions or plan_partitions(store, config, where)
    parts = []
    for i, part in enumerate(
        where.map(
            partition_features,
            range(count),
            store=str(store),
            as_of=when,
            config=config,
            count=count,
        )
    ):
        parts.append(part)
        report("partitions", i + 1, count)
    filled = [part for part in parts if len(part)] or parts[:1]
    frame = pd.concat(filled).sort_index() if len(filled) > 1 else filled[0]
    if frame.empty:
        raise nobody_active(store, when, events, first, last)
    return StoreFeatures(frame, when, events, first, last, count, where.label, where.dashboard)


# --- training snapshots ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSnapshots:
    """Snapshots (features + CHURNED by as_of, user_id, platform) of a store, and how they were
    built: rows before sampling, the fraction kept at every cut-off, where the work ran."""

    frame: pd.DataFrame
    built_rows: int
    fraction: float
    partitions: int
    ran_on: str = "in-process"
    dashboard: str | None = None


def partition_app_event_counts(
    index: int, *, store: str, t: pd.Timestamp, config: FeatureConfig, count: int
) -> dict[str, int]:
    """In-app event counts among subscribers of partition ``index`` (see ``top_app_events``)."""
    from features.engagement import app_event_counts
    from features.timeline import EventTable, to_micros

    events = read_events(store, config, partition=(index, count))
    return app_event_counts(EventTable(events, config), to_micros(t))


def store_app_events(
    store: str | os.PathLike[str],
    t: pd.Timestamp,
    config: FeatureConfig,
    where: Workplace | None = None,
    partitions: int = 1,
) -> tuple[str, ...]:
    """``choose_app_events`` over the whole store, counted partition by partition."""
    from features.engagement import top_app_events

    if config.app_events_top <= 0:
        return top_app_events({}, config)
    total: dict[str, int] = {}
    tasks = (where or _HERE).map(
        partition_app_event_counts,
        range(partitions),
        store=str(store),
        t=t,
        config=config,
        count=partitions,
    )
    for counts in tasks:
        for name, n in counts.items():
            total[name] = total.get(name, 0) + n
    return top_app_events(total, config)


def partition_snapshots(
    index: int,
    *,
    store: str,
    cutoffs: tuple[pd.Timestamp, ...],
    horizon_days: int,
    config: FeatureConfig,
    observed_until: pd.Timestamp,
    count: int,
    fraction: float = 1.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, int]:
    """Snapshots of partition ``index`` (its subscribers' events only, labels observed until
    the whole store's last event) and their row count before ``sample_by_cutoff``."""
    from features.labelled import snapshots

    events = read_events(store, config, partition=(index, count))
    frame = snapshots(events, cutoffs, horizon_days, config, observed_until=observed_until)
    return sample_by_cutoff(frame, fraction, seed + index), len(frame)


def sample_by_cutoff(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """``fraction`` of the rows of every cut-off (rounded), chosen by a seeded permutation, in
    the frame's order: a sample stratified by cut-off."""
    if fraction >= 1.0 or frame.empty:
        return frame
    import numpy as np

    rng = np.random.default_rng(seed)
    cut = frame.index.get_level_values(s.AS_OF)
    keep = np.zeros(len(frame), dtype=bool)
    for when in cut.unique():
        rows = np.flatnonzero(cut == when)
        chosen = rng.permutation(rows)[: round(fraction * len(rows))]
        keep[chosen] = True
    return frame[keep]


def store_snapshots(
    store: str | os.PathLike[str],
    cutoffs: list[pd.Timestamp],
    horizon_days: int,
    config: FeatureConfig,
    observed_until: pd.Timestamp,
    where: Workplace | None = None,
    partitions: int = 1,
    max_rows: int = 0,
    seed: int = 0,
    progress: Progress | None = None,
) -> StoreSnapshots:
    """Snapshots at ``cutoffs`` built partition by partition (at ``where``), at most about
    ``max_rows`` of them (0: all): the first partition's rows estimate the whole, and every
    partition keeps the same fraction of each cut-off's rows (stratified by cut-off)."""
    where = where or _HERE
    report = progress or (lambda stage, done, total: None)
    shared = {
        "store": str(store),
        "cutoffs": tuple(cutoffs),
        "horizon_days": horizon_days,
        "config": config,
        "observed_until": observed_until,
        "count": partitions,
        "seed": seed,
    }
    first, first_rows = partition_snapshots(0, **shared)
    report("snapshots", 1, partitions)
    estimate = first_rows * partitions
    fraction = 1.0 if not max_rows or estimate <= max_rows else max_rows / estimate
    parts = [sample_by_cutoff(first, fraction, seed)]
    built = first_rows
    del first
    rest = where.map(partition_snapshots, range(1, partitions), fraction=fraction, **shared)
    for i, (part, rows) in enumerate(rest):
        parts.append(part)
        built += rows
        report("snapshots", i + 2, partitions)
    frame = pd.concat(parts).sort_index() if len(parts) > 1 else parts[0]
    return StoreSnapshots(frame, built, fraction, partitions, where.label, where.dashboard)
