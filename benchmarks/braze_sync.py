"""Benchmark: Braze sync data points vs a naive daily push, and throughput vs Braze's rate limit.

    make bench                                  # 100,000 users, 30 daily rescorings
    python benchmarks/braze_sync.py --users 20000 --days 10

1. Data points. The synthetic generator writes the true churn probability of every active
   subscriber at 30 successive daily cut-offs (its oracle: scores drift as subscriptions renew,
   fail, get cancelled...). Each day's scores go through `serving.sync.sync` into the emulator,
   which bills data points as Braze does. Reference, same run: a naive daily full push of every
   scored user's bucket (one data point per user per day). Target: Lapse <= 15% of naive.
2. Throughput. `lapse braze-emulator --rate-limit 3000/3s` (Braze's documented limit, 1,000
   requests/s) in its own process; Lapse syncs users who are all new, so every batch is full, with
   braze.max_rps = 1000. Reported: requests/s and objects per request against that limit (target:
   >= 90%), next to the machine's own ceiling: an unpaced loop of the same full-batch POSTs.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/features.py would hide the
# `features` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.schema import AS_OF, CHURN_PROBABILITY, PLATFORM, USER_ID  # noqa: E402
from features.synthetic import SyntheticConfig, generate  # noqa: E402
from features.synthetic.generator import OBSERVABLE  # noqa: E402
from serving.emulator import Emulator, EmulatorConfig  # noqa: E402
from serving.settings import BrazeSettings, LedgerSettings  # noqa: E402
from serving.sync import SyncConfig, sync  # noqa: E402
from training.buckets import BucketPolicy  # noqa: E402

KEY = "bench-key"
DOCUMENTED_LIMIT = (3000, 3.0)  # requests per window (spec §3)
FIRST_CUTOFF_DAY = 28
TARGET_SHARE = 0.15
TARGET_RATE = 0.90


def _config(url: str, ledger: str, hysteresis: float, concurrency: int = 1) -> SyncConfig:
    """Lapse's default bucket policy (lapse.toml), with the given hysteresis; max_rps 1000."""
    policy = BucketPolicy.of("probability", {"high": 0.5, "medium": 0.2}, "low", hysteresis)
    braze = BrazeSettings(url=url, max_rps=1000.0, concurrency=concurrency)
    return SyncConfig(braze, LedgerSettings(url=ledger), policy)


# --- 1. data points ------------------------------------------------------------------------------


def daily_scores(users: int, days: int, folder: Path) -> list[pd.DataFrame]:
    """The generator's true churn probabilities at daily cut-offs, observable subscribers only."""
    start = date(2026, 1, 5)
    cutoffs = tuple(start + timedelta(FIRST_CUTOFF_DAY + d) for d in range(days))
    config = SyntheticConfig(
        users=users, seed=7, start=start, days=FIRST_CUTOFF_DAY + days + 1, cutoffs=cutoffs
    )
    generate(config, folder, overwrite=True)
    truth = pd.read_parquet(
        folder / "truth" / "churn_truth.parquet",
        columns=[USER_ID, PLATFORM, AS_OF, CHURN_PROBABILITY, OBSERVABLE],
    )
    truth = truth[truth[OBSERVABLE]]
    return [frame.drop(columns=[AS_OF, OBSERVABLE]) for _, frame in truth.groupby(AS_OF)]


def data_points(days: list[pd.DataFrame], hysteresis: float, scratch: Path) -> dict[str, float]:
    """Run every day through the sync into a fresh emulator; Braze's bill vs the naive push."""
    everyone = sorted(set().union(*(set(d[USER_ID]) for d in days)))
    ledger = scratch / f"ledger-{hysteresis}.db"
    with Emulator(EmulatorConfig(api_keys=frozenset({KEY}))) as emu:
        emu.add_profiles(everyone)
        config = _config(emu.url, f"sqlite:///{ledger}", hysteresis)
        naive, sent, first_day = 0, [], 0
        for day, frame in enumerate(days):
            before = emu.stats()["data_points"]
            report = sync(frame, config, KEY)
            billed = emu.stats()["data_points"] - before
            first_day = billed if day == 0 else first_day
            sent.append(report.changed)
            naive += frame[USER_ID].nunique()
        lapse = emu.stats()["data_points"]
        noop = emu.stats()["noop_writes"]
    return {
        "lapse": lapse,
        "naive": naive,
        "first_day": first_day,
        "median_changed": float(np.median(sent[1:])) if len(sent) > 1 else 0.0,
        "median_scored": float(np.median([d[USER_ID].nunique() for d in days])),
        "noop": noop,
    }


# --- 2. throughput -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_emulator(rate_limit: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lapse.cli import main; main()",
            "braze-emulator",
            "--port",
            str(port),
            "--rate-limit",
            rate_limit,
        ],
        env={**os.environ, "BRAZE_API_KEY": KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/_emulator/stats", timeout=1).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the emulator did not start") from None
            time.sleep(0.1)


def _batch(start: int, size: int = 75) -> list[dict[str, object]]:
    ids = range(start, start + size)
    return [
        {"external_id": f"t{i}", "_update_existing_only": True, "churn_risk": "low"} for i in ids
    ]


