"""The point-in-time cut: canonical events in, the production events strictly before a time out.

Every feature family and the label read events through this module, so "nothing at or after
``as_of`` influences a feature" and "sandbox rows are left out" hold in one place. The bulk of
the table (sessions, in-app events) is aggregated by DuckDB where it lies (a pandas frame or an
Arrow table, no copy); the few lifecycle rows come out as polars, times as epoch microseconds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from base import LapseError
from features import duck
from features import schema as s
from features.settings import FeatureConfig

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
#: Columns read on every row (the rest only on subscription and install rows).
CORE_COLUMNS = (*REQUIRED_COLUMNS, s.ENVIRONMENT)


class FeatureInputError(LapseError, ValueError):
    """The events given to a feature or label function are not a usable canonical event table."""


#: The default configuration (a frozen value, shared as every function's default).
DEFAULT_CONFIG = FeatureConfig()


def to_timestamp(when: date | datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A cut-off as a UTC timestamp: a date means its midnight UTC; a naive time is taken as UTC."""
    if isinstance(when, date) and not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day, tzinfo=UTC)
    try:
        # pandas reads "now" and "today" off the clock: a cut-off is explicit, never the clock's
        ts = pd.NaT if isinstance(when, str) and when in ("now", "today") else pd.Timestamp(when)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        ts = ts.as_unit("ns")  # times are compared as epoch ns/µs: beyond 1677..2262 they overflow
    except (ValueError, TypeError, OverflowError):  # OutOfBoundsDatetime is a ValueError
        ts = pd.NaT
    if ts is pd.NaT:
        raise FeatureInputError(
            f"as_of: expected a date or time (YYYY-MM-DD) between 1678 and 2261, got {when!r}"
        )
    return ts


def to_micros(when: date | datetime | str | pd.Timestamp) -> int:
    """A cut-off as integer microseconds since the epoch (UTC)."""
    return to_timestamp(when).value // 1000  # .value is nanoseconds


Events = pd.DataFrame | pa.Table


