"""Benchmark: synthetic Adjust export for N users, against the cost of merely writing its bytes.

    make bench                      # 100,000 users, 120 days
    python benchmarks/generate.py --users 20000

The generator runs in a child process (its own peak memory). The reference, measured in the same
run, writes the very same CSV bytes with the same gzip level: the floor for any generator of this
output. Target: 100,000 users in under 60 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import date
from pathlib import Path

TARGET_SECONDS_PER_100K = 60.0


def child(users: int, days: int, out: Path) -> None:
    from features.synthetic import SyntheticConfig, generate
    from features.synthetic.adjust_files import GZIP_LEVEL

    started = time.perf_counter()
    summary = generate(SyntheticConfig(users=users, seed=7, start=date(2026, 1, 5), days=days), out)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_mb,
                "rows": summary.rows,
                "files": summary.files,
                "gzip_level": GZIP_LEVEL,
            }
        )
    )


def reference(raw: Path, level: int, scratch: Path) -> float:
    """Seconds to gzip and write the export's own CSV bytes (read beforehand, untimed)."""
    payloads = [(p.name, zlib.decompress(p.read_bytes(), 31)) for p in sorted(raw.glob("*.csv.gz"))]
    scratch.mkdir()
    started = time.perf_counter()
    for name, data in payloads:
        packer = zlib.compressobj(level, zlib.DEFLATED, 31)
        (scratch / name).write_bytes(packer.compress(data) + packer.flush())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.users, args.days, args.child)
        return
    with tempfile.TemporaryDirectory(prefix="lapse-bench-") as tmp:
        out = Path(tmp) / "gen"
        result = subprocess.run(
            [
                sys.executable,
                __file__,
                "--users",
                str(args.users),
                "--days",
                str(args.days),
                "--child",
                str(out),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        gen = json.loads(result.stdout.strip().splitlines()[-1])
        ref = reference(out / "raw", gen["gzip_level"], Path(tmp) / "ref")
    target = TARGET_SECONDS_PER_100K * args.users / 100_000
    print(f"users                 {args.users:,} over {args.days} days")
    print(f"rows / files          {gen['rows']:,} / {gen['files']:,}")
    rate, peak = gen["rows"] / gen["seconds"], gen["peak_mb"]
    print(f"generator             {gen['seconds']:.1f} s ({rate:,.0f} rows/s), peak {peak:,.0f} MB")
    print(f"reference (gzip+write the same bytes)  {ref:.1f} s")
    print(f"ratio generator / reference            {gen['seconds'] / ref:.2f}x")
    print(
        f"target                {target:.0f} s -> {'met' if gen['seconds'] < target else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
