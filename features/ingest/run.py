"""Ingest Adjust exports into the event store: read, normalise, deduplicate, quarantine, commit.

``ingest(sources, store)`` takes files and folders (raw-export CSV, plain or gzip, and callback
logs), skips files whose content the store already holds, and commits the rest in batches: each
commit publishes whole files only, so a crash loses at most the batch in flight and a re-run
picks up from there. An event already stored (same event key) is dropped as a duplicate.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base import LapseError
from features import schema as s
from features.ingest.adjust import (
    _CALLBACK_SUFFIXES,
    BAD_FILE_LINE,
    KEY_COLUMNS,
    KEY_VERSION,
    SOURCE_INDEX,
    BadFile,
    Normalised,
    Source,
    _is_callback_log,
    canonical_event_keys,
    normalise,
    read_source,
)
from features.ingest.store import (
    HEADER,
    MANIFEST,
    Compaction,
    Manifest,
    StoreError,
    commit,
    compact_months,
    load_quarantine,
    month_of,
    quarantine_file,
    read_manifest,
    remove_orphans,
    stored_keys,
    writer_lock,
)
from features.settings import DEFAULT_MAX_PRICE, IngestSettings, StoreSettings

#: Called as progress(stage, done, total), e.g. lapse.console.progress_bars()'s report.
Progress = Callable[[str, int, int], None]
#: File names taken from folders (a file named on the command line is always read).
SOURCE_SUFFIXES: Final = (
    ".csv",
    ".csv.gz",
    ".log",
    ".log.gz",
    ".jsonl",
    ".jsonl.gz",
    ".ndjson",
    ".ndjson.gz",
    ".txt",
    ".txt.gz",
)
#: A commit is cut once a batch holds this many rows (or BATCH_FILES files).
BATCH_ROWS: Final = 500_000
BATCH_FILES: Final = 5_000
READ_THREADS: Final = 2
READ_AHEAD: Final = 16


class IngestError(LapseError, ValueError):
    """Ingest cannot start: a source path that does not exist, or nothing to read."""


@dataclass
class IngestSummary:
    """What one ingest run did; ``bad_files`` maps each unreadable file to its reason."""

    store: str
    files: int = 0
    files_skipped: int = 0  # seen before (same bytes): not read again
    files_repeated: int = 0  # same bytes as another file of this run (e.g. header-only parts)
    header_only_files: int = 0
    rows_read: int = 0
    rows_stored: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    bad_files: dict[str, str] = field(default_factory=dict)  # whole file, or partly (its rest kept)
    notes: dict[str, list[str]] = field(default_factory=dict)  # file -> what was read differently
    commits: int = 0
    orphans_removed: int = 0
    already_retried: int = 0  # quarantined rows a reprocess read once before (not read again)
    #: files seen before whose rows were not all stored then (rejected whole, read in part, or
    #: with quarantined rows) -> what happened to them, and how to have them read again
    seen_before: dict[str, str] = field(default_factory=dict)
    #: the months rewritten as one file each at the end (``store.compact_months``)
    compaction: Compaction = field(default_factory=Compaction)

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())


def find_sources(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named, and files with a known suffix under folders (sorted); a missing path raises.

    Folder links are followed, each real folder once (a link loop ends there); a link to a file
    that does not exist, and a pipe or other non-regular file, are returned so that reading
    reports them as bad files instead of skipping them silently.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(_walk(path))
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            raise IngestError(f"{path}: no such file or folder to ingest")
    unique = list(dict.fromkeys(p.absolute() for p in found))
    return unique


def _walk(folder: Path) -> Iterator[Path]:
    """Files with a known suffix under ``folder``, following folder links, each folder once."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        info = os.stat(root)
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(SOURCE_SUFFIXES):
                yield Path(root) / name


@dataclass
class _Read:
    """One file's bytes, digest and parse (or why it could not be parsed)."""

    path: Path
    size: int
    sha256: str
    source: Source | None = None
    bad: BadFile | None = None