class EventTable:
    """The caller's events, read in place: the bulk through DuckDB, the lifecycle rows by index.

    ``query`` runs SQL (the engagement family's aggregate) in DuckDB over the view ``events``:
    the columns every row needs (CORE_COLUMNS) as Arrow over the input's own buffers (text and
    categorical codes zero-copy, ``ts`` in epoch µs), production rows only (all rows with
    ``include_sandbox``). ``lifecycle(t)`` takes the few
    subscription and install rows before ``t`` with all NEEDED_COLUMNS as an ordered polars
    frame; the other columns are converted for those rows only. Columns missing from the input
    read as null, so a hand-built frame with only REQUIRED_COLUMNS works. Raises
    FeatureInputError on a missing column or a wrong time type.
    """

    def __init__(self, events: Events, config: FeatureConfig, shared: bool = False) -> None:
        self._events = events
        self._names = _checked_names(events)
        # shared: a cursor on the process's database (its view is its own); else a database
        # of its own, closed with this table: nothing left running
        self._con = duck.connect(shared)
        self._shared = shared
        if isinstance(events, pd.DataFrame):
            self._ts = _pandas_micros(events[s.TS])
            environment = events[s.ENVIRONMENT] if s.ENVIRONMENT in self._names else None
            has_sandbox = environment is not None and bool((environment == s.ENV_SANDBOX).any())
        # DuckDB reads the core columns as Arrow (categoricals as dictionaries, times as µs):
        # handed a pandas frame, it iterates every categorical's categories in Python at each
        # query's bind, which cost more than the aggregate itself
        core = pa.table({name: self._column(name) for name in CORE_COLUMNS})
        if not isinstance(events, pd.DataFrame):
            self._ts = core[s.TS]
            if self._ts.null_count:
                raise FeatureInputError(
                    "events: column 'ts' has null values; every event needs a time"
                )
            has_sandbox = bool(pc.any(pc.equal(core[s.ENVIRONMENT], s.ENV_SANDBOX)).as_py())
        # knowing there is nothing to drop spares every query the filter
        self.has_sandbox = has_sandbox and not config.include_sandbox
        where = (
            f"WHERE {s.ENVIRONMENT} IS DISTINCT FROM '{s.ENV_SANDBOX}'" if self.has_sandbox else ""
        )
        self._con.register("input", core)
        self._con.execute(f"CREATE TEMP VIEW events AS SELECT * FROM input {where}")

    def query(self, sql: str, params: dict | None = None) -> pl.DataFrame:
        """Run SQL over the view ``events``; the result as polars.

        A shared table (a service request's few subscribers) runs the statement once and reads
        its rows: ``sql().pl()`` binds the statement, then binds it again to run it, and binding
        is nearly all of a request-sized aggregate's cost (the engagement one: ~5 of 15 ms CPU
        saved). A result type outside ``_ROW_TYPES`` falls back to Arrow."""
        if self._shared:
            result = self._con.execute(sql, params or None)
            names = [column[0] for column in result.description]
            types = [_ROW_TYPES.get(str(column[1])) for column in result.description]
            if all(types):
                schema = dict(zip(names, types, strict=True))
                return pl.DataFrame(result.fetchall(), schema=schema, orient="row")
        return self._con.sql(sql, params=params or None).pl()

    def lifecycle(self, t: int) -> pl.DataFrame:
        """Subscription and install rows before ``t``, in timeline order (see ``ordered``)."""
        events = self._events
        wanted = [s.KIND_SUBSCRIPTION, s.KIND_INSTALL]
        if isinstance(events, pd.DataFrame):
            keep = _isin(events[s.KIND], wanted)
            rows: np.ndarray | pa.Array = np.flatnonzero(keep & (self._ts < t))
            if self.has_sandbox:
                environment = events[s.ENVIRONMENT].take(rows)
                rows = rows[(environment != s.ENV_SANDBOX).to_numpy(dtype=bool, na_value=True)]
        else:
            keep = pc.and_(pc.is_in(events[s.KIND], pa.array(wanted)), pc.less(self._ts, t))
            # (a chunked array with no chunks crashes indices_nonzero in pyarrow 25)
            rows = pc.indices_nonzero(keep.combine_chunks())
            if self.has_sandbox:
                environment = pc.not_equal(events[s.ENVIRONMENT].take(rows), s.ENV_SANDBOX)
                rows = rows.filter(pc.fill_null(environment, True))
        table = pa.table({name: _plain(self._column(name, rows)) for name in NEEDED_COLUMNS})
        return ordered(pl.from_arrow(table))

    def last_ts(self) -> int | None:
        """The latest event time (epoch µs), or None without events."""
        return self.query(f"SELECT max({s.TS}) AS last FROM events").item()

    def _column(
        self, name: str, rows: np.ndarray | pa.Array | None = None
    ) -> pa.Array | pa.ChunkedArray:
        """Column ``name`` (at ``rows``, else whole) as Arrow in its feature type."""
        events = self._events
        if name not in self._names:
            return pa.nulls(len(events) if rows is None else len(rows), _null_type(name))
        if isinstance(events, pd.DataFrame):
            if name == s.TS:  # its µs are computed once, in __init__
                return pa.array(self._ts if rows is None else self._ts[rows])
            column = _from_pandas(events[name], rows)
        else:
            column = events[name] if rows is None else events[name].take(rows)
        if name in TIME_COLUMNS:
            return _as_micros(name, column)
        if name == s.PRICE:
            return pc.cast(column, pa.float64())
        text = (pa.types.is_dictionary, pa.types.is_string, pa.types.is_large_string)
        return (
            column
            if any(is_text(column.type) for is_text in text)
            else pc.cast(column, pa.string())
        )


#: DuckDB result types a shared table reads row by row, as the polars types Arrow would give.
_ROW_TYPES = {
    "VARCHAR": pl.String,
    "DOUBLE": pl.Float64,
    "BIGINT": pl.Int64,
    "INTEGER": pl.Int32,
    "BOOLEAN": pl.Boolean,
}


def _pandas_micros(column: pd.Series) -> np.ndarray:
    """The ``ts`` column as int64 epoch microseconds; raises on a missing time."""
    if column.isna().any():
        raise FeatureInputError("events: column 'ts' has null values; every event needs a time")
    if pd.api.types.is_integer_dtype(column):
        return column.to_numpy(dtype="int64")
    return column.array.as_unit("us").asi8


def _isin(column: pd.Series, values: list[str]) -> np.ndarray:
    """Rows of ``column`` holding one of ``values``; a categorical is matched by its codes."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.array.codes
        keep = np.zeros(len(codes), dtype=bool)
        for code in column.cat.categories.get_indexer(values):
            if code >= 0:  # a few equality passes over small ints beat np.isin's sort
                keep |= codes == code
        return keep
    return column.isin(values).to_numpy(dtype=bool, na_value=False)


def _null_type(name: str) -> pa.DataType:
    """The Arrow type a column absent from the input is read as."""
    if name in TIME_COLUMNS:
        return pa.int64()
    return pa.float64() if name == s.PRICE else pa.string()


def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Dictionary-encoded text decoded (polars would make it Categorical)."""
    return (
        pc.cast(column, column.type.value_type) if pa.types.is_dictionary(column.type) else column
    )


