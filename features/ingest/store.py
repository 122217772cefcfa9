"""The Parquet event store: canonical events and the quarantine, committed atomically.

Layout under the store folder::

    events/month=YYYY-MM/part-<commit>-<id>.parquet   canonical events, by month of ``ts``,
                                                      each file ordered by subscriber bucket
    quarantine/part-<commit>-<id>.parquet             rejected rows and bad files
    manifest.json                                     ingested sources and the parquet files
                                                      each commit added
    .lock                                             held by the one writer

A commit writes its parquet files under new names, fsyncs them, then atomically replaces
``manifest.json``. Readers read only files the manifest lists, so a crash leaves at most orphan
files, which the next writer deletes: the store holds a source file wholly or not at all.

Each event file also holds ``bucket``, the subscriber's hash bucket
(``features.ingest.partitions``), and is ordered by it, so a reader of one partition of
subscribers reads only the row groups whose bucket statistics reach its range. A process
parses each event file's footer once (files are never rewritten in place): a store's footers
grow with it, and parsing them for every partition made a partitioned read cost the square of
the store's size. Files of commits before this column
existed (no ``bucketed`` mark in the manifest) stay readable: their buckets are computed as they
are read.

``compact`` rewrites a month's files as one (every commit adds a file a month, and a partition's
reader opens every file of a month): the new file is published by a commit of its own that lists
the files it replaced, which leave their commits' lists; sources keep their commit numbers.
"""

from __future__ import annotations

import fcntl
import functools
import json
import operator
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from base import LapseError
from features import schema as s
from features.ingest.partitions import bucket_range, partition_of, subscriber_buckets

MANIFEST: Final = "manifest.json"
EVENTS_DIR: Final = "events"
QUARANTINE_DIR: Final = "quarantine"
PARTITION: Final = "month"  # hive partition key: the UTC month of ts, "YYYY-MM"
FORMAT_VERSION: Final = 1
ROW_GROUP_ROWS: Final = 128 * 1024
#: Event files' row groups are smaller: each covers a narrower range of subscriber buckets, so
#: a partition's reader decodes little beyond its own rows (compression barely changes).
EVENT_ROW_GROUP_ROWS: Final = 32 * 1024
#: Near-unique columns: dictionary-encoding them costs time and saves nothing.
_UNIQUE_COLUMNS: Final = frozenset(
    {
        s.EVENT_KEY,
        s.ADID,
        s.TRANSACTION_ID,
        s.ORIGINAL_TRANSACTION_ID,
        s.EXPIRED_TRANSACTION_ID,
        s.RAW,
        s.DETAIL,
        s.LINE,
        s.TS,
        s.PRICE,
        s.PURCHASED_AT,
        s.EXPIRES_AT,
        s.CANCELLED_AT,
        s.INSTALLED_AT_COL,
    }
)


class StoreError(LapseError, ValueError):
    """The store folder is not a usable Lapse event store (says which file and why)."""


_TS: Final = pa.timestamp("us", tz="UTC")


def _arrow_type(name: str) -> pa.DataType:
    if name.startswith("timestamp"):
        return _TS
    return pa.type_for_alias(name)


EVENT_SCHEMA: Final = pa.schema(
    [pa.field(n, _arrow_type(t)) for n, t in s.EVENT_COLUMNS.items()]
    + [pa.field(s.EXTRA, pa.map_(pa.string(), pa.string()))]
)
#: The stored subscriber bucket of each event (features.ingest.partitions), in bucketed commits.
BUCKET: Final = "bucket"
BUCKETED_SCHEMA: Final = EVENT_SCHEMA.append(pa.field(BUCKET, pa.uint16()))
#: The quarantine's CSV header line of the row's file (null for callbacks and older stores).
HEADER: Final = "header"
QUARANTINE_SCHEMA: Final = pa.schema(
    [pa.field(n, _arrow_type(t)) for n, t in s.QUARANTINE_COLUMNS.items()]
    + [pa.field(s.DETAIL, pa.string()), pa.field(HEADER, pa.string())]
)


