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