def _checked_names(events: Events) -> set[str]:
    """The input's column names, after checking the required ones and the time types."""
    if isinstance(events, pd.DataFrame):
        types = {str(k): v for k, v in events.dtypes.items()}
    elif isinstance(events, pa.Table):
        types = dict(zip(events.column_names, events.schema.types, strict=True))
    else:
        raise FeatureInputError(
            f"events: expected a pandas DataFrame or a pyarrow Table, got {type(events).__name__}"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in types]
    if missing:
        raise FeatureInputError(
            f"events: missing required column(s) {missing}; expected the canonical event "
            f"table (features.schema.EVENT_COLUMNS), found {list(types)}"
        )
    for name in TIME_COLUMNS:
        kind = types.get(name)
        if kind is None:
            continue
        if isinstance(kind, pa.DataType):
            ok = pa.types.is_timestamp(kind) or pa.types.is_integer(kind)
        else:
            ok = (
                isinstance(kind, pd.DatetimeTZDtype)
                or pd.api.types.is_datetime64_dtype(kind)
                or pd.api.types.is_integer_dtype(kind)
            )
        if not ok:
            raise FeatureInputError(
                f"events: column {name!r} has type {kind}; expected a UTC timestamp "
                f"({s.EVENT_COLUMNS[name]})"
            )
    return set(types)


#: Dense integer id of a subscriber within one lifecycle frame (grouping on it is cheap).
SUBSCRIBER = "_subscriber"


def ordered(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows by subscriber, time, then event name and dedup key (the input order never matters),
    numbered by subscriber in SUBSCRIBER."""
    frame = frame.sort([*s.SUBSCRIBER_INDEX, s.TS, s.EVENT, s.EVENT_KEY])
    user, platform = pl.col(s.USER_ID), pl.col(s.PLATFORM)
    new = (user != user.shift(1)) | (platform != platform.shift(1))
    return frame.with_columns(new.fill_null(True).cum_sum().cast(pl.Int64).alias(SUBSCRIBER))


def _from_pandas(column: pd.Series, rows: np.ndarray | None = None) -> pa.Array:
    """One pandas column (at ``rows``, else whole) as Arrow: zero-copy for ``str``; datetimes
    as timestamp[us] (UTC); categoricals as dictionaries. Rows are taken from the bare array,
    never through a Series (which would take its index too).

    (pyarrow's own conversion reads ``Series.values``, which pandas 3.1 deprecates for
    time-zone-aware columns.)
    """
    if isinstance(column.dtype, pd.CategoricalDtype):  # stays compact: codes + categories
        codes = column.array.codes
        if rows is not None:
            codes = codes[rows]
        has_missing = codes.size > 0 and codes.min() < 0  # cheaper than a mask when none is
        indices = pa.array(codes, mask=codes < 0) if has_missing else pa.array(codes)
        categories = pa.array(column.cat.categories.astype("str").array)
        return pa.DictionaryArray.from_arrays(indices, categories)
    values = column.array if rows is None else column.array.take(rows)
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column):
        stamps = values.as_unit("us")
        return pa.array(stamps.asi8, mask=stamps.isna(), type=pa.timestamp("us", "UTC"))
    if column.dtype == object:
        return pa.array(pd.Series(values, copy=False).astype("str").array)
    # NaN is pandas' missing: null, as Arrow input has it (a NaN price compares above 0)
    return pa.array(values, from_pandas=True)


def _as_micros(name: str, column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        if column.type.unit != "us":
            column = pc.cast(column, pa.timestamp("us", column.type.tz))
        return column.cast(pa.int64())
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    raise FeatureInputError(
        f"events: column {name!r} has type {column.type}; expected a UTC timestamp "
        f"({s.EVENT_COLUMNS[name]})"
    )


def micros(column: pd.Series) -> pd.Series:
    """A datetime column (tz-aware, or naive = UTC) as nullable int64 epoch microseconds."""
    stamps = column.array.as_unit("us")
    values = pd.array(stamps.asi8, dtype="Int64")
    values[stamps.isna()] = pd.NA
    return pd.Series(values, index=column.index, name=column.name)


def days(expr: pl.Expr) -> pl.Expr:
    """A difference of epoch microseconds in (fractional) days."""
    return expr.cast(pl.Float64) / MICROS_PER_DAY
