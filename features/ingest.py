"""Ingest Adjust exports into the event store: read, normalise, deduplicate, quarantine, commit.

``ingest(sources, store)`` takes files and folders (raw-export CSV, plain or gzip, and callback
logs), skips files whose content the store already holds, and commits the rest in batches: each
commit publishes whole files only, so a crash loses at most the batch in flight and a re-run
picks up from there. An event already stored (same event key) is dropped as a duplicate.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import schema as s
from features.adjust import (
    BAD_FILE_LINE,
    SOURCE_INDEX,
    BadFile,
    Source,
    normalise,
    read_source,
)
from features.store import (
    Manifest,
    commit,
    month_of,
    read_manifest,
    remove_orphans,
    stored_keys,
    writer_lock,
)

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


class IngestError(ValueError):
    """Ingest cannot start: a source path that does not exist, or nothing to read."""


@dataclass
class IngestSummary:
    """What one ingest run did; ``bad_files`` maps each unreadable file to its reason."""

    store: str
    files: int = 0
    files_skipped: int = 0  # already in the store
    files_repeated: int = 0  # same bytes as another file of this run (e.g. header-only parts)
    header_only_files: int = 0
    rows_read: int = 0
    rows_stored: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    bad_files: dict[str, str] = field(default_factory=dict)
    commits: int = 0
    orphans_removed: int = 0

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())


def find_sources(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named, and files with a known suffix under folders (sorted); a missing path raises."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and p.name.lower().endswith(SOURCE_SUFFIXES)
            )
        elif path.exists():
            found.append(path)
        else:
            raise IngestError(f"{path}: no such file or folder to ingest")
    unique = list(dict.fromkeys(p.absolute() for p in found))
    return unique


@dataclass
class _Read:
    """One file's bytes, digest and parse (or why it could not be parsed)."""

    path: Path
    size: int
    sha256: str
    source: Source | None = None
    bad: BadFile | None = None


def _read(path: Path) -> _Read:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _Read(path, 0, "", bad=BadFile("unreadable_file", exc.strerror or str(exc)))
    result = _Read(path, len(data), hashlib.sha256(data).hexdigest())
    try:
        result.source = read_source(str(path), data)
    except BadFile as exc:
        result.bad = exc
    return result


@dataclass
class _Batch:
    reads: list[_Read] = field(default_factory=list)
    rows: int = 0


def ingest(
    sources: Sequence[str | os.PathLike[str]],
    store: str | os.PathLike[str],
    *,
    user_id_column: str = s.DEFAULT_USER_ID_PARAM,
    keep_unknown_columns: bool = True,
    progress: Progress | None = None,
) -> IngestSummary:
    """Add the given files and folders to the event store at ``store``; see the module doc."""
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
            for done, read in enumerate(_read_ahead(pool, paths), start=1):
                if read.sha256 and read.sha256 in seen:  # same bytes as a file earlier in this run
                    summary.files_repeated += 1
                    summary.header_only_files += bool(read.source and read.source.header_only)
                elif read.sha256 in manifest.sources:
                    summary.files_skipped += 1
                else:
                    seen.add(read.sha256)
                    batch.reads.append(read)
                    batch.rows += read.source.rows.num_rows if read.source else 0
                if batch.rows >= BATCH_ROWS or len(batch.reads) >= BATCH_FILES:
                    manifest = _flush(
                        store, manifest, batch, keys, summary, user_id_column, keep_unknown_columns
                    )
                    batch = _Batch()
                report("files", done, len(paths))
                report("rows", summary.rows_stored, summary.rows_read + batch.rows)
        if batch.reads:
            manifest = _flush(
                store, manifest, batch, keys, summary, user_id_column, keep_unknown_columns
            )
        report("rows", summary.rows_stored, summary.rows_read)
    summary.quarantined = dict(sorted(summary.quarantined.items()))
    return summary