@dataclass
class Manifest:
    """What the store holds: ingested sources (by content hash) and each commit's files."""

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # sha256 -> record
    commits: list[dict[str, Any]] = field(default_factory=list)

    def event_files(self) -> list[str]:
        """Event parquet files, relative to the store folder, in commit order."""
        return [f for c in self.commits for f in c["events"]]

    def quarantine_files(self) -> list[str]:
        return [f for c in self.commits for f in c["quarantine"]]

    def retired(self) -> dict[str, set[int]]:
        """Quarantine rows (file -> row numbers in it) a later reprocessing commit resolved."""
        out: dict[str, set[int]] = {}
        for c in self.commits:
            for rel, rows in c.get("retired", {}).items():
                out.setdefault(rel, set()).update(rows)
        return out

    def reprocessed_files(self) -> set[str]:
        """Quarantine files written by reprocessing: their rows have had their one retry."""
        return {f for c in self.commits if c.get("reprocessed") for f in c["quarantine"]}

    def to_json(self) -> str:
        return json.dumps(
            {"format": FORMAT_VERSION, "sources": self.sources, "commits": self.commits},
            indent=1,
            sort_keys=True,
        )


def read_manifest(store: Path) -> Manifest:
    """The store's manifest; an empty one if the store does not exist yet."""
    path = Path(store) / MANIFEST
    if not path.exists():
        return Manifest()
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT_VERSION:
            raise StoreError(
                f"{path}: store format {data.get('format')!r}, expected {FORMAT_VERSION}"
            )
        return Manifest(sources=data["sources"], commits=data["commits"])
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"{path}: not a Lapse store manifest ({exc})") from None


@contextmanager
def writer_lock(store: Path) -> Iterator[None]:
    """Hold the store's write lock: two ingests never write one store at once."""
    store = Path(store)
    try:
        store.mkdir(parents=True, exist_ok=True)
        handle = open(store / ".lock", "w")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StoreError(f"{store}: cannot create the event store here ({exc.strerror})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{store}: another ingest is writing this store") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_orphans(store: Path, manifest: Manifest) -> int:
    """Delete parquet files and temp manifests no commit lists (left by a crash); count them."""
    store = Path(store)
    listed = set(manifest.event_files()) | set(manifest.quarantine_files())
    removed = 0
    for folder in (EVENTS_DIR, QUARANTINE_DIR):
        for path in (store / folder).rglob("*.parquet"):
            if path.relative_to(store).as_posix() not in listed:
                path.unlink()
                removed += 1
    for path in store.glob(f".{MANIFEST}.*.tmp"):
        path.unlink()
        removed += 1
    return removed


def month_of(ts: pa.Array) -> pa.Array:
    """The partition value of each timestamp, "YYYY-MM" (UTC)."""
    ts = ts.combine_chunks() if isinstance(ts, pa.ChunkedArray) else ts
    code = pc.add(pc.multiply(pc.year(ts), 100), pc.month(ts))  # strftime is slow on many rows
    distinct = pc.unique(code)
    names = pa.array([f"{c // 100:04d}-{c % 100:02d}" for c in distinct.to_pylist()], pa.string())
    return names.take(pc.index_in(code, distinct))


def commit(
    store: Path,
    manifest: Manifest,
    events: pa.Table,
    quarantine: pa.Table,
    sources: Sequence[dict[str, Any]],
    *,
    key_version: int | None = None,
    retired: dict[str, list[int]] | None = None,
    reprocessed: bool = False,
) -> Manifest:
    """Write events (by month) and quarantine rows, then publish them with ``sources`` at once.

    ``key_version`` says how the events' keys were computed (see ``stored_keys``); ``retired``
    lists quarantine rows (file -> row numbers) this commit resolves, hidden from then on.
    Returns the new manifest; the store is unchanged if this raises or the process dies.
    """
    store = Path(store)
    number = len(manifest.commits) + 1
    tag = f"{number:06d}-{uuid.uuid4().hex[:8]}"
    written_events: list[str] = []
    touched_dirs: set[Path] = set()
    if events.num_rows:
        events = with_buckets(events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA))
        months = month_of(events.column(s.TS))
        distinct = sorted(pc.unique(months).to_pylist())
        for month in distinct:
            # ordered by bucket (then time), so a partition's reader skips other row groups
            part = events if len(distinct) == 1 else events.filter(pc.equal(months, month))
            rel = f"{EVENTS_DIR}/{PARTITION}={month}/part-{tag}.parquet"
            _write(store / rel, part, EVENT_ROW_GROUP_ROWS)
            written_events.append(rel)
            touched_dirs.update({(store / rel).parent, store / EVENTS_DIR})  # new month folders
    written_quarantine: list[str] = []
    if quarantine.num_rows:
        rel = f"{QUARANTINE_DIR}/part-{tag}.parquet"
        _write(store / rel, quarantine.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA))
        written_quarantine.append(rel)
        touched_dirs.update({(store / rel).parent, store})
    for folder in touched_dirs:
        _fsync_dir(folder)
    new = Manifest(
        sources={
            **manifest.sources,
            **{src["sha256"]: dict(src, commit=number) for src in sources},
        },
        commits=[
            *manifest.commits,
            {
                "commit": number,
                "events": written_events,
                "quarantine": written_quarantine,
                "sources": [src["sha256"] for src in sources],
                **({"key_version": key_version} if key_version is not None else {}),
                **({"bucketed": True} if written_events else {}),
                **({"retired": retired} if retired else {}),
                **({"reprocessed": True} if reprocessed else {}),
            },
        ],
    )
    _replace_manifest(store, new)
    return new


