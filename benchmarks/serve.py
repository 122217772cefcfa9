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

wrk corrects its latencies for coordinated omission (``stats_correct``: a request that took
longer than the run's mean interval per connection adds the requests that would have been sent
meanwhile), so one stall of S ms in a run puts ~S / interval samples between the interval and S:
a single 200 ms stall in 5 s makes the p99 of a 1-client run ~100-200 ms. The p99s therefore
count stalls of the service and of the machine; the CPU and run-queue columns tell them apart.

Each measured run follows an unmeasured warm-up run of the same load (``--warm-seconds``, 1 s):
the service warms its paths up before it is ready, and this keeps whatever is left (the
connections, the client's own first requests) out of the measured p99s.
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

from machine import autogroup_warning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

LUA = """
wrk.method = "{method}"
wrk.headers["Content-Type"] = "application/json"
{body}
"""


def wrk(
    url: str,
    body: Path | None,
    connections: int,
    seconds: int,
    server_pids: list[int] = (),
    pin: str | None = None,
) -> dict[str, float]:
    """p50 and p99 latency (ms), requests/s and the service's CPU ms per request (user + system
    time of its processes over the run: unlike latency, it hardly moves with the machine's
    other load) of one wrk run; a POST of ``body``, or a GET without one."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    text = f'wrk.body = io.open("{body}"):read("*a")' if body else ""
    script.write_text(LUA.format(method="POST" if body else "GET", body=text))
    threads = min(connections, 2)
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
               "-s", str(script), url]  # fmt: skip
    if pin is not None:
        command = ["taskset", "-c", pin, *command]
    before, waited = _cpu_seconds(server_pids), _runqueue_seconds(server_pids)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = _cpu_seconds(server_pids) - before
    waited = _runqueue_seconds(server_pids) - waited
    script.unlink()
    if "Non-2xx" in out:
        raise SystemExit(f"{url}: the service refused requests:\n{out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    requests = int(re.search(r"(\d+) requests in", out)[1])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    return {
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "rps": rps,
        "cpu_ms": cpu * 1000 / max(requests, 1),
        "runq_ms": waited * 1000 / max(requests, 1),
    }


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _runqueue_seconds(pids: list[int]) -> float:
    """Seconds the threads of these processes spent runnable but waiting for a core
    (/proc/<pid>/task/<tid>/schedstat, second field): the machine's contention, not the
    service's own work."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
                continue
    return total / 1e9


def _median_cpu_ms(call, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of this process) of ``call``."""
    import numpy as np

    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return float(np.median(wall)), float(np.median(cpu))


def trained_app(work: Path):
    """The settings of the benchmark's app in ``work``: a 2,000-user generated app whose model
    (3 trials) is trained and made champion on first use, then reused."""
    from lapse import jobs
    from lapse.settings import Settings

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
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Folder to keep the trained app in (reused).")
    parser.add_argument("--seconds", type=int, default=10, help="Seconds per measured wrk run.")
    parser.add_argument(
        "--warm-seconds",
        type=int,
        default=1,
        help="Seconds of unmeasured load before each measured run (0: none).",
    )
    parser.add_argument("--workers", type=int, default=1, help="Service workers (processes).")
    parser.add_argument(
        "--pin", action="store_true", help="Pin the service to the last core, wrk to the others."
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    import pandas as pd

    from features import load_events
    from features import schema as s
    from features.build import build_features
    from lapse import jobs
    from lapse import serve as serving
    from training.registry import champion_uri, load_model

    work = args.work or Path(tempfile.mkdtemp(prefix="lapse-bench-serve-"))
    settings = trained_app(work)
    model = load_model(settings.mlflow.tracking_uri, champion_uri(settings.mlflow.registered_model))
    as_of = "2026-04-20"
    events = load_events(settings.store.path, end=as_of)
    features = build_features(events, as_of, model.feature_definition)
    flat = features.reset_index()
    records = flat.astype(object).where(flat.notna(), None).to_dict("records")
    user = records[0][s.USER_ID]

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
    bare = bodies / "thousand_no_reasons.json"
    bare.write_text(json.dumps({"rows": records[:1000], "reasons": False}))
    lookup = bodies / "lookup.json"
    lookup.write_text(json.dumps({"user_ids": [user]}))
    history = bodies / "events.json"
    history.write_text(json.dumps({"as_of": as_of, "events": callbacks}))

    # the references, in process (wall and CPU ms, medians), measured around the server runs
    from features.build import build_feature_records
    from serving.scoring import LeanScorer, score

    batch = features.head(1000)
    X = batch[model.features_]
    lean = LeanScorer(model)
    mine = events[events[s.USER_ID] == user]
    # the service's own job for /score_events (callbacks normalised, keyed, built, scored in
    # the process's shared DuckDB), without HTTP
    served = serving.load_served_model(settings)
    arrived = pd.Timestamp.now(tz="UTC").to_pydatetime()

    def references() -> dict[str, tuple[float, float]]:
        return {
            "predict_proba 1,000 rows": _median_cpu_ms(lambda: model.predict_proba(X), 15),
            "score() 1,000 rows with reasons": _median_cpu_ms(lambda: score(model, batch), 5),
            "lean score 1 row": _median_cpu_ms(lambda: lean.score(records[:1]), 200),
            "build_features 1 subscriber": _median_cpu_ms(
                lambda: build_features(mine, as_of, model.feature_definition), 15
            ),
            "build_feature_records 1 subscriber": _median_cpu_ms(
                lambda: build_feature_records(mine, as_of, model.feature_definition), 15
            ),
            "score_events job 1 subscriber (callbacks)": _median_cpu_ms(
                lambda: serving.score_events(settings, served, callbacks, as_of, now=arrived), 15
            ),
        }

    import psutil

    before = references()
    env = {"LAPSE_SERVING__WORKERS": str(args.workers)}
    os.environ.update(env)
    server = serving.start_server(settings, "127.0.0.1", serving.free_port())
    parent = psutil.Process(server.process.pid)
    pids = [parent.pid, *(c.pid for c in parent.children(recursive=True))]
    if args.pin:  # the service on the last core, wrk on the others
        last = os.cpu_count() - 1
        for pid in pids:
            os.sched_setaffinity(pid, {last})
    pin = f"0-{os.cpu_count() - 2}" if args.pin else None
    results: dict[str, dict[str, float]] = {}

    def run(name: str, path: str, body: Path | None, c: int) -> None:
        if args.warm_seconds:  # the same load, unmeasured
            wrk(f"{server.url}{path}", body, c, args.warm_seconds, pids, pin)
        results[name] = wrk(f"{server.url}{path}", body, c, args.seconds, pids, pin)

    try:
        for c in (1, 8, 32):
            run(f"GET /livez (the stack's floor), {c} clients", "/livez", None, c)
            run(f"/score 1 row, {c} clients", "/score", one_row, c)
            run(f"/lookup 1 id, {c} clients", "/lookup", lookup, c)
        run("/score 1,000 rows, 1 client", "/score", thousand, 1)
        run("/score 1,000 rows reasons:false, 1 client", "/score", bare, 1)
        run("/score_events 1 subscriber, 1 client", "/score_events", history, 1)
    finally:
        server.stop()
    after = references()

    pinned = ", pinned to the last core (wrk to the others)" if args.pin else ""
    print(
        f"\nservice: {args.workers} worker(s){pinned}; each run {args.seconds} s, after "
        f"{args.warm_seconds} s of the same load unmeasured"
    )
    print(
        f"{'load':<46} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'CPU ms/req':>11} "
        f"{'run-queue ms/req':>17}"
    )
    for name, r in results.items():
        print(
            f"{name:<46} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:8.1f} {r['cpu_ms']:11.2f} "
            f"{r['runq_ms']:17.2f}"
        )
    load = os.getloadavg()[0]
    print(f"machine: load average {load:.1f} (1 min) at the end, {os.cpu_count()} cores")
    if warning := autogroup_warning():
        print(f"machine: {warning}")
    print(f"\n{'in-process reference (median)':<46} {'before':>15} {'after':>15}   wall / CPU ms")
    for name in before:
        b, a = before[name], after[name]
        print(f"{name:<46} {b[0]:7.1f} /{b[1]:6.1f} {a[0]:7.1f} /{a[1]:6.1f}")
    ref = {k: ((before[k][0] + after[k][0]) / 2, (before[k][1] + after[k][1]) / 2) for k in before}
    proba_wall, proba_cpu = ref["predict_proba 1,000 rows"]
    print()
    for name in ("/score 1,000 rows, 1 client", "/score 1,000 rows reasons:false, 1 client"):
        r = results[name]
        wall_ratio = r["rps"] * 1000 / (1000 * 1000 / proba_wall)
        cpu_ratio = proba_cpu / r["cpu_ms"]
        print(
            f"{name}: {r['rps'] * 1000:,.0f} rows/s = {wall_ratio:.2f}x in-process predict_proba "
            f"by wall clock, {cpu_ratio:.2f}x by CPU (target >= 0.50)"
        )
    events_p99 = results["/score_events 1 subscriber, 1 client"]["p99_ms"]
    build = ref["build_features 1 subscriber"][0]
    job_wall, job_cpu = ref["score_events job 1 subscriber (callbacks)"]
    print(
        f"/score_events 1 subscriber, 1 client: p99 {events_p99:.1f} ms (target < 100 ms) = "
        f"{events_p99 / build:.1f}x the in-process build_features of that subscriber "
        f"({build:.1f} ms); the service's job in process {job_wall:.1f} ms wall, "
        f"{job_cpu:.1f} ms CPU"
    )
    for name, target in (("/score 1 row", 25), ("/lookup 1 id", 10)):
        r = results[f"{name}, 8 clients"]
        floor = results["GET /livez (the stack's floor), 8 clients"]
        print(
            f"{name} at 8 clients: p99 {r['p99_ms']:.1f} ms (target < {target} ms); the floor "
            f"(/livez) p99 {floor['p99_ms']:.1f} ms; CPU {r['cpu_ms']:.2f} ms/request against "
            f"the floor's {floor['cpu_ms']:.2f}"
        )


if __name__ == "__main__":
    main()
