"""Features of an event store: the one way every caller (``lapse features``, training,
rescoring, notebooks) reads the store for features, so the store check, the columns read and
the sandbox rule cannot differ between them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from features import schema as s
from features.build import Progress, build_features
from features.ingest.store import MANIFEST, StoreError, load_events
from features.settings import FeatureConfig
from features.timeline import NEEDED_COLUMNS, to_timestamp


@dataclass(frozen=True)
class StoreFeatures:
    """The features of every subscriber active at ``as_of`` and the events they came from."""

    frame: pd.DataFrame
    as_of: pd.Timestamp
    events: int
    first_event: pd.Timestamp | None
    last_event: pd.Timestamp | None


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
) -> pd.DataFrame:
    """The stored events features and labels read (before ``end``, if given), sandbox rows
    only where ``config`` includes them."""
    return load_events(
        check_store(store),
        end=None if end is None else to_timestamp(end),
        columns=list(NEEDED_COLUMNS),
        include_sandbox=config.include_sandbox,
    )


def store_features(
    store: str | os.PathLike[str],
    as_of: date | datetime | str | pd.Timestamp,
    config: FeatureConfig,
    progress: Progress | None = None,
    max_stale_days: float | None = None,
) -> StoreFeatures:
    """Features (``build_features``) of the subscribers active at ``as_of``, from the events
    stored before it. Raises StoreError when nobody is active then, naming the data's span, and
    StaleStoreError, before any feature work, when ``max_stale_days`` is given and the newest
    of those events is older than that (features of a stalled store would mislead)."""
    when = to_timestamp(as_of)
    check_store(store)
    report = progress or (lambda stage, done, total: None)
    report("load", 0, 1)
    events = read_events(store, config, end=when)
    report("load", 1, 1)
    first = events[s.TS].min() if len(events) else None
    last = events[s.TS].max() if len(events) else None
    if max_stale_days is not None and last is not None:
        lag = (when - last) / pd.Timedelta(days=1)
        if lag > max_stale_days:
            raise StaleStoreError(
                f"{Path(store)}: the newest event before {when:%Y-%m-%d} is from "
                f"{last:%Y-%m-%d %H:%M} UTC, {lag:.1f} days earlier (more than "
                f"{max_stale_days:g}); scores from stale data would null or mis-bucket real "
                "users. Ingest the latest export first, or pass --as-of inside the stored data"
            )
    frame = build_features(events, when, config, progress=progress)
    if frame.empty:
        span = (
            f"its events before then span {first:%Y-%m-%d} .. {last:%Y-%m-%d}"
            if len(events)
            else "it holds no events before then"
        )
        raise StoreError(
            f"{Path(store)}: no subscriber is active at {when:%Y-%m-%d %H:%M} UTC ({span}); "
            "choose an --as-of inside the stored data"
        )
    return StoreFeatures(frame, when, len(events), first, last)