def with_buckets(events: pa.Table) -> pa.Table:
    """Events (EVENT_SCHEMA) with their subscriber ``bucket``, ordered by bucket then time."""
    buckets = subscriber_buckets(events.column(s.USER_ID), events.column(s.PLATFORM))
    out = events.append_column(BUCKETED_SCHEMA.field(BUCKET), buckets)
    return out.take(pc.sort_indices(out, [(BUCKET, "ascending"), (s.TS, "ascending")]))


def _write(path: Path, table: pa.Table, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pq.write_table(
            table,
            handle,
            row_group_size=row_group_rows,
            compression="zstd",
            use_dictionary=[c for c in table.column_names if c not in _UNIQUE_COLUMNS],
        )
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_manifest(store: Path, manifest: Manifest) -> None:
    tmp = store / f".{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w") as handle:
        handle.write(manifest.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, store / MANIFEST)
    _fsync_dir(store)


# --- reading ------------------------------------------------------------------------------------


def _events_dataset(
    store: Path,
    manifest: Manifest,
    months: Iterable[str] | None = None,
    schema: pa.Schema = EVENT_SCHEMA,
    buckets: tuple[int, int] | None = None,
) -> ds.FileSystemDataset:
    """The manifest's event files (of ``months``, if given) as one dataset; with ``buckets``
    (first, last) only the row groups whose bucket statistics reach into that range."""
    files = manifest.event_files()
    if months is not None:
        wanted = {f"{PARTITION}={m}" for m in months}
        files = [f for f in files if f.split("/")[1] in wanted]
    footers = [_footer(store / f) for f in files]
    fragments = [f.fragment if buckets is None else f.row_groups_in(*buckets) for f in footers]
    return ds.FileSystemDataset(fragments, schema, _PARQUET, _LOCAL)


#: Row groups whose parsed footers a process keeps (``_footer``): ~27 KiB each, so at most
#: ~1 GiB; the compacted files of a 10M-subscriber store hold ~23k.
FOOTER_CACHE_ROW_GROUPS: Final = 40_000

_PARQUET = ds.ParquetFileFormat()
_LOCAL = pafs.LocalFileSystem()


@dataclass(frozen=True)
class _Footer:
    """An event file as a fragment with its footer parsed, and each row group's lowest and
    highest bucket (None: a file from before the bucket column, or without its statistics)."""

    fragment: ds.ParquetFileFragment
    lowest: np.ndarray | None
    highest: np.ndarray | None

    @classmethod
    def read(cls, path: Path) -> _Footer:
        fragment = _PARQUET.make_fragment(str(path), filesystem=_LOCAL)
        fragment.ensure_complete_metadata()
        meta = fragment.metadata
        paths = [meta.schema.column(k).path for k in range(meta.num_columns)]
        if BUCKET not in paths:
            return cls(fragment, None, None)
        column = paths.index(BUCKET)
        stats = [meta.row_group(g).column(column).statistics for g in range(meta.num_row_groups)]
        if not all(st is not None and st.has_min_max for st in stats):
            return cls(fragment, None, None)
        lowest = np.array([st.min for st in stats], dtype=np.int64)
        highest = np.array([st.max for st in stats], dtype=np.int64)
        return cls(fragment, lowest, highest)

    def row_groups_in(self, first: int, last: int) -> ds.ParquetFileFragment:
        """The fragment cut to the row groups that may hold buckets ``first <= b < last``."""
        if self.lowest is None or self.highest is None:
            return self.fragment
        overlap = (self.highest >= first) & (self.lowest < last)
        return self.fragment.subset(row_group_ids=np.flatnonzero(overlap).tolist())


