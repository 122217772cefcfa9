"""Benchmark: ingest the generator's Adjust export, against pyarrow merely reading the same files.

    make bench                                   # generates 100,000 users, 120 days, then ingests
    python benchmarks/ingest.py --users 20000
    python benchmarks/ingest.py DIR              # reuse a generator output (DIR/raw/*.csv.gz)

Ingest runs in a child process (its own peak memory) into a fresh store. The reference, run the
same way in the same run, reads every file with ``pyarrow.csv.read_csv`` (gunzip, parse, type
inference, skipping malformed rows) and does nothing else: no validation, no deduplication,
no writing. Target: ingest
within 3x of the reference's time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

TARGET_RATIO = 3.0
# benchmarks/features.py would shadow the features package: import from the repository root
sys.path[0] = str(Path(__file__).resolve().parents[1])


def run_ingest(raw: Path, store: Path) -> dict:
    from features.ingest import ingest

    started = time.perf_counter()
    summary = ingest([raw], store)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": summary.rows_read,
        "stored": summary.rows_stored,
        "duplicates": summary.duplicates,
        "quarantined": summary.rows_quarantined,
        "files": summary.files,
        "commits": summary.commits,
    }


def run_reference(raw: Path) -> dict:
    import pyarrow.csv as pacsv

    skip = pacsv.ParseOptions(invalid_row_handler=lambda row: "skip")  # the truncated rows
    started = time.perf_counter()
    rows = files = 0
    for path in sorted(raw.glob("*.csv.gz")):
        rows += pacsv.read_csv(path, parse_options=skip).num_rows
        files += 1
    return {"seconds": time.perf_counter() - started, "rows": rows, "files": files}


def child(kind: str, raw: Path, store: Path) -> None:
    result = run_ingest(raw, store) if kind == "ingest" else run_reference(raw)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _in_child(kind: str, raw: Path, store: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(raw), "--store", str(store)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"{kind} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _generate(users: int, days: int, out: Path) -> None:
    code = (
        "from datetime import date; from pathlib import Path;"
        "from features.synthetic import SyntheticConfig, generate;"
        f"generate(SyntheticConfig(users={users}, seed=7, start=date(2026, 1, 5), days={days}),"
        f" Path({str(out)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, help="existing generator output folder")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.store)
        return
    with tempfile.TemporaryDirectory(prefix="lapse-bench-ingest-") as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "gen"
            print(f"generating {args.users:,} users x {args.days} days ...", flush=True)
            _generate(args.users, args.days, data)
        raw = data / "raw"
        ref = _in_child("reference", raw, Path(tmp) / "unused")
        ours = _in_child("ingest", raw, Path(tmp) / "store")
    rate, ref_rate = ours["rows"] / ours["seconds"], ref["rows"] / ref["seconds"]
    ratio = ours["seconds"] / ref["seconds"]
    print(f"data                   {data} ({date.today()})")
    print(f"files / rows           {ours['files']:,} / {ours['rows']:,}")
    print(
        f"ingest                 {ours['seconds']:.1f} s ({rate:,.0f} rows/s), "
        f"peak {ours['peak_mb']:,.0f} MB; stored {ours['stored']:,}, "
        f"duplicates {ours['duplicates']:,}, quarantined {ours['quarantined']:,}, "
        f"{ours['commits']} commits"
    )
    print(
        f"reference (pyarrow.csv.read_csv, no validation)  {ref['seconds']:.1f} s "
        f"({ref_rate:,.0f} rows/s), peak {ref['peak_mb']:,.0f} MB"
    )
    print(f"ratio ingest / reference                        {ratio:.2f}x")
    print(
        f"target                 <= {TARGET_RATIO:.0f}x -> "
        f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