def _read_ahead(pool: ThreadPoolExecutor, paths: Sequence[Path]) -> Iterator[_Read]:
    """``_read`` each path on the pool, in order, with at most READ_AHEAD files in memory."""
    pending: deque[Future[_Read]] = deque()
    for path in paths:
        pending.append(pool.submit(_read, path))
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
                self.months[month] = stored_keys(self.store, manifest, [month])
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
    user_id_column: str,
    keep_unknown: bool,
) -> Manifest:
    """Normalise, deduplicate and commit one batch of files."""
    reads = batch.reads
    names = [str(r.path) for r in reads]
    tables = [
        r.source.rows.append_column(
            SOURCE_INDEX, pa.array(np.full(r.source.rows.num_rows, i, np.int32))
        )
        for i, r in enumerate(reads)
        if r.source is not None and r.source.rows.num_rows
    ]
    n_files = len(reads)
    if tables:
        rows = pa.concat_tables(tables, promote_options="permissive")
        result = normalise(rows, user_id_column=user_id_column, keep_unknown=keep_unknown)
        events, rejected = result.events, result.rejected
    else:
        events = normalise(
            pa.table({s.LINE: pa.array([], pa.int64()), SOURCE_INDEX: pa.array([], pa.int32())}),
            user_id_column=user_id_column,
            keep_unknown=keep_unknown,
        ).events
        rejected = None

    # deduplicate: against the store (months this batch touches) and within the batch
    key = events.column(s.EVENT_KEY).combine_chunks()
    months = month_of(events.column(s.TS))
    touched = sorted(pc.unique(months).to_pylist())
    in_store = pc.is_in(key, value_set=cache.keys(manifest, touched))
    first = pc.equal(pc.index_in(key, value_set=key), pa.array(np.arange(len(key))))
    keep = pc.and_(pc.invert(in_store), first)
    dropped = pc.invert(keep)
    src_of_event = events.column(s.SOURCE).combine_chunks().to_numpy()
    stored_per = np.bincount(src_of_event[keep.to_numpy(zero_copy_only=False)], minlength=n_files)
    dup_per = np.bincount(src_of_event[dropped.to_numpy(zero_copy_only=False)], minlength=n_files)
    events = events.filter(keep)
    months = months.filter(keep)

    # quarantine: rows refused while reading, rows refused by validation, bad files
    q_source, q_line, q_reason, q_detail, q_raw = [], [], [], [], []
    if rejected is not None and rejected.num_rows:
        src_idx = rejected.column(SOURCE_INDEX).to_pylist()
        lines = rejected.column(s.LINE).to_pylist()
        q_source += src_idx
        q_line += lines
        q_reason += rejected.column(s.REASON).to_pylist()
        q_detail += rejected.column(s.DETAIL).to_pylist()
        q_raw += [reads[i].source.raw_line(line) for i, line in zip(src_idx, lines, strict=True)]
    for i, read in enumerate(reads):
        if read.source is not None:
            for line, reason, detail, raw in read.source.rejected:
                q_source.append(i)
                q_line.append(line)
                q_reason.append(reason)
                q_detail.append(detail)
                q_raw.append(raw)
        elif read.bad is not None:
            q_source.append(i)
            q_line.append(BAD_FILE_LINE)
            q_reason.append(read.bad.reason)
            q_detail.append(read.bad.detail)
            q_raw.append("")
    q_per = np.bincount(np.array(q_source, np.int64), minlength=n_files)
    quarantine = pa.table(
        {
            s.SOURCE: pa.array(names, pa.string()).take(pa.array(q_source, pa.int64())),
            s.LINE: pa.array(q_line, pa.int64()),
            s.REASON: pa.array(q_reason, pa.string()),
            s.RAW: pa.array(q_raw, pa.string()),
            s.DETAIL: pa.array(q_detail, pa.string()),
        }
    )
    events = events.set_column(
        events.schema.get_field_index(s.SOURCE),
        s.SOURCE,
        pa.array(names, pa.string()).take(events.column(s.SOURCE)),
    )

    records = []
    for i, read in enumerate(reads):
        rows_read = 0
        if read.source is not None:
            rows_read = read.source.rows.num_rows + len(read.source.rejected)
        status = "bad" if read.bad else ("header_only" if read.source.header_only else "ok")
        records.append(
            {
                "path": str(read.path),
                "size": read.size,
                "sha256": read.sha256 or f"unreadable:{read.path}",
                "rows_read": rows_read,
                "rows_stored": int(stored_per[i]),
                "rows_duplicate": int(dup_per[i]),
                "rows_quarantined": int(q_per[i]) if not read.bad else 0,
                "status": status,
                **({"reason": read.bad.reason, "detail": read.bad.detail} if read.bad else {}),
            }
        )
        summary.rows_read += rows_read
        summary.header_only_files += status == "header_only"
        if read.bad:
            summary.bad_files[str(read.path)] = read.bad.reason
    summary.rows_stored += events.num_rows
    summary.duplicates += int(dup_per.sum())
    row_reasons = Counter(
        r for r, line in zip(q_reason, q_line, strict=True) if line != BAD_FILE_LINE
    )
    for reason, count in row_reasons.items():
        summary.quarantined[reason] = summary.quarantined.get(reason, 0) + count

    manifest = commit(store, manifest, events, quarantine, records)
    summary.commits += 1
    cache.add(events.column(s.EVENT_KEY).combine_chunks(), months)
    return manifest