class _FooterCache:
    """Event files' footers (``_Footer``) parsed once per process (per file: path, inode, size,
    modification and change times: a file restored with its old times still has a new change
    time), not once per read. A store's files are never rewritten in place; and
    a partitioned read of a store of N row groups would otherwise parse all N footers and test
    all N row groups' statistics per partition, a cost that grows with the square of the
    store's size. Least recently used files go first once the row groups held pass ``limit``;
    safe across threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._footers: OrderedDict[tuple[str, int, int, int, int], _Footer] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> _Footer:
        info = path.stat()
        key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self._lock:
            hit = self._footers.get(key)
            if hit is not None:
                self._footers.move_to_end(key)
                return hit
        footer = _Footer.read(path)  # outside the lock: other readers go on meanwhile
        with self._lock:
            if key not in self._footers:
                self._footers[key] = footer
                self._held += footer.fragment.num_row_groups
            while self._held > self.limit and len(self._footers) > 1:
                self._held -= self._footers.popitem(last=False)[1].fragment.num_row_groups
        return footer

    def clear(self) -> None:
        with self._lock:
            self._footers.clear()
            self._held = 0


_footer = _FooterCache(FOOTER_CACHE_ROW_GROUPS)


def stored_keys(
    store: Path,
    manifest: Manifest,
    months: Iterable[str],
    key_version: int | None = None,
    rekey: Callable[[pa.Table], pa.Array] | None = None,
    key_columns: Sequence[str] = (),
) -> pa.Array:
    """Event keys already stored in the given months (for deduplication).

    Events committed under another ``key_version`` than the current one have their keys
    recomputed by ``rekey`` from their ``key_columns``, so old and new keys compare.
    """
    store, months = Path(store), list(months)

    def read(listed: Manifest) -> pa.Array:
        return _stored_keys(store, listed, months, key_version, rekey, key_columns)

    try:
        return read(manifest)
    except (OSError, pa.ArrowException):  # the writer holds the lock: the files are all there
        _refuse_missing(store, manifest)
        _refuse_damaged(store, manifest, read)
        raise


def _stored_keys(
    store: Path,
    manifest: Manifest,
    months: list[str],
    key_version: int | None,
    rekey: Callable[[pa.Table], pa.Array] | None,
    key_columns: Sequence[str],
) -> pa.Array:
    if rekey is None:
        data = _events_dataset(store, manifest, months)
        return data.to_table(columns=[s.EVENT_KEY]).column(s.EVENT_KEY).combine_chunks()
    current = Manifest(commits=[c for c in manifest.commits if c.get("key_version") == key_version])
    older = Manifest(commits=[c for c in manifest.commits if c.get("key_version") != key_version])
    keys = [
        _events_dataset(store, current, months)
        .to_table(columns=[s.EVENT_KEY])
        .column(s.EVENT_KEY)
        .combine_chunks()
    ]
    old = _events_dataset(store, older, months).to_table(columns=list(key_columns))
    if old.num_rows:
        keys.append(rekey(old))
    return pa.concat_arrays([k.cast(pa.string()) for k in keys])


def _as_utc(value: datetime | str | pd.Timestamp | None) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def read_events_table(
    store: Path,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    columns: Sequence[str] | None = None,
    include_sandbox: bool = True,
    partition: tuple[int, int] | None = None,
) -> pa.Table:
    """Events with ``start <= ts < end`` as an Arrow table (see ``load_events``); with
    ``partition=(index, count)`` only the events of that partition's subscribers
    (``features.ingest.partitions``), read by row-group statistics on the stored bucket."""
    store = Path(store)
    return _with_current_files(
        store,
        lambda manifest: _read_events(
            store, manifest, start, end, columns, include_sandbox, partition
        ),
    )


def _read_events(
    store: Path,
    manifest: Manifest,
    start: datetime | str | None,
    end: datetime | str | None,
    columns: Sequence[str] | None,
    include_sandbox: bool,
    partition: tuple[int, int] | None,
) -> pa.Table:
    wanted = list(columns) if columns is not None else list(s.EVENT_COLUMNS)
    unknown = [c for c in wanted if c not in EVENT_SCHEMA.names]
    if unknown:
        raise StoreError(
            f"{store}: unknown event column(s) {', '.join(unknown)}; "
            f"the store has {', '.join(EVENT_SCHEMA.names)}"
        )
    lo, hi = _as_utc(start), _as_utc(end)
    months = None
    if lo is not None or hi is not None:
        present = sorted({f.split("/")[1].split("=", 1)[1] for f in manifest.event_files()})
        months = [
            m
            for m in present
            if (lo is None or m >= lo.strftime("%Y-%m"))
            and (hi is None or m <= (hi - pd.Timedelta(microseconds=1)).strftime("%Y-%m"))
        ]
    clauses = []
    if lo is not None:
        clauses.append(ds.field(s.TS) >= pa.scalar(lo.to_pydatetime(), _TS))
    if hi is not None:
        clauses.append(ds.field(s.TS) < pa.scalar(hi.to_pydatetime(), _TS))
    if not include_sandbox:
        env = ds.field(s.ENVIRONMENT)
        clauses.append(env.is_null() | (env != s.ENV_SANDBOX))  # a null never equals 'sandbox'
    condition = functools.reduce(operator.and_, clauses) if clauses else None
    if partition is None:
        return _events_dataset(store, manifest, months).to_table(columns=wanted, filter=condition)
    index, count = partition
    first, last = bucket_range(index, count)
    bucketed = Manifest(commits=[c for c in manifest.commits if c.get("bucketed")])
    legacy = Manifest(commits=[c for c in manifest.commits if not c.get("bucketed")])
    in_range = (ds.field(BUCKET) >= first) & (ds.field(BUCKET) < last)
    tables = [
        _events_dataset(store, bucketed, months, BUCKETED_SCHEMA, (first, last)).to_table(
            columns=wanted,
            filter=in_range if condition is None else condition & in_range,
        )
    ]
    if legacy.event_files():  # written before the bucket column: hash as it is read
        keys = [c for c in s.SUBSCRIBER_INDEX if c not in wanted]
        scanner = _events_dataset(store, legacy, months).scanner(
            columns=wanted + keys, filter=condition
        )
        for batch in scanner.to_batches():
            buckets = subscriber_buckets(batch.column(s.USER_ID), batch.column(s.PLATFORM))
            mine = pa.array(partition_of(buckets, count) == index)
            tables.append(pa.Table.from_batches([batch.filter(mine)]).select(wanted))
    return pa.concat_tables(tables)


def _with_current_files(store: Path, read: Callable[[Manifest], Any]) -> Any:
    """``read(manifest)``, again with the new manifest if a file it lists went away meanwhile
    (a compaction replaced it): a reader never fails on a store a writer changed under it. A
    compaction publishes each month on its own, so a read may meet several: it is read again as
    long as the manifest changed since the last try. A file missing or damaged while the
    manifest stays put is named in the error."""
    manifest = read_manifest(store)
    while True:
        try:
            return read(manifest)
        except (OSError, pa.ArrowException):
            fresh = read_manifest(store)
            if fresh.event_files() == manifest.event_files():
                _refuse_missing(store, fresh)
                _refuse_damaged(store, fresh, read)
                raise
            manifest = fresh


def _refuse_damaged(store: Path, manifest: Manifest, read: Callable[[Manifest], Any]) -> None:
    """Raise naming the first event file the same ``read`` fails on alone (a read of many
    files fails without saying which; this costs one more read, on the failure path only)."""
    for c in manifest.commits:
        for rel in c["events"]:
            try:
                read(Manifest(commits=[dict(c, events=[rel], quarantine=[])]))
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(
                    f"{store / rel}: cannot read this event file ({_one_line(exc)}); it is "
                    "damaged: restore it from a backup"
                ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # Arrow's messages span lines


def _refuse_missing(store: Path, manifest: Manifest) -> None:
    """Raise naming the event files the manifest lists that are not on disk, if any."""
    missing = [f for f in manifest.event_files() if not (store / f).exists()]
    if missing:
        more = f" (and {len(missing) - 1:,} more)" if len(missing) > 1 else ""
        raise StoreError(
            f"{store / missing[0]}{more}: event file listed in {store / MANIFEST} is missing "
            "(deleted or moved?); its rows cannot be read until it is restored from a backup"
        )


def event_rows(store: str | os.PathLike[str]) -> int:
    """Rows in the store's event files, from their Parquet footers (nothing else is read)."""
    store = Path(store)
    return _with_current_files(
        store,
        lambda manifest: sum(
            pq.ParquetFile(store / f).metadata.num_rows for f in manifest.event_files()
        ),
    )


