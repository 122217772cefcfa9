"""Benchmark: partitioned reads of a store with many commits a month, before and after
``features.ingest.store.compact``; and the compaction's own time and peak memory.

    python benchmarks/compaction.py --base DIR --copies 20     # DIR: an ingested store

The store is ``--copies`` copies of the base store's subscribers, each committed as its own
commit a month (``scale.py``'s copies: ``--copies`` files a month, as daily ingests leave them).
The read is ``read_events_table`` of every ``--every``-th partition of ``--partitions`` (the
streaming rescore's split) with the columns features read, best of two passes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

# run as a script, this file's folder comes first on sys.path and its name would hide packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def _reads(store: Path, partitions: int, every: int) -> tuple[float, int]:
    """Best of two passes over the chosen partitions: seconds, and rows read."""
    from features import schema as s
    from features.ingest.store import read_events_table

    columns = [s.USER_ID, s.PLATFORM, s.TS, s.KIND, s.EVENT, s.PRICE]
    best, rows = float("inf"), 0
    for _ in range(2):
        started, rows = time.perf_counter(), 0
        for i in range(0, partitions, every):
            table = read_events_table(
                store, end="2026-04-06", columns=columns, partition=(i, partitions)
            )
            rows += table.num_rows
        best = min(best, time.perf_counter() - started)
    return best, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="An ingested store.")
    parser.add_argument("--copies", type=int, default=20, help="Commits (files) a month.")
    parser.add_argument("--partitions", type=int, default=60)
    parser.add_argument("--every", type=int, default=6, help="Read every n-th partition.")
    parser.add_argument("--work", type=Path, help="Folder for the copies (default: a temp dir).")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))  # scale.py's copies, alone
    import scale

    sys.path.pop(0)
    from features.ingest.store import compact, event_rows, read_manifest

    work = args.work or Path(tempfile.mkdtemp(prefix="lapse-bench-compaction-"))
    copies = scale._copies(args.base, work / "copies", args.copies, [], 2)
    store, compacted = work / f"x{args.copies}", work / f"x{args.copies}-compacted"
    scale._merged(store, args.copies, copies)
    scale._merged(compacted, args.copies, copies)
    files = len(read_manifest(store).event_files())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    done = compact(compacted)  # first: the process's peak is the compaction's
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    before, rows = _reads(store, args.partitions, args.every)
    after, rows_after = _reads(compacted, args.partitions, args.every)
    assert rows == rows_after, (rows, rows_after)
    print(f"store: {event_rows(store):,} rows, {files} files, compacted {done.files_after}")
    print(
        f"compaction: {len(done.months)} months, {done.rows:,} rows in {done.seconds:.1f} s, "
        f"peak RSS {peak:.2f} GiB (before it {rss:.2f} GiB)"
    )
    n = len(range(0, args.partitions, args.every))
    print(
        f"read of {n} partitions of {args.partitions} ({rows:,} rows): {before:.2f} s before, "
        f"{after:.2f} s after (after / before {after / before:.3f})"
    )


if __name__ == "__main__":
    main()
