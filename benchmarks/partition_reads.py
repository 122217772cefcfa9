"""Benchmark: one partition's read of an event store, as a rescore reads it partition after
partition, against the same read through a fresh Arrow dataset (what each partition did before
footers were kept per process and row groups cut by their bucket statistics).

    python benchmarks/partition_reads.py --store DIR --partitions 60    # DIR: an event store

The scale benchmark's stores (``scale.py --work W``: ``W/stores/x10`` is 1M subscribers) are the
usual input. Both reads take the columns features read, events before ``--end``, partition ``i``
of ``--partitions`` for the first ``--reads`` partitions, in one process: the median is printed,
with the store's row groups (the fixed cost of the old read grows with them, so with the size
of the store, once per partition). Both must return the same rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# run as a script, this file's folder comes first on sys.path and its name would hide packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def fresh_read(store: Path, end, columns: list[str], index: int, count: int):
    """The reference: a new dataset over the store's current files, filtered by Arrow alone."""
    import functools
    import operator

    import pyarrow as pa
    import pyarrow.dataset as ds

    from features import schema as s
    from features.ingest.partitions import bucket_range
    from features.ingest.store import BUCKET, BUCKETED_SCHEMA, read_manifest

    manifest = read_manifest(store)
    first, last = bucket_range(index, count)
    clauses = [
        ds.field(s.TS) < pa.scalar(end.to_pydatetime(), pa.timestamp("us", tz="UTC")),
        ds.field(BUCKET) >= first,
        ds.field(BUCKET) < last,
    ]
    files = [str(store / f) for f in manifest.event_files()]
    data = ds.dataset(files, schema=BUCKETED_SCHEMA, format="parquet")
    return data.to_table(columns=columns, filter=functools.reduce(operator.and_, clauses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="An event store folder.")
    parser.add_argument("--partitions", type=int, default=60)
    parser.add_argument("--reads", type=int, default=12, help="Partitions read (the first N).")
    parser.add_argument("--end", default="2026-04-06", help="Events before this day (UTC).")
    args = parser.parse_args()

    import pandas as pd
    import pyarrow.parquet as pq

    from features.ingest.store import read_events_table, read_manifest
    from features.timeline import NEEDED_COLUMNS

    end = pd.Timestamp(args.end, tz="UTC")
    columns = list(NEEDED_COLUMNS)
    files = read_manifest(args.store).event_files()
    groups = sum(pq.ParquetFile(args.store / f).metadata.num_row_groups for f in files)
    print(f"{args.store}: {len(files)} event files, {groups:,} row groups", flush=True)
    times: dict[str, list[float]] = {"fresh dataset (before)": [], "read_events_table": []}
    for index in range(min(args.reads, args.partitions)):
        started = time.perf_counter()
        reference = fresh_read(args.store, end, columns, index, args.partitions)
        times["fresh dataset (before)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        table = read_events_table(
            args.store, end=end, columns=columns, partition=(index, args.partitions)
        )
        times["read_events_table"].append(time.perf_counter() - started)
        if table.num_rows != reference.num_rows or not table.equals(reference.select(columns)):
            raise SystemExit(f"partition {index}: the two reads differ")
    before, after = (statistics.median(v) for v in times.values())
    for name, values in times.items():
        print(f"{name:<24} median {statistics.median(values):.3f} s over {len(values)} partitions")
    print(f"read_events_table / fresh dataset: {after / before:.2f}x")


if __name__ == "__main__":
    main()