def events_span(
    store: str | os.PathLike[str],
    end: datetime | str | None = None,
    include_sandbox: bool = True,
) -> tuple[int, pd.Timestamp | None, pd.Timestamp | None]:
    """How many events are stored before ``end``, and the first and last of their times: one
    streamed pass over the ``ts`` column (memory stays that of one batch)."""
    store = Path(store)
    return _with_current_files(store, lambda manifest: _span(store, manifest, end, include_sandbox))


def _span(
    store: Path, manifest: Manifest, end: datetime | str | None, include_sandbox: bool
) -> tuple[int, pd.Timestamp | None, pd.Timestamp | None]:
    hi = _as_utc(end)
    clauses = []
    if hi is not None:
        clauses.append(ds.field(s.TS) < pa.scalar(hi.to_pydatetime(), _TS))
    if not include_sandbox:
        env = ds.field(s.ENVIRONMENT)
        clauses.append(env.is_null() | (env != s.ENV_SANDBOX))
    condition = functools.reduce(operator.and_, clauses) if clauses else None
    count, first, last = 0, None, None
    scanner = _events_dataset(store, manifest).scanner(columns=[s.TS], filter=condition)
    for batch in scanner.to_batches():
        if not batch.num_rows:
            continue
        count += batch.num_rows
        bounds = pc.min_max(batch.column(0))
        lo, hi_ = bounds["min"].as_py(), bounds["max"].as_py()
        first = lo if first is None or lo < first else first
        last = hi_ if last is None or hi_ > last else last
    as_ts = lambda v: None if v is None else pd.Timestamp(v).tz_convert("UTC")  # noqa: E731
    return count, as_ts(first), as_ts(last)