def _read(path: Path, known: Container[str] = ()) -> _Read:
    """Read and hash ``path``; parse it unless its hash is in ``known`` (already in the store).

    Only regular files are read: a named pipe would block the run (and the store lock) for ever.
    """
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        if path.is_symlink():
            target = os.readlink(path)
            return _Read(path, 0, "", bad=BadFile("broken_link", f"links to {target}, not found"))
        return _Read(path, 0, "", bad=BadFile("unreadable_file", exc.strerror or str(exc)))
    except OSError as exc:
        return _Read(path, 0, "", bad=BadFile("unreadable_file", exc.strerror or str(exc)))
    try:
        mode = os.fstat(handle).st_mode
        if not stat.S_ISREG(mode):
            kind = "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
            return _Read(path, 0, "", bad=BadFile("not_a_regular_file", f"{kind}: not read"))
        with os.fdopen(handle, "rb") as stream:
            handle = -1
            data = stream.read()
    except OSError as exc:
        return _Read(path, 0, "", bad=BadFile("unreadable_file", exc.strerror or str(exc)))
    finally:
        if handle >= 0:
            os.close(handle)
    result = _Read(path, len(data), hashlib.sha256(data).hexdigest())
    if result.sha256 in known:
        return result
    try:
        result.source = read_source(str(path), data)
    except BadFile as exc:
        result.bad = exc
    return result


@dataclass(frozen=True)
class Rules:
    """Today's validation rules of one run: identity column, unknown columns, the time window."""

    user_id_column: str
    keep_unknown_columns: bool
    earliest: datetime
    latest: datetime | None
    max_price: float = DEFAULT_MAX_PRICE

    @classmethod
    def of(cls, settings: IngestSettings | None, now: datetime | None) -> Rules:
        """The ``[ingest]`` rules with the window made absolute. ``now`` comes from the caller
        (the CLI, the service: the edge reads the clock, never a transform); without it only
        times past 2100 count as from the future."""
        settings = settings or IngestSettings()
        earliest = settings.earliest
        latest = None if now is None else _utc(now) + timedelta(days=settings.max_future_days)
        return cls(
            settings.user_id_column,
            settings.keep_unknown_columns,
            _utc(datetime(earliest.year, earliest.month, earliest.day)),
            latest,
            settings.max_price,
        )

    def normalise(self, rows: pa.Table, shared: bool = False) -> Normalised:
        """``adjust.normalise`` under these rules (``shared``: keys in the process's DuckDB)."""
        return normalise(
            rows,
            user_id_column=self.user_id_column,
            keep_unknown=self.keep_unknown_columns,
            earliest=self.earliest,
            latest=self.latest,
            max_price=self.max_price,
            shared=shared,
        )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass
class _Batch:
    reads: list[_Read] = field(default_factory=list)
    rows: int = 0


