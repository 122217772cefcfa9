"""Serving speed: the real service on loopback, loaded from a second process by wrk.

    python benchmarks/serve.py [--work DIR] [--seconds S]

Trains a small model (or reuses the one in --work), starts `lapse serve` on a free port, and
drives it with Debian's `wrk` (Lua bodies): `/score` one row and `/lookup` one id at 1, 8 and 32
connections (p50, p99, requests/s); 1,000-row `/score` batches (rows/s) against the model's own
in-process `predict_proba` on the same rows (the reference, measured in this run); and
`/score_events` on one subscriber's history at 1 connection against the in-process feature build
for that subscriber. Targets (issue 14, this 2-core machine): /score single-row p99 < 25 ms at 8
clients; /lookup p99 < 10 ms at 8 clients; 1,000-row batches >= 50% of in-process rows/s;
/score_events p99 < 100 ms at 1 client.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""


def wrk(url: str, body: Path, connections: int, seconds: int) -> dict[str, float]:
    """p50 and p99 latency (ms) and requests/s of one wrk run with a POST body."""
    script = body.with_suffix(".lua")
    script.write_text(LUA.format(body=body))
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise SystemExit(f"{url}: the service refused requests:\n{out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    return {"p50_ms": ms("50%"), "p99_ms": ms("99%"), "rps": rps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Folder to keep the trained app in (reused).")
    parser.add_argument("--seconds", type=int, default=8, help="Seconds per wrk run.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    import numpy as np
    import pandas as pd

    from features import load_events
    from features import schema as s
    from features.build import build_features
    from lapse import jobs
    from lapse import serve as serving
    from lapse.settings import Settings
    from training.registry import champion_uri, load_model

    work = args.work or Path(tempfile.mkdtemp(prefix="lapse-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "lapse.toml"
    if not config.exists():
        config.write_text(
            '[store]\npath = "store"\n[synthetic]\nusers = 2000\ndays = 120\n'
            "[optuna]\nn_trials = 3\n[training]\nmin_churners = 20\nmin_non_churners = 20\n"
        )
    settings = Settings.load(config)
    if not (work / "mlflow.db").exists():
        print("training a small model ...", flush=True)
        jobs.generate(settings, settings.store.path / "synthetic", overwrite=True)
        jobs.ingest(settings, [settings.store.path / "synthetic" / "raw"])
        result = jobs.train(settings)
        if not result.gate.moved:
            from mlflow.tracking import MlflowClient

            MlflowClient().set_registered_model_alias(
                settings.mlflow.registered_model, "champion", result.gate.version
            )
    model = load_model(settings.mlflow.tracking_uri, champion_uri(settings.mlflow.registered_model))
    as_of = "2026-04-20"
    events = load_events(settings.store.path, end=as_of)
    features = build_features(events, as_of, model.feature_definition)
    flat = features.reset_index()
    records = flat.astype(object).where(flat.notna(), None).to_dict("records")
    user = records[0][s.USER_ID]

    # the reference, in process: predict_proba rows/s on 1,000-row frames, one subscriber's build
    batch = features.head(1000)
    started = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        model.predict_proba(batch[model.features_])
    in_process_rows_s = repeats * len(batch) / (time.perf_counter() - started)
    from serving.scoring import score

    started = time.perf_counter()
    for _ in range(3):
        score(model, batch)  # what /score answers: probability, bucket and reasons
    with_reasons_rows_s = 3 * len(batch) / (time.perf_counter() - started)
    mine = events[events[s.USER_ID] == user]
    build = []
    for _ in range(20):
        t0 = time.perf_counter()
        build_features(mine, as_of, model.feature_definition)
        build.append((time.perf_counter() - t0) * 1000)
    build_ms = float(np.median(build))

    # /score_events: the subscriber's stored events as Adjust callbacks, from the export files
    from features.ingest.callbacks import stored_callbacks

    callbacks = stored_callbacks(settings.store.path, [user])
    # a rescore file for /lookup
    scored = jobs.rescore(settings, pd.Timestamp(as_of).date(), dry_run=True)
    from serving.scores import write_scores

    write_scores(
        scored.result.scores,
        jobs.default_scores_path(settings, pd.Timestamp(as_of).date()),
        model.bucket_policy_,
        {"as_of": as_of, "model": "bench"},
    )

    bodies = work / "bodies"
    bodies.mkdir(exist_ok=True)
    one_row = bodies / "one_row.json"
    one_row.write_text(json.dumps({"rows": records[:1]}))
    thousand = bodies / "thousand.json"
    thousand.write_text(json.dumps({"rows": records[:1000]}))
    lookup = bodies / "lookup.json"
    lookup.write_text(json.dumps({"user_ids": [user]}))
    history = bodies / "events.json"
    history.write_text(json.dumps({"as_of": as_of, "events": callbacks}))

    server = serving.start_server(settings, "127.0.0.1", serving.free_port())
    results: dict[str, dict[str, float]] = {}
    try:
        for c in (1, 8, 32):
            results[f"/score 1 row, {c} clients"] = wrk(
                f"{server.url}/score", one_row, c, args.seconds
            )
            results[f"/lookup 1 id, {c} clients"] = wrk(
                f"{server.url}/lookup", lookup, c, args.seconds
            )
        results["/score 1,000 rows, 1 client"] = wrk(
            f"{server.url}/score", thousand, 1, args.seconds
        )
        results["/score_events 1 subscriber, 1 client"] = wrk(
            f"{server.url}/score_events", history, 1, args.seconds
        )
    finally:
        serving.stop_server(server.process)

    print(f"\n{'load':<40} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9}")
    for name, r in results.items():
        print(f"{name:<40} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:9.1f}")
    batch_rows_s = results["/score 1,000 rows, 1 client"]["rps"] * 1000
    print(f"\nin-process predict_proba (reference): {in_process_rows_s:,.0f} rows/s")
    print(f"in-process score() with reasons (for scale): {with_reasons_rows_s:,.0f} rows/s")
    print(
        f"/score 1,000-row batches: {batch_rows_s:,.0f} rows/s = "
        f"{batch_rows_s / in_process_rows_s:.2f}x the reference (target >= 0.50)"
    )
    print(
        f"in-process feature build of one subscriber (reference): {build_ms:.1f} ms; "
        f"/score_events p99 {results['/score_events 1 subscriber, 1 client']['p99_ms']:.1f} ms "
        f"= {results['/score_events 1 subscriber, 1 client']['p99_ms'] / build_ms:.1f}x "
        "(target p99 < 100 ms)"
    )
    p99 = results["/score 1 row, 8 clients"]["p99_ms"]
    print(f"/score 1 row at 8 clients: p99 {p99:.1f} ms (target < 25 ms)")
    p99 = results["/lookup 1 id, 8 clients"]["p99_ms"]
    print(f"/lookup 1 id at 8 clients: p99 {p99:.1f} ms (target < 10 ms)")


if __name__ == "__main__":
    main()
