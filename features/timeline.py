"""The point-in-time cut: canonical events in, the production events strictly before a time out.

Every feature family and the label read events through this module, so "nothing at or after
``as_of`` influences a feature" and "sandbox rows are left out" hold in exactly one place. Inside,
events are a polars frame with times as integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd
import polars as pl
import pyarrow as pa

from features import schema as s

MICROS_PER_DAY = 86_400 * 1_000_000

#: Columns a feature or label needs; the first five must be present, the rest may be absent.
REQUIRED_COLUMNS = (s.USER_ID, s.PLATFORM, s.TS, s.KIND, s.EVENT)
OPTIONAL_COLUMNS = (
    s.EVENT_KEY,
    s.ENVIRONMENT,
    s.PRODUCT_ID,
    s.STORE,
    s.PRICE,
    s.CURRENCY,
    s.EXPIRES_AT,
    s.CANCELLED_AT,
    s.COUNTRY,
    s.NETWORK,
    s.INSTALLED_AT_COL,
)
TIME_COLUMNS = (s.TS, s.EXPIRES_AT, s.CANCELLED_AT, s.INSTALLED_AT_COL)
NEEDED_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


class FeatureInputError(ValueError):
    """The events given to a feature or label function are not a usable canonical event table."""


@dataclass(frozen=True)
class FeatureConfig:
    """How features and labels are computed; the defaults match DESIGN.md and the generator.

    ``windows`` are the engagement look-backs in days (trends compare each with the longest);
    ``trend_days`` is the earlier window the longest one is compared with. A subscriber whose
    last subscription event is a billing failure counts as active for at most ``max_retry_days``
    after it (Apple retries for up to 60 days), so a lost expiration row cannot keep them active.
    """

    windows: tuple[int, ...] = (7, 14, 28)
    trend_days: int = 28
    max_retry_days: int = 60
    include_sandbox: bool = False
    paywall_events: tuple[str, ...] = ("paywall_viewed",)
    support_events: tuple[str, ...] = ("support_contacted",)

    def __post_init__(self) -> None:
        if not self.windows or any(w < 1 for w in self.windows):
            raise ValueError(f"FeatureConfig.windows: expected positive days, got {self.windows}")
        if self.trend_days < 1 or self.max_retry_days < 1:
            raise ValueError(
                "FeatureConfig: trend_days and max_retry_days must be >= 1, got "
                f"{self.trend_days} and {self.max_retry_days}"
            )


#: The default configuration (a frozen value, shared as every function's default).
DEFAULT_CONFIG = FeatureConfig()


def to_timestamp(when: date | datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A cut-off as a UTC timestamp: a date means its midnight UTC; a naive time is taken as UTC."""
    if isinstance(when, date) and not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day, tzinfo=UTC)
    try:
        ts = pd.Timestamp(when)
    except (ValueError, TypeError):
        ts = pd.NaT
    if ts is pd.NaT:
        raise FeatureInputError(f"as_of: expected a date or time (YYYY-MM-DD), got {when!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_micros(when: date | datetime | str | pd.Timestamp) -> int:
    """A cut-off as integer microseconds since the epoch (UTC)."""
    return to_timestamp(when).value // 1000  # .value is nanoseconds


def event_frame(events: pd.DataFrame | pl.DataFrame, config: FeatureConfig) -> pl.DataFrame:
    """The columns features need, as polars, times in epoch microseconds, sandbox rows dropped.

    Optional columns missing from ``events`` are added as nulls, so a hand-built frame with only
    the required columns works. Raises FeatureInputError naming the missing required columns.
    """
    columns = list(events.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise FeatureInputError(
            f"events: missing required column(s) {missing}; expected the canonical event table "
            f"(features.schema.EVENT_COLUMNS), found {columns}"
        )
    present = [c for c in NEEDED_COLUMNS if c in columns]
    if isinstance(events, pd.DataFrame):
        frame = pl.from_arrow(pa.table({name: _arrow(events[name]) for name in present}))
    else:
        frame = events.select(present)
    exprs = []
    for name in NEEDED_COLUMNS:
        if name not in columns:
            dtype = (
                pl.Int64 if name in TIME_COLUMNS else pl.Float64 if name == s.PRICE else pl.String
            )
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif name in TIME_COLUMNS:
            exprs.append(_micros(frame, name))
        elif name == s.PRICE:
            exprs.append(pl.col(name).cast(pl.Float64))
        else:
            exprs.append(pl.col(name).cast(pl.String))
    frame = frame.select(exprs)
    if frame.select(pl.col(s.TS).is_null().any()).item():
        raise FeatureInputError("events: column 'ts' has null values; every event needs a time")
    if not config.include_sandbox:
        frame = frame.filter(
            pl.col(s.ENVIRONMENT).is_null() | (pl.col(s.ENVIRONMENT) != s.ENV_SANDBOX)
        )
    return frame


def micros(column: pd.Series) -> pd.Series:
    """A datetime column (tz-aware, or naive = UTC) as nullable int64 epoch microseconds."""
    stamps = column.array.as_unit("us")
    values = pd.array(stamps.asi8, dtype="Int64")
    values[stamps.isna()] = pd.NA
    return pd.Series(values, index=column.index, name=column.name)


def _arrow(column: pd.Series) -> pa.Array | pa.ChunkedArray:
    """One pandas column as Arrow: zero-copy for ``str``; times as epoch microseconds.

    (pyarrow's own ``from_pandas`` reads ``Series.values``, which pandas 3.1 deprecates for
    time-zone-aware columns.)
    """
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column):
        stamps = column.array.as_unit("us")
        return pa.array(stamps.asi8, mask=stamps.isna())
    return pa.array(column.array)


def _micros(frame: pl.DataFrame, name: str) -> pl.Expr:
    dtype = frame.schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        return col.dt.epoch("us").alias(name)
    if dtype.is_integer():
        return col.cast(pl.Int64).alias(name)
    raise FeatureInputError(
        f"events: column {name!r} has type {dtype}; expected a UTC timestamp "
        f"({s.EVENT_COLUMNS[name]})"
    )


def before(frame: pl.DataFrame, t: int) -> pl.DataFrame:
    """Events strictly before ``t`` (epoch microseconds): the only ones a feature at ``t`` sees."""
    return frame.filter(pl.col(s.TS) < t)


def days(expr: pl.Expr) -> pl.Expr:
    """A difference of epoch microseconds in (fractional) days."""
    return expr.cast(pl.Float64) / MICROS_PER_DAY