def ingest(
    sources: Sequence[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    settings: IngestSettings | None = None,
    *,
    progress: Progress | None = None,
    now: datetime | None = None,
    compact_files: int = StoreSettings().compact_files,
) -> IngestSummary:
    """Add the given files and folders to the event store at ``store``; see the module doc.

    ``settings`` are the ``[ingest]`` rules (default: their defaults). Times outside
    [``earliest``, ``now`` + ``max_future_days``) are quarantined as ``implausible_time``;
    ``now`` (aware, or naive UTC) is the caller's clock (`lapse ingest` passes the run's start);
    without it only times past 2100 count as from the future. At the end, each month holding
    more than ``compact_files`` event files (0: never) is rewritten as one (``store.compact``).
    """
    rules = Rules.of(settings, now)
    store = Path(store)
    paths = find_sources(sources)
    if not paths:
        raise IngestError(
            f"nothing to ingest in {', '.join(map(str, sources))}: no files ending in "
            f"{', '.join(SOURCE_SUFFIXES)}"
        )
    summary = IngestSummary(store=str(store), files=len(paths))
    report = progress or (lambda stage, done, total: None)
    with writer_lock(store):
        manifest = read_manifest(store)
        summary.orphans_removed = remove_orphans(store, manifest)
        keys = _KeyCache(store)
        batch = _Batch()
        seen: set[str] = set()
        report("files", 0, len(paths))
        report("rows", 0, 0)
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            for done, read in enumerate(_read_ahead(pool, paths, manifest.sources), start=1):
                if read.sha256 and read.sha256 in seen:  # same bytes as a file earlier in this run
                    summary.files_repeated += 1
                    summary.header_only_files += bool(read.source and read.source.header_only)
                elif read.sha256 in manifest.sources:
                    summary.files_skipped += 1
                    history = _history(manifest.sources[read.sha256], read.path)
                    if history:
                        summary.seen_before[str(read.path)] = history
                else:
                    seen.add(read.sha256)
                    batch.reads.append(read)
                    batch.rows += read.source.rows.num_rows if read.source else 0
                if batch.rows >= BATCH_ROWS or len(batch.reads) >= BATCH_FILES:
                    manifest = _flush(store, manifest, batch, keys, summary, rules)
                    batch = _Batch()
                report("files", done, len(paths))
                # rows validated and committed (stored, dropped or quarantined) of rows read
                report("rows", summary.rows_read, summary.rows_read + batch.rows)
        if batch.reads:
            manifest = _flush(store, manifest, batch, keys, summary, rules)
        report("rows", summary.rows_read, summary.rows_read)
        if compact_files:
            try:
                manifest, summary.compaction = compact_months(
                    store, manifest, compact_files, progress=report
                )
            except StoreError as exc:  # the ingest is committed: say so, then why not compacted
                raise StoreError(
                    f"ingest of {store} committed ({summary.rows_stored:,} row(s) stored), "
                    f"then compaction failed: {exc}"
                ) from None
    summary.quarantined = dict(sorted(summary.quarantined.items()))
    return summary


def _history(record: dict, path: Path) -> str | None:
    """What happened to a file the store has seen (its manifest ``record``) when its rows were
    not all stored, and how to have it read again; None when it was simply ingested."""
    status, reason = record.get("status"), record.get("reason")
    detail = f"{reason}: {record.get('detail')}" if record.get("detail") else str(reason)
    first = record.get("path")
    where = f" as {first}" if first and first != str(path) else ""
    when = f" in commit {record['commit']}" if "commit" in record else ""
    quarantined = int(record.get("rows_quarantined") or 0)
    retry = (
        f"; its {quarantined:,} quarantined row(s) are retried under today's rules by "
        "`lapse ingest --reprocess-quarantine`"
        if quarantined
        else ""
    )
    if status == "bad":
        return (
            f"rejected before{where}{when} ({detail}); the same bytes would be rejected again: "
            "fix the file (or export it again) and ingest the new file"
        )
    if status == "partial":
        return (
            f"read in part before{where}{when} ({detail}): {record.get('rows_stored', 0):,} "
            f"row(s) stored{retry}; the lost part can only come from a new export of the file"
        )
    if quarantined:
        return (
            f"ingested before{where}{when}: {record.get('rows_stored', 0):,} row(s) stored, "
            f"{quarantined:,} quarantined{retry}"
        )
    return None


def _read_ahead(
    pool: ThreadPoolExecutor, paths: Sequence[Path], known: Container[str]
) -> Iterator[_Read]:
    """``_read`` each path on the pool, in order, with at most READ_AHEAD files in memory."""
    pending: deque[Future[_Read]] = deque()
    for path in paths:
        pending.append(pool.submit(_read, path, known))
        if len(pending) >= READ_AHEAD:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _KeyCache:
    """Event keys stored per month, loaded when a batch first touches the month."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.months: dict[str, pa.Array] = {}

    def keys(self, manifest: Manifest, months: list[str]) -> pa.Array:
        for month in set(self.months) - set(months):  # batches move forward in time
            del self.months[month]
        for month in months:
            if month not in self.months:
                self.months[month] = stored_keys(
                    self.store,
                    manifest,
                    [month],
                    key_version=KEY_VERSION,
                    rekey=canonical_event_keys,
                    key_columns=KEY_COLUMNS,
                )
        arrays = [self.months[m] for m in months]
        return pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())

    def add(self, keys: pa.Array, months: pa.Array) -> None:
        for month in self.months:
            self.months[month] = pa.concat_arrays(
                [self.months[month], keys.filter(pc.equal(months, month))]
            )


def _flush(
    store: Path,
    manifest: Manifest,
    batch: _Batch,
    cache: _KeyCache,
    summary: IngestSummary,
    rules: Rules,
) -> Manifest:
    """Normalise, deduplicate and commit one batch of files; add its counts to ``summary``."""
    reads = batch.reads
    names = pa.array([str(r.path) for r in reads], pa.string())
    result = rules.normalise(_batch_rows(reads))
    events = result.events

    keep, months = _new_events(events, cache, manifest)
    source_of = events.column(s.SOURCE).combine_chunks().to_numpy()
    stored_per = np.bincount(source_of[keep], minlength=len(reads))
    duplicate_per = np.bincount(source_of[~keep], minlength=len(reads))
    events = events.filter(pa.array(keep))
    months = months.filter(pa.array(keep))
    events = events.set_column(
        events.schema.get_field_index(s.SOURCE), s.SOURCE, names.take(events.column(s.SOURCE))
    )

    quarantine = _quarantine(reads, result.rejected)
    rejected_rows = pc.not_equal(quarantine.column(s.LINE), BAD_FILE_LINE)
    quarantined_per = np.bincount(
        quarantine.column(SOURCE_INDEX).filter(rejected_rows).to_numpy(), minlength=len(reads)
    )
    records = []
    for i, read in enumerate(reads):
        record = _source_record(read, stored_per[i], duplicate_per[i], quarantined_per[i])
        records.append(record)
        summary.rows_read += record["rows_read"]
        summary.header_only_files += record["status"] == "header_only"
        fault = read.bad or (read.source.damage if read.source else None)
        if fault:
            summary.bad_files[str(read.path)] = fault.reason
        if read.source and read.source.notes:
            summary.notes[str(read.path)] = list(read.source.notes)
    summary.rows_stored += events.num_rows
    summary.duplicates += int(duplicate_per.sum())
    reasons = Counter(quarantine.column(s.REASON).filter(rejected_rows).to_pylist())
    for reason, count in reasons.items():
        summary.quarantined[reason] = summary.quarantined.get(reason, 0) + count

    quarantine = quarantine.set_column(0, s.SOURCE, names.take(quarantine.column(SOURCE_INDEX)))
    manifest = commit(store, manifest, events, quarantine, records, key_version=KEY_VERSION)
    summary.commits += 1
    cache.add(events.column(s.EVENT_KEY).combine_chunks(), months)
    return manifest


def _new_events(
    events: pa.Table, cache: _KeyCache, manifest: Manifest
) -> tuple[np.ndarray, pa.Array]:
    """Which events are new: not in the store (the months they touch), not earlier in the batch;
    and each event's month."""
    key = events.column(s.EVENT_KEY).combine_chunks()
    months = month_of(events.column(s.TS))
    in_store = pc.is_in(key, value_set=cache.keys(manifest, sorted(pc.unique(months).to_pylist())))
    first = pc.equal(pc.index_in(key, value_set=key), pa.array(np.arange(len(key))))
    return pc.and_(pc.invert(in_store), first).to_numpy(zero_copy_only=False), months


def reprocess_quarantine(
    store: str | os.PathLike[str],
    settings: IngestSettings | None = None,
    *,
    now: datetime | None = None,
) -> IngestSummary:
    """Run every quarantined row that has not had its retry through today's rules, once.

    Rows that pass are stored (a copy of a stored event is dropped as a duplicate) and leave the
    quarantine; rows that fail again are quarantined anew with today's reason and are not
    retried by a later call, so a second call does nothing. A row is re-read from its raw text
    with its file's CSV header (from the quarantine, else the file's first line); rows that
    cannot be re-read so (bytes that were not UTF-8, a CSV row whose header is unknown) keep
    their reason. Bad files (line 0) are not rows and stay as they are.
    """
    rules = Rules.of(settings, now)
    store = Path(store)
    summary = IngestSummary(store=str(store))
    if not (store / MANIFEST).exists():
        raise IngestError(f"{store}: no event store here (no {MANIFEST}); nothing to reprocess")
    with writer_lock(store):
        manifest = read_manifest(store)
        summary.orphans_removed = remove_orphans(store, manifest)
        retired, done = manifest.retired(), manifest.reprocessed_files()
        tried: dict[str, list[int]] = {}
        groups: dict[tuple[str, str | None], list[dict]] = {}
        for rel in manifest.quarantine_files():
            if rel in done:
                continue
            for i, row in enumerate(quarantine_file(store, rel).to_pylist()):
                if row[s.LINE] == BAD_FILE_LINE or i in retired.get(rel, ()):
                    continue
                tried.setdefault(rel, []).append(i)
                groups.setdefault((row[s.SOURCE], _header_of(row)), []).append(row)
        quarantined = load_quarantine(store)[s.LINE]
        summary.already_retried = int((quarantined != BAD_FILE_LINE).sum()) - sum(
            len(rows) for rows in tried.values()
        )
        if not tried:
            return summary
        reads = [
            _Read(Path(name), 0, "", source=_reread(name, header, rows))
            for (name, header), rows in groups.items()
        ]
        summary.files = len(reads)
        names = pa.array([str(r.path) for r in reads], pa.string())
        result = rules.normalise(_batch_rows(reads))
        events = result.events
        keep, months = _new_events(events, _KeyCache(store), manifest)
        events = events.filter(pa.array(keep))
        events = events.set_column(
            events.schema.get_field_index(s.SOURCE), s.SOURCE, names.take(events.column(s.SOURCE))
        )
        quarantine = _quarantine(reads, result.rejected)
        quarantine = quarantine.set_column(0, s.SOURCE, names.take(quarantine.column(SOURCE_INDEX)))
        summary.rows_read = sum(len(rows) for rows in groups.values())
        summary.rows_stored = events.num_rows
        summary.duplicates = int((~keep).sum())
        summary.quarantined = dict(sorted(Counter(quarantine.column(s.REASON).to_pylist()).items()))
        commit(
            store,
            manifest,
            events,
            quarantine,
            [],
            key_version=KEY_VERSION,
            retired=tried,
            reprocessed=True,
        )
        summary.commits = 1
    return summary


def _header_of(row: dict) -> str | None:
    """The CSV header of a quarantined row: recorded with it, else its file's first line (if
    the file is still there and is not a callback log); None for callbacks."""
    if row[HEADER] is not None:
        return row[HEADER]
    path = Path(row[s.SOURCE])
    if path.name.lower().removesuffix(".gz").endswith(_CALLBACK_SUFFIXES):
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
        if data[:2] == b"\x1f\x8b":
            data = zlib.decompressobj(31).decompress(data)
        first = data.removeprefix(b"\xef\xbb\xbf").split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    except (OSError, UnicodeDecodeError, zlib.error):
        return _UNKNOWN_HEADER
    return first if not _is_callback_log(str(path), first) else None


#: A CSV row whose header cannot be found: it keeps its reason.
_UNKNOWN_HEADER: Final = "\x00unknown"
#: Reasons whose raw text is not a whole record as sent (escaped bytes, a line cut off by a
#: broken gzip stream): re-reading it could store a mangled row, so they keep their reason.
_NOT_REREAD: Final = frozenset({"wrong_encoding", "truncated_gzip", "corrupt_gzip"})


def _reread(name: str, header: str | None, rows: list[dict]) -> Source:
    """A source of the quarantined ``rows`` of one file, read again from their raw text with
    their original line numbers; rows that cannot be re-read keep their reason."""
    stays = [r[s.REASON] in _NOT_REREAD or header == _UNKNOWN_HEADER for r in rows]
    kept = [r for r, stay in zip(rows, stays, strict=True) if stay]
    again = [r for r, stay in zip(rows, stays, strict=True) if not stay]
    lines = [] if header is None else [header]
    original = [0] * len(lines)  # line in the re-read text (0-based) -> original line
    for row in again:
        raw_lines = row[s.RAW].split("\n")
        original += [row[s.LINE] + k for k in range(len(raw_lines))]
        lines += raw_lines
    rejected = [(r[s.LINE], r[s.REASON], r[s.DETAIL] or "", r[s.RAW]) for r in kept]
    try:
        source = read_source(name, ("\n".join(lines) + "\n").encode()) if again else None
    except BadFile as exc:
        source = None
        rejected += [(r[s.LINE], exc.reason, exc.detail, r[s.RAW]) for r in again]
    if source is None:
        empty = Source(name, pa.table({s.LINE: pa.array([], pa.int64())}), sorted(rejected))
        empty.header = None if header in (None, _UNKNOWN_HEADER) else header
        return empty
    at = np.array([0, *original, 0], np.int64)  # 1-based, and the line after the last
    source.rows = source.rows.set_column(
        source.rows.schema.get_field_index(s.LINE),
        s.LINE,
        pa.array(at[source.rows.column(s.LINE).to_numpy()]),
    )
    source.rejected = sorted(
        [(int(at[line]), reason, detail, raw) for line, reason, detail, raw in source.rejected]
        + rejected
    )
    source.raws = {row[s.LINE]: row[s.RAW] for row in again}
    return source


def _batch_rows(reads: list[_Read]) -> pa.Table:
    """The text rows of every readable file, tagged with the file's position in the batch."""
    tables = [
        r.source.rows.append_column(
            SOURCE_INDEX, pa.array(np.full(r.source.rows.num_rows, i, np.int32))
        )
        for i, r in enumerate(reads)
        if r.source is not None and r.source.rows.num_rows
    ]
    if not tables:
        return pa.table({s.LINE: pa.array([], pa.int64()), SOURCE_INDEX: pa.array([], pa.int32())})
    return pa.concat_tables(tables, promote_options="permissive")


def _quarantine(reads: list[_Read], rejected: pa.Table) -> pa.Table:
    """Rows refused by validation or while reading, and bad files (line 0), with raw text and
    the CSV header (so a quarantined row can be read again on its own)."""
    at = rejected.column(SOURCE_INDEX).to_pylist()
    lines = rejected.column(s.LINE).to_pylist()
    columns: dict[str, list] = {
        SOURCE_INDEX: at,
        s.LINE: lines,
        s.REASON: rejected.column(s.REASON).to_pylist(),
        s.RAW: [reads[i].source.raw_line(n) for i, n in zip(at, lines, strict=True)],
        s.DETAIL: rejected.column(s.DETAIL).to_pylist(),
        HEADER: [reads[i].source.header for i in at],
    }
    for i, read in enumerate(reads):
        found = list(read.source.rejected) if read.source else []
        fault = read.bad or (read.source.damage if read.source else None)
        if fault:
            found.insert(0, (BAD_FILE_LINE, fault.reason, fault.detail, ""))
        header = read.source.header if read.source else None
        for line, reason, detail, raw in found:
            for name, value in zip(
                (SOURCE_INDEX, s.LINE, s.REASON, s.DETAIL, s.RAW, HEADER),
                (i, line, reason, detail, raw, header),
                strict=True,
            ):
                columns[name].append(value)
    types = {SOURCE_INDEX: pa.int64(), s.LINE: pa.int64()}
    return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in columns.items()})


def _source_record(read: _Read, stored: int, duplicates: int, quarantined: int) -> dict:
    """The manifest entry of one source file."""
    rows_read = read.source.rows.num_rows + len(read.source.rejected) if read.source else 0
    fault = read.bad or (read.source.damage if read.source else None)
    if read.bad:
        status = "bad"
    elif fault:
        status = "partial"
    else:
        status = "header_only" if read.source.header_only else "ok"
    return {
        "path": str(read.path),
        "size": read.size,
        "sha256": read.sha256 or f"unreadable:{read.path}",
        "rows_read": rows_read,
        "rows_stored": int(stored),
        "rows_duplicate": int(duplicates),
        "rows_quarantined": int(quarantined),
        "status": status,
        **({"reason": fault.reason, "detail": fault.detail} if fault else {}),
        **({"notes": list(read.source.notes)} if read.source and read.source.notes else {}),
    }
