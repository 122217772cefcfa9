"""Hand-built canonical event tables for the feature and label tests."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from features import schema as s

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def day(d: float) -> pd.Timestamp:
    """Day ``d`` after 2026-01-01 00:00 UTC (fractions allowed)."""
    return T0 + timedelta(days=d)


class History:
    """A canonical event table built row by row: ``h.sub("u", 0, "trial_started", expires=7)``."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, user: str, when: float, kind: str, event: str, platform: str = "ios", **cols):
        row = {
            s.USER_ID: user,
            s.PLATFORM: platform,
            s.TS: day(when),
            s.KIND: kind,
            s.EVENT: event,
            s.ENVIRONMENT: "production",
            s.EVENT_KEY: f"{user}/{platform}/{len(self.rows)}",
            s.SOURCE: "test.csv",
            s.LINE: len(self.rows) + 2,
        }
        for name, value in cols.items():
            row[name] = (
                day(value) if name in (s.EXPIRES_AT, s.CANCELLED_AT, s.INSTALLED_AT_COL) else value
            )
        self.rows.append(row)
        return self

    def sub(self, user: str, when: float, event: str, expires: float | None = None, **cols):
        """A subscription row; ``expires`` is a day number like ``when``."""
        if expires is not None:
            cols[s.EXPIRES_AT] = expires
        return self.add(user, when, s.KIND_SUBSCRIPTION, event, **cols)

    def install(self, user: str, when: float, platform: str = "ios", **cols):
        cols.setdefault(s.INSTALLED_AT_COL, when)
        return self.add(user, when, s.KIND_INSTALL, s.KIND_INSTALL, platform, **cols)

    def sessions(self, user: str, start: float, end: float, per_day: float, platform: str = "ios"):
        """Sessions evenly spread over days [start, end)."""
        n = round((end - start) * per_day)
        for i in range(n):
            self.add(user, start + (i + 0.5) / per_day, s.KIND_SESSION, s.KIND_SESSION, platform)
        return self

    def frame(self) -> pd.DataFrame:
        """The rows as a canonical event table with the store's dtypes."""
        frame = pd.DataFrame(self.rows)
        for name, arrow_type in s.EVENT_COLUMNS.items():
            if name not in frame:
                frame[name] = None
            if arrow_type == "string":
                frame[name] = frame[name].astype("str")
            elif arrow_type.startswith("timestamp"):
                frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[us, UTC]")
            elif arrow_type == "float64":
                frame[name] = frame[name].astype("float64")
            else:
                frame[name] = frame[name].astype("int64")
        return frame[list(s.EVENT_COLUMNS)]


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture(scope="session")
def new_history() -> type[History]:
    """The History class, for tests (hypothesis ones) that build many tables."""
    return History


@pytest.fixture(name="day", scope="session")
def day_fixture():
    """``day(d)``: day ``d`` after 2026-01-01 00:00 UTC."""
    return day


def random_history(users: int = 60, seed: int = 5, app_events: bool = False) -> pd.DataFrame:
    """``users`` subscribers with seeded random lifecycles and sessions over 90 days, both
    platforms, some sandbox rows (and, with ``app_events``, the app's own in-app events)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h = History()
    lifecycle = ["renewal", "cancellation", "grace_period", "expiration", "reactivation"]
    for i in range(users):
        user, platform = f"u{i:03d}", (s.OS_IOS, s.OS_ANDROID)[i % 2]
        start = float(rng.uniform(0, 30))
        h.install(user, start, platform=platform, network="Meta", country="US")
        h.sub(user, start, "activation", expires=start + 30, platform=platform, price=9.99)
        for when in np.sort(rng.uniform(start, 90, 3)):
            h.sub(
                user,
                float(when),
                str(rng.choice(lifecycle)),
                expires=float(when) + 30,
                platform=platform,
            )
        h.sessions(user, start, 90, float(rng.uniform(0.1, 2)), platform=platform)
        if app_events:
            for when in rng.uniform(start, 90, int(rng.integers(0, 8))):
                name = str(rng.choice(["like", "share", "level_up"]))
                h.add(user, float(when), s.KIND_EVENT, name, platform)
    frame = h.frame()
    frame.loc[frame.index % 17 == 0, s.ENVIRONMENT] = "sandbox"
    return frame


def write_store(frame: pd.DataFrame, store, commits: int = 2):
    """Commit a canonical event frame to a Parquet event store at ``store`` (in ``commits``
    commits, like several ingests), as ingest would; returns the store's path."""
    import numpy as np
    import pyarrow as pa

    from features.ingest.store import EVENT_SCHEMA, QUARANTINE_SCHEMA, Manifest, commit, writer_lock

    def column(part: pd.DataFrame, field: pa.Field) -> pa.Array:
        if field.name not in part:
            return pa.nulls(len(part), field.type)
        values = part[field.name].array
        if pa.types.is_timestamp(field.type):  # as µs: pyarrow's own path warns on pandas 3.1
            stamps = values.as_unit("us")
            return pa.array(stamps.asi8, field.type, mask=stamps.isna())
        return pa.array(values, field.type)

    manifest = Manifest()
    with writer_lock(store):
        for i, rows in enumerate(np.array_split(np.arange(len(frame)), commits)):
            part = frame.iloc[rows]
            events = pa.table([column(part, f) for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)
            manifest = commit(
                store,
                manifest,
                events,
                QUARANTINE_SCHEMA.empty_table(),
                [{"sha256": f"test-{i}", "path": f"t{i}.csv"}],
            )
    return store