def load_events(
    store: str | os.PathLike[str],
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    columns: Sequence[str] | None = None,
    include_sandbox: bool = True,
    partition: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Canonical events with ``start <= ts < end`` (UTC; naive times are taken as UTC).

    Only the months the range touches are opened, and row groups outside it are skipped by
    their statistics. ``columns`` defaults to ``EVENT_COLUMNS`` (``extra`` on request);
    ``include_sandbox=False`` drops store-sandbox rows; ``partition=(index, count)`` keeps the
    events of that partition of subscribers (``features.ingest.partitions``). Rows are ordered
    by ts, user_id, event_key.
    """
    table = read_events_table(Path(store), start, end, columns, include_sandbox, partition)
    order = [(c, "ascending") for c in (s.TS, s.USER_ID, s.EVENT_KEY) if c in table.column_names]
    if order:
        table = table.take(pc.sort_indices(table, order))
    return table.to_pandas()


def quarantine_file(store: Path, rel: str) -> pa.Table:
    """One quarantine file in QUARANTINE_SCHEMA (columns added since it was written are null)."""
    table = pq.read_table(Path(store) / rel)
    for name in QUARANTINE_SCHEMA.names:
        if name not in table.column_names:
            kind = QUARANTINE_SCHEMA.field(name).type
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)


def load_quarantine(store: str | os.PathLike[str]) -> pd.DataFrame:
    """Every rejected row and bad file: source, line (0 = whole file), reason, raw, detail, header.

    Rows a reprocessing resolved are left out (``features.ingest.reprocess_quarantine``).
    """
    store = Path(store)
    manifest = read_manifest(store)
    retired = manifest.retired()
    tables = []
    for rel in manifest.quarantine_files():
        table = quarantine_file(store, rel)
        if rel in retired:
            keep = np.ones(table.num_rows, bool)
            keep[sorted(retired[rel])] = False
            table = table.filter(pa.array(keep))
        tables.append(table)
    return pa.concat_tables([QUARANTINE_SCHEMA.empty_table(), *tables]).to_pandas()


# --- compaction ---------------------------------------------------------------------------------

#: Rows of one month a compaction sorts at once (a bucket range from every file). Its peak is
#: ~1.4 KiB a chunk row (the Arrow rows, their sorted copy, the writer's buffers) plus one decoded
#: row group a file being merged: measured at 20 files a month, 1.0-1.6 GiB with 0.22M-row chunks,
#: 1.8-1.9 GiB with 0.76M (docs/benchmarks.md); an ingest usually merges store.compact_files + 1.
COMPACT_CHUNK_ROWS: Final = 500_000


@dataclass(frozen=True)
class Compaction:
    """What one compaction did: the months rewritten, their event files before and after,
    the rows rewritten, and how long it took."""

    months: tuple[str, ...] = ()
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    seconds: float = 0.0


def compact(
    store: str | os.PathLike[str],
    more_than: int = 1,
    chunk_rows: int = COMPACT_CHUNK_ROWS,
    progress: Callable[[str, int, int], None] | None = None,
) -> Compaction:
    """Rewrite each month holding more than ``more_than`` event files as one bucket-ordered file,
    under the store's write lock: a partition's read then touches one file a month, not all."""
    store = Path(store)
    if not (store / MANIFEST).exists():
        raise StoreError(f"{store}: no event store here (no {MANIFEST}); nothing to compact")
    with writer_lock(store):
        manifest = read_manifest(store)
        remove_orphans(store, manifest)
        return compact_months(store, manifest, more_than, chunk_rows, progress)[1]


def compact_months(
    store: Path,
    manifest: Manifest,
    more_than: int = 1,
    chunk_rows: int = COMPACT_CHUNK_ROWS,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Manifest, Compaction]:
    """``compact`` for a writer that holds the lock: returns the new manifest and what it did.

    Each month is published on its own (new file fsynced, manifest replaced, then the old files
    deleted), so a crash leaves every row exactly once: in the old files or in the new one.
    Files of commits with different ``key_version`` are compacted apart (``stored_keys``).
    """
    if more_than < 1:
        raise StoreError(f"compaction: more_than must be at least 1 file a month, got {more_than}")
    if chunk_rows < 1:
        raise StoreError(f"compaction: chunk_rows must be at least 1, got {chunk_rows}")
    started = time.perf_counter()
    store = Path(store)
    per_month: dict[str, list[str]] = {}
    for rel in manifest.event_files():
        per_month.setdefault(rel.split("/")[1].split("=", 1)[1], []).append(rel)
    todo = sorted(m for m, files in per_month.items() if len(files) > more_than)
    report = progress or (lambda stage, done, total: None)
    if todo:
        report("months compacted", 0, len(todo))
    before = after = rows = 0
    rewritten: list[str] = []  # a month of one file per key version is left as it is
    for done, month in enumerate(todo, start=1):
        manifest, written = _compact_month(store, manifest, month, chunk_rows)
        if _files_in(manifest, month) < len(per_month[month]):
            rewritten.append(month)
            before += len(per_month[month])
            after += _files_in(manifest, month)
            rows += written
        report("months compacted", done, len(todo))
    seconds = time.perf_counter() - started
    return manifest, Compaction(tuple(rewritten), before, after, rows, seconds)


def _files_in(manifest: Manifest, month: str) -> int:
    return sum(f.split("/")[1] == f"{PARTITION}={month}" for f in manifest.event_files())


def _compact_month(
    store: Path, manifest: Manifest, month: str, chunk_rows: int
) -> tuple[Manifest, int]:
    """One month's files rewritten (one file per key version) and published; rows written."""
    folder = f"{PARTITION}={month}"
    groups: dict[int | None, list[tuple[str, bool]]] = {}
    for c in manifest.commits:
        for rel in c["events"]:
            if rel.split("/")[1] == folder:
                groups.setdefault(c.get("key_version"), []).append((rel, bool(c.get("bucketed"))))
    commits = [dict(c) for c in manifest.commits]
    replaced: set[str] = set()
    rows = 0
    for key_version, files in groups.items():
        if len(files) < 2:
            continue
        number = len(commits) + 1
        rel = f"{EVENTS_DIR}/{folder}/part-{number:06d}-{uuid.uuid4().hex[:8]}.parquet"
        rows += _write_compacted(store, store / rel, files, chunk_rows)
        replaced.update(f for f, _ in files)
        commits.append(
            {
                "commit": number,
                "events": [rel],
                "quarantine": [],
                "sources": [],
                "bucketed": True,
                "compacted": [f for f, _ in files],
                **({"key_version": key_version} if key_version is not None else {}),
            }
        )
    if not replaced:
        return manifest, 0
    _fsync_dir(store / EVENTS_DIR / folder)
    for c in commits:
        if any(f in replaced for f in c["events"]):
            c["events"] = [f for f in c["events"] if f not in replaced]
    new = Manifest(sources=manifest.sources, commits=commits)
    _replace_manifest(store, new)
    _remove_files(store, sorted(replaced))
    return new, rows


def _write_compacted(
    store: Path, path: Path, files: Sequence[tuple[str, bool]], chunk_rows: int
) -> int:
    """The rows of ``files`` (in order) as one file ordered by (bucket, ts), ties in file order
    (as one commit of them all would write it), built a bucket range at a time; rows written.

    Each file is bucket-ordered, so each is read once, row group by row group, and a range
    takes a prefix of what each has read: every row group is decoded once, however many files.
    """
    cursors = [_Cursor(store, rel, bucketed) for rel, bucketed in files]
    total = sum(c.rows for c in cursors)
    chunks = max(1, -(-total // chunk_rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with (
            open(path, "wb") as handle,
            pq.ParquetWriter(
                handle,
                BUCKETED_SCHEMA,
                compression="zstd",
                use_dictionary=[c for c in BUCKETED_SCHEMA.names if c not in _UNIQUE_COLUMNS],
            ) as writer,
        ):
            carry = BUCKETED_SCHEMA.empty_table()
            for index in range(chunks):
                last = bucket_range(index, chunks)[1]
                rest = pa.concat_tables(
                    [BUCKETED_SCHEMA.empty_table()] + [c.take(last) for c in cursors]
                ).combine_chunks()  # a take across a slice of every file: 2.5x slower at 100
                order = pc.sort_indices(rest, [(BUCKET, "ascending"), (s.TS, "ascending")])
                table = pa.concat_tables([carry, rest.take(order)])  # sort_indices is stable
                whole = table.num_rows - table.num_rows % EVENT_ROW_GROUP_ROWS
                if index == chunks - 1:
                    whole = table.num_rows
                if whole:  # only whole row groups until the end: row groups as commit's
                    writer.write_table(table.slice(0, whole), row_group_size=EVENT_ROW_GROUP_ROWS)
                    written += whole
                carry = table.slice(whole).combine_chunks()
            writer.close()
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)  # never listed: the month's files stay as they were
        raise
    if written != total:
        raise StoreError(f"{path}: compaction wrote {written:,} rows of {total:,} (left unlisted)")
    return written


class _Cursor:
    """One event file read forward in bucket order, a row group at a time (a file from before
    the bucket column is read whole, its buckets computed and its rows put in bucket order)."""

    def __init__(self, store: Path, rel: str, bucketed: bool) -> None:
        self.path = store / rel
        with self._reading():
            self.rows = pq.ParquetFile(self.path).metadata.num_rows
            if bucketed:  # a row group at a time (Parquet decodes no less), in file order
                data = ds.dataset([str(self.path)], schema=BUCKETED_SCHEMA, format="parquet")
                groups = (g for whole in data.get_fragments() for g in whole.split_by_row_group())
                self.groups = (g.to_table(schema=BUCKETED_SCHEMA) for g in groups)
            else:
                data = ds.dataset([str(self.path)], schema=EVENT_SCHEMA, format="parquet")
                self.groups = iter([with_buckets(data.to_table())])  # stable: ties keep order
        self.pending = BUCKETED_SCHEMA.empty_table()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A file that cannot be read refuses the compaction, naming the file."""
        try:
            yield
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(
                f"{self.path}: cannot read this event file ({_one_line(exc)}); its month was not "
                "compacted and its files are as they were (restore this file from a backup, "
                "or set store.compact_files = 0 until then)"
            ) from None

    def take(self, last: int) -> pa.Table:
        """The rows not taken yet with a bucket below ``last``, in file order."""
        parts = [self.pending]
        while not parts[-1].num_rows or parts[-1].column(BUCKET)[-1].as_py() < last:
            with self._reading():
                group = next(self.groups, None)
            if group is None:
                break
            parts.append(group)
        pending = pa.concat_tables(parts)  # no copy: the batches are referenced
        buckets = pending.column(BUCKET).to_numpy()
        cut = int(np.searchsorted(buckets, last, side="left"))
        out, self.pending = pending.slice(0, cut), pending.slice(cut)
        return out


def _remove_files(store: Path, rels: Sequence[str]) -> None:
    """Delete files a published manifest no longer lists (a crash before leaves orphans)."""
    for rel in rels:
        (store / rel).unlink(missing_ok=True)