def ceiling(requests: int) -> float:
    """Requests/s of an unpaced loop of full-batch POSTs to an emulator with no rate limit."""
    proc, url = _start_emulator("1000000000/1s")
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            bodies = [{"attributes": _batch(i * 75)} for i in range(requests)]
            started = time.perf_counter()
            for body in bodies:
                http.post("/users/track", json=body).raise_for_status()
            return requests / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait()


def throughput(
    batches: int, concurrency: int, limit: tuple[int, float], scratch: Path, max_rps: float = 0
) -> dict[str, float]:
    """Lapse's sync of batches x 75 new users against an emulator (own process) at `limit`,
    with braze.max_rps set to that limit's average rate (or to `max_rps`)."""
    count, window = limit
    proc, url = _start_emulator(f"{count}/{window:g}s")
    try:
        users = [f"t{i:07d}" for i in range(batches * 75)]
        frame = pd.DataFrame({USER_ID: users, CHURN_PROBABILITY: 0.1})
        ledger = scratch / f"throughput-{concurrency}-{count}.db"
        config = _config(url, f"sqlite:///{ledger}", 0.03, concurrency)
        rate = max_rps or count / window
        config = replace(config, client=replace(config.client, max_rps=rate))
        report = sync(frame, config, KEY)
        log = httpx.get(f"{url}/_emulator/log", timeout=30).json()
        stats = httpx.get(f"{url}/_emulator/stats", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait()
    times = [t for t, _ in log]
    return {
        "requests": report.requests,
        "rps": (len(times) - 1) / (times[-1] - times[0]),
        "objects_per_request": stats["objects_accepted"] / stats["track_requests"],
        "rate_limited": report.rate_limited,
        "sync_seconds": report.seconds,
    }


def _print_throughput(label: str, t: dict[str, float], allowed: float, top: float) -> None:
    share = t["rps"] / allowed * t["objects_per_request"] / 75
    print(
        f"   {label:<44} {t['rps']:6,.0f} req/s x {t['objects_per_request']:.1f} objects "
        f"= {share:6.1%} of the limit ({t['rps'] / top:.0%} of the ceiling; "
        f"429s {t['rate_limited']:.0f}; {t['requests']:,.0f} requests)   "
        f"target >= {TARGET_RATE:.0%}: {'met' if share >= TARGET_RATE else 'MISSED'}"
    )


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines as they come, also into a file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--batches", type=int, default=2000, help="throughput run: full batches")
    parser.add_argument("--part", choices=["all", "data-points", "throughput"], default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lapse-bench-sync-") as tmp:
        scratch = Path(tmp)
        if args.part != "throughput":
            measure_data_points(args.users, args.days, scratch)
        if args.part != "data-points":
            measure_throughput(args.batches, scratch)


def measure_data_points(users: int, n_days: int, scratch: Path) -> None:
    started = time.perf_counter()
    days = daily_scores(users, n_days, scratch / "gen")
    seconds = time.perf_counter() - started
    print(f"generated {users:,} users, {len(days)} daily cut-offs in {seconds:.0f} s")
    print("\n1. Data points over the daily rescorings (emulator's bill)")
    for hysteresis in (0.03, 0.0):
        r = data_points(days, hysteresis, scratch)
        share = r["lapse"] / r["naive"]
        verdict = "met" if share <= TARGET_SHARE else "MISSED"
        print(
            f"   hysteresis {hysteresis:<4}  lapse {r['lapse']:>10,.0f}   naive daily push "
            f"{r['naive']:>10,.0f}   ratio {share:6.1%}   (first day {r['first_day']:,.0f}; "
            f"then median {r['median_changed']:,.0f} of {r['median_scored']:,.0f} users/day; "
            f"no-op writes {r['noop']:,.0f})   target <= {TARGET_SHARE:.0%}: "
            f"{verdict if hysteresis else 'reference'}"
        )


def measure_throughput(batches: int, scratch: Path) -> None:
    limit, window = DOCUMENTED_LIMIT
    allowed = limit / window
    print(
        f"\n2. Throughput against the documented limit ({limit:,} per {window:g} s "
        f"= {allowed:,.0f} requests/s, 75 objects each)"
    )
    top = ceiling(min(batches, 2000))
    print(
        f"   {'machine ceiling (unpaced POST loop, no limit)':<44} {top:6,.0f} req/s"
        f"           = {top / allowed:6.1%} of the limit"
    )
    for concurrency in (1, 4):
        t = throughput(batches, concurrency, DOCUMENTED_LIMIT, scratch)
        _print_throughput(f"lapse sync, {concurrency} batch(es) in flight", t, allowed, top)
    # The limiter itself, at a limit this machine can carry: half of Lapse's own unthrottled
    # rate, measured here against an emulator without a limit.
    free = throughput(batches // 2, 1, (10**9, 1.0), scratch, max_rps=1e9)
    print(f"   {'lapse sync, no limit at all (1 in flight)':<44} {free['rps']:6,.0f} req/s")
    carry = max(int(free["rps"] / 2), 1)
    t = throughput(batches // 2, 1, (3 * carry, 3.0), scratch)
    _print_throughput(f"lapse sync at {3 * carry:,}/3 s (= {carry} req/s)", t, carry, top)


if __name__ == "__main__":
    main()
