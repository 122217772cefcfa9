"""Serving CPU in process: what the service's jobs cost a request, without HTTP or wall time.

    python benchmarks/serve_cpu.py [--work DIR] [--repeats N]

The service's own job functions on the bodies benchmarks/serve.py sends (--work is an app that
script trained, or one this trains the same way): `lapse.serve.score_events` for one
subscriber's Adjust callbacks, `lapse.serve.score_rows` for 1,000 feature rows with and without
reasons, and the model's in-process `predict_proba` on the same rows (the issue-14 reference).
CPU time per call (`time.process_time`), median and 10th percentile over many calls after a
warm-up and `gc.freeze()` as the service does: on a machine shared with other benchmarks, wall
times move by 2x from run to run and CPU time by ~20%, so compare runs made in the same minutes
(e.g. this tree and another checkout in turn) and the ratio to `predict_proba` of the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from serve import trained_app  # noqa: E402 - benchmarks/serve.py, this script's neighbour

AS_OF = "2026-04-20"


def cpu_ms(call, repeats: int) -> tuple[float, float]:
    """(median, 10th percentile) CPU ms of this process per call of ``call``."""
    spent = []
    for _ in range(repeats):
        started = time.process_time()
        call()
        spent.append((time.process_time() - started) * 1000)
    spent.sort()
    return spent[len(spent) // 2], spent[len(spent) // 10]


def bodies(work: Path, settings) -> tuple[list[dict], list[dict]]:
    """1,000 feature rows and one subscriber's callbacks (the first row's) of the app of
    ``settings``, built once per --work folder and kept in it."""
    from features import load_events
    from features import schema as s
    from features.build import build_features
    from features.ingest.callbacks import stored_callbacks
    from training.registry import champion_uri, load_model

    kept = work / "serve_cpu_bodies.json"
    if kept.exists():
        data = json.loads(kept.read_text())
        return data["rows"], data["callbacks"]
    model = load_model(settings.mlflow.tracking_uri, champion_uri(settings.mlflow.registered_model))
    events = load_events(settings.store.path, end=AS_OF)
    flat = build_features(events, AS_OF, model.feature_definition).reset_index().head(1000)
    rows = flat.astype(object).where(flat.notna(), None).to_dict("records")
    callbacks = stored_callbacks(settings.store.path, [rows[0][s.USER_ID]])
    kept.write_text(json.dumps({"rows": rows, "callbacks": callbacks}, default=str))
    return rows, callbacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/serve-app"), help="App folder.")
    parser.add_argument("--repeats", type=int, default=150, help="Calls per /score_events.")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = trained_app(work)  # benchmarks/serve.py's app, trained there or here
    os.chdir(work)  # the app's relative store and MLflow paths
    rows, callbacks = bodies(work, settings)

    import pandas as pd

    from lapse import serve as serving

    served = serving.load_served_model(settings)
    arrived = pd.Timestamp.now(tz="UTC").to_pydatetime()
    X = pd.DataFrame(rows)[served.model.features_]
    calls = {
        f"/score_events job, 1 subscriber ({len(callbacks)} callbacks)": (
            lambda: serving.score_events(settings, served, callbacks, AS_OF, now=arrived),
            args.repeats,
        ),
        "/score job, 1,000 rows with reasons": (
            lambda: serving.score_rows(served, rows, 10_000),
            max(args.repeats // 5, 20),
        ),
        "/score job, 1,000 rows reasons: false": (
            lambda: serving.score_rows(served, rows, 10_000, reasons=False),
            max(args.repeats // 5, 20),
        ),
        "predict_proba 1,000 rows (the reference)": (
            lambda: served.model.predict_proba(X),
            max(args.repeats // 5, 20),
        ),
    }
    for call, _ in calls.values():  # first queries, DuckDB's shared database, TreeSHAP
        for _ in range(3):
            call()
    gc.freeze()  # as the service does after its warm-up
    results = {name: cpu_ms(call, repeats) for name, (call, repeats) in calls.items()}
    reference = results["predict_proba 1,000 rows (the reference)"][0]
    print(f"{'in process (CPU ms per call)':<52} {'median':>8} {'p10':>8} {'/ predict_proba':>16}")
    for name, (median, p10) in results.items():
        print(f"{name:<52} {median:8.2f} {p10:8.2f} {median / reference:15.2f}x")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: load average {load}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
