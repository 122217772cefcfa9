"""Benchmark: rescore end to end (features + scoring + scores file; the Braze sync excluded) on
1M, 5M and 10M subscribers, in-process streaming and on a ``local:2`` dask cluster.

    python benchmarks/scale.py                       # generates + ingests 100,000 users first
    python benchmarks/scale.py --base DIR            # reuse an ingested 100k store
    python benchmarks/scale.py --sizes 10,50,100 --where in-process,local:2

The N-million stores are the 100k store's events replicated on disk with new user ids
(``<id>~r<k>``: each copy is another set of subscribers with the same histories), each copy
committed through the store's own ``commit`` (bucket column, bucket order), so the 5M store holds
the 1M store's files plus more (hard links) and so on. Each sized store is then compacted once
(``features.ingest.store.compact``: one bucket-ordered file a month, as an app's ingests leave
it past ``store.compact_files``), timed apart from the rescores and recorded as ``compact_s``
(``compacted.json`` in the store: a rerun reuses it). The champion is a model trained (3 Optuna
trials) on a separate 5,000-user app. Each rescore runs in its own child process; this process
polls the memory (RSS) of that child and every process under it (the cluster's scheduler and
workers) every 0.2 s and records each process's peak and the peak of their sum. With
``--drop-caches`` (root) the page cache is emptied before each run, so every size reads its store
from disk: otherwise a store just compacted is read from memory while one larger than the free
memory never is.

Targets (issue 17): 10M completes with the peak sum under 12 GiB; time grows <= 11x per 10x;
``local:2`` within 1.3x of in-process at 1M (the reference measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

# run as a script, this file's folder comes first on sys.path and its name would hide packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

AS_OF = "2026-04-06"  # day 91 of 120 (as benchmarks/features.py)
START = date(2026, 1, 5)


def _prepare_base(users: int, folder: Path) -> Path:
    from features.ingest import ingest
    from features.synthetic import SyntheticConfig, generate

    raw = folder / "synthetic"
    print(f"generating {users:,} users and ingesting them (once) ...", flush=True)
    generate(SyntheticConfig(users=users, seed=7, start=START, days=120), raw)
    ingest([raw / "raw"], folder / "store", now=datetime(2027, 1, 1, tzinfo=UTC))
    return folder / "store"


def _train_model(folder: Path) -> Path:
    """A champion trained on a 5,000-user app (3 trials), pickled for the children."""
    from lapse import jobs
    from lapse.settings import Settings
    from training.registry import champion_uri, load_model

    print("training the model on a 5,000-user app ...", flush=True)
    settings = jobs.demo_settings(Settings(), folder).updated(
        synthetic={"users": 5000, "seed": 11, "start": START, "days": 120},
        optuna={"n_trials": 3},
    )
    jobs.generate(settings, folder / "synthetic", overwrite=True)
    jobs.ingest(settings, [folder / "synthetic" / "raw"], now=datetime(2027, 1, 1, tzinfo=UTC))
    jobs.train(settings)
    model = load_model(settings.mlflow.tracking_uri, champion_uri(settings.mlflow.registered_model))
    path = folder / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    return path


_BASE: dict | None = None


def _base_rows(base: str) -> dict:
    """The base store's events split by month, each month ordered by subscriber then time, with
    the columns a copy needs to re-order it: held once per writing process (see ``_write_copy``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from features import schema as s
    from features.ingest.store import EVENT_SCHEMA, month_of, read_events_table

    table = read_events_table(Path(base), columns=EVENT_SCHEMA.names)
    table = table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA).combine_chunks()
    if table.column(s.USER_ID).null_count or table.column(s.TS).null_count:
        raise SystemExit(f"{base}: events without a user id or a time; copies need both")
    users = pc.dictionary_encode(table.column(s.USER_ID)).chunk(0)
    platforms = pc.dictionary_encode(pc.fill_null(table.column(s.PLATFORM), "")).chunk(0)
    n_platforms = len(platforms.dictionary)
    user = users.indices.to_numpy().astype(np.int64)
    pairs, pair = np.unique(user * n_platforms + platforms.indices.to_numpy(), return_inverse=True)
    ts = table.column(s.TS).chunk(0).to_numpy().view(np.int64)
    months = month_of(table.column(s.TS))
    out = {
        "user_ids": users.dictionary,
        "pair_user": pa.array(pairs // n_platforms),
        "pair_platform": pa.array(pairs % n_platforms),
        "platforms": platforms.dictionary,
        "months": {},
    }
    for month in sorted(pc.unique(months).to_pylist()):
        rows = np.flatnonzero(pc.equal(months, month).to_numpy(zero_copy_only=False))
        # by subscriber, then time, then stored position: a copy's (bucket, time) order then
        # gathers each subscriber's rows as one run, and ties fall as they would in ``commit``
        order = rows[np.lexsort((rows, ts[rows], pair[rows]))]
        out["months"][month] = {
            "table": table.drop_columns([s.USER_ID]).take(pa.array(order)),
            "user": user[order],
            "pair": pair[order],
            "ts": ts[order],
            "position": order,
        }
    return out


def _write_copy(base: str, copy: int, folder: str) -> str:
    """Commit copy ``copy`` of the base store's events (user ids suffixed ``~r<copy>``) into a
    store of its own at ``folder`` (merged into the sized stores by ``_store``), a commit per
    month as the store's ``commit`` writes them.

    The rows go to ``commit`` already in its order (bucket, time): the ~100k distinct
    subscribers are renamed and hashed (``subscriber_buckets``, as ``commit`` does) rather than
    7.55M rows, and each subscriber's rows are gathered as a run from the subscriber-ordered base
    held by this process, so ``commit``'s own hashing and sort find them in place.
    """
    global _BASE
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from features import schema as s
    from features.ingest.partitions import subscriber_buckets
    from features.ingest.store import EVENT_SCHEMA, QUARANTINE_SCHEMA, Manifest, commit, writer_lock

    if _BASE is None:
        _BASE = _base_rows(base)
    suffix = pa.scalar(f"~r{copy}")
    new_ids = pc.binary_join_element_wise(_BASE["user_ids"], suffix, "")
    pair_bucket = subscriber_buckets(
        new_ids.take(_BASE["pair_user"]), _BASE["platforms"].take(_BASE["pair_platform"])
    ).to_numpy()
    out = Path(folder)
    manifest = Manifest()
    with writer_lock(out):
        for month, part in _BASE["months"].items():
            order = np.lexsort((part["position"], part["ts"], pair_bucket[part["pair"]]))
            events = part["table"].take(pa.array(order))
            ids = new_ids.take(pa.array(part["user"][order]))
            events = events.add_column(
                EVENT_SCHEMA.get_field_index(s.USER_ID), EVENT_SCHEMA.field(s.USER_ID), ids
            )
            source = {"sha256": f"replica-{copy}-{month}", "path": f"{base} copy {copy}"}
            manifest = commit(out, manifest, events, QUARANTINE_SCHEMA.empty_table(), [source])
            del events, ids
    return folder


def _store(root: Path, k: int, copies: list[Path]) -> tuple[Path, float]:
    """The store of the first ``k`` copies (their files hard-linked, their commits in order),
    compacted once to a file a month; and the compaction's seconds (as recorded when it ran)."""
    from features.ingest.store import compact

    store = root / f"x{k}"
    done = store / "compacted.json"  # written once compacted: a rerun does not redo it
    if not _merged(store, k, copies) and done.is_file():
        return store, json.loads(done.read_text())["seconds"]
    done.unlink(missing_ok=True)
    print(f"{k:>4} copies: compacting the store ...", flush=True)
    result = compact(store)
    record = {
        "seconds": result.seconds,
        "months": len(result.months),
        "files_before": result.files_before,
        "files_after": result.files_after,
        "rows": result.rows,
    }
    done.write_text(json.dumps(record))
    print(
        f"{k:>4} copies: compacted {record['months']} months, {result.files_before} files -> "
        f"{result.files_after}, {result.rows:,} rows in {result.seconds:.0f} s",
        flush=True,
    )
    return store, result.seconds


def _merged(store: Path, k: int, copies: list[Path]) -> bool:
    """Write ``store`` as the merge of the first ``k`` copies unless it is one; True if written."""
    from features.ingest.store import MANIFEST, Manifest, read_manifest

    marker = store / "copies.txt"
    if (store / MANIFEST).is_file() and marker.is_file() and marker.read_text() == str(k):
        return False
    merged = Manifest()
    for folder in copies[:k]:
        one = read_manifest(folder)
        for rel in one.event_files():
            (store / rel).parent.mkdir(parents=True, exist_ok=True)
            if not (store / rel).exists():
                os.link(folder / rel, store / rel)
        for c in one.commits:
            number = len(merged.commits) + 1
            merged.sources.update(
                {sha: dict(one.sources[sha], commit=number) for sha in c["sources"]}
            )
            merged.commits.append(dict(c, commit=number))
    (store / MANIFEST).write_text(merged.to_json())
    marker.write_text(str(k))
    return True


def _copies(base: Path, root: Path, upto: int, have: list[Path], jobs: int) -> list[Path]:
    """Copies 0..upto-1 of the base store, written by ``jobs`` processes side by side."""
    from concurrent.futures import ProcessPoolExecutor

    from features.ingest.store import MANIFEST

    todo = [i for i in range(len(have), upto) if not (root / f"c{i}" / MANIFEST).is_file()]
    started = time.perf_counter()
    if todo:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_write_copy, [str(base)] * len(todo), todo,
                          [str(root / f"c{i}") for i in todo]))  # fmt: skip
        print(
            f"{len(todo)} copies of the base store written in "
            f"{time.perf_counter() - started:.0f} s ({jobs} processes)",
            flush=True,
        )
    return [root / f"c{i}" for i in range(upto)]


def child(
    store: Path,
    where: str,
    model_path: Path,
    out: Path,
    max_memory_gib: float,
    partitions: int = 0,
    dask: dict | None = None,
) -> None:
    """One rescore, timed; prints a JSON line."""
    from features.cluster import workplace
    from features.settings import DaskSettings, FeatureConfig
    from serving.rescore import rescore
    from serving.scores import write_scores

    model = pickle.loads(model_path.read_bytes())
    address = "" if where == "in-process" else where
    split = FeatureConfig(max_memory_gib=max_memory_gib, partitions=partitions)
    started = time.perf_counter()
    with workplace(DaskSettings(address=address, **(dask or {}))) as place:
        cluster_up = time.perf_counter() - started
        result = rescore(store, AS_OF, model, where=place, split=split, max_stale_days=30)
    write_scores(result.scores, out, model.bucket_policy_, {"as_of": AS_OF})
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cluster_s": cluster_up,
                "events": result.events,
                "scored": len(result.scores),
                "partitions": result.partitions,
                "ran_on": result.ran_on,
            }
        ),
        flush=True,
    )


def _measure(args: list[str]) -> dict:
    """Run a child, polling the RSS of it and every descendant; its JSON plus the peaks."""
    import psutil

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    peaks: dict[int, tuple[str, int]] = {}
    cpu: dict[int, tuple[str, float, float]] = {}  # (name, user, system) s of each, last seen
    peak_sum = 0
    load = os.getloadavg()[0]
    while proc.poll() is None:
        try:
            family = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        total = 0
        for p in family:
            try:
                rss = p.memory_info().rss
                times = p.cpu_times()
                line = " ".join(p.cmdline())
                name = (
                    "client" if p.pid == proc.pid
                    else "worker" if "spawn_main" in line
                    else "helper"
                )  # fmt: skip
                cpu[p.pid] = (name, times.user, times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            if rss > peaks.get(p.pid, ("", 0))[1]:
                peaks[p.pid] = (name, rss)
        peak_sum = max(peak_sum, total)
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_sum_gib"] = peak_sum / 2**30
    result["cpu_s"] = sum(u + s for _, u, s in cpu.values())  # to each one's last poll (0.2 s)
    result["cpu_by_process"] = sorted(
        ([name, round(u, 1), round(s, 1)] for name, u, s in cpu.values()), key=lambda x: x[0]
    )
    result["load"] = [round(load, 1), round(os.getloadavg()[0], 1)]  # 1-min, at start and end
    result["peaks_gib"] = sorted(
        ((name, rss / 2**30) for name, rss in peaks.values()), key=lambda x: -x[1]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="An ingested 100k store (default: generate).")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--work", type=Path, help="Folder for the stores (default: a temp dir).")
    parser.add_argument("--sizes", default="10,50,100", help="Copies of the base store.")
    parser.add_argument("--where", default="in-process,local:2")
    parser.add_argument(
        "--local-sizes", default="10,50", help="Sizes (copies) also run on the cluster."
    )
    parser.add_argument("--max-memory-gib", type=float, default=4.0)
    parser.add_argument(
        "--partitions", type=int, default=0, help="Subscriber partitions (0: by max memory)."
    )
    parser.add_argument(
        "--dask",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A [dask] setting for the cluster runs (JSON value), e.g. library_threads=0.",
    )
    parser.add_argument("--tag", default="", help="A label recorded with each run.")
    parser.add_argument("--jobs", type=int, default=2, help="Processes writing the copies.")
    parser.add_argument("--results", type=Path, help="Append each run as a JSON line here.")
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="Empty the page cache before each timed run (root): every size reads its store "
        "from disk, as a store larger than memory always is.",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--on", help=argparse.SUPPRESS)
    args = parser.parse_args()
    dask = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.dask)}
    if args.child:
        child(args.store, args.on, args.model, args.out, args.max_memory_gib, args.partitions, dask)
        return
    sys.path.insert(0, str(Path(__file__).parent))  # for benchmarks/machine.py alone: its
    from machine import (  # neighbours (features.py, ...) would hide packages
        autogroup_warning,
        drop_page_cache,
    )

    sys.path.pop(0)
    if warning := autogroup_warning():
        print(f"machine: {warning}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="lapse-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    base = args.base or (
        work / "base" / "store"
        if (work / "base" / "store" / "manifest.json").is_file()
        else _prepare_base(args.users, work / "base")
    )
    model = work / "model" / "model.pkl"
    if not model.is_file():
        model = _train_model(work / "model")
    sizes = sorted(int(x) for x in args.sizes.split(","))
    local_sizes = {int(x) for x in args.local_sizes.split(",") if x}
    places = args.where.split(",")
    runs: dict[tuple[int, str], dict] = {}
    copies: list[Path] = []
    for k in sizes:  # each size measured as soon as it is written: a cut-short run keeps results
        copies = _copies(base, work / "copies", k, copies, args.jobs)
        store, compact_s = _store(work / "stores", k, copies)
        for where in places:
            if where != "in-process" and k not in local_sizes:
                continue
            cmd = [
                sys.executable, __file__, "--child", "--store", str(store), "--on", where,
                "--model", str(model), "--out", str(work / f"scores-{k}-{where}.parquet"),
                "--max-memory-gib", str(args.max_memory_gib),
                "--partitions", str(args.partitions), *(f"--dask={x}" for x in args.dask),
            ]  # fmt: skip
            if args.drop_caches:
                try:
                    drop_page_cache()
                except OSError as exc:
                    raise SystemExit(
                        f"--drop-caches: cannot empty the page cache ({exc}); run as root, or "
                        "without --drop-caches"
                    ) from None
            r = _measure(cmd)
            r.update(copies=k, where=where, at=datetime.now(UTC).isoformat(timespec="seconds"))
            r.update(compact_s=compact_s)  # once per store, before its runs; not in "seconds"
            r.update(tag=args.tag, dask=dask, cold=args.drop_caches)
            runs[k, where] = r
            top = ", ".join(f"{n} {g:.2f}" for n, g in r["peaks_gib"][:4])
            print(
                f"{k:>4} copies {where:<10} {r['seconds']:8.1f} s  cpu {r['cpu_s']:8.1f} s  "
                f"load {r['load'][0]:g}..{r['load'][1]:g}  events {r['events']:>12,}  "
                f"scored {r['scored']:>10,}  partitions {r['partitions']:>3}  "
                f"(cluster start {r['cluster_s']:.1f} s; store compaction, once, "
                f"{compact_s:.1f} s)  "
                f"peak sum {r['peak_sum_gib']:.2f} GiB  (per process: {top})  "
                f"cpu user/system by process: {r['cpu_by_process']}",
                flush=True,
            )
            if args.results:
                with open(args.results, "a") as handle:
                    handle.write(json.dumps(r) + "\n")
    ordered = sorted(k for k, w in runs if w == "in-process")
    for a, b in zip(ordered, ordered[1:], strict=False):
        growth = runs[b, "in-process"]["seconds"] / runs[a, "in-process"]["seconds"]
        print(
            f"in-process time x{b / a:g} subscribers: x{growth:.2f} (per 10x: "
            f"x{growth ** (1 / __import__('math').log10(b / a)):.2f}; target <= 11)"
        )
    for k in sorted(local_sizes):
        for where in places:
            if where != "in-process" and (k, where) in runs and (k, "in-process") in runs:
                ratio = runs[k, where]["seconds"] / runs[k, "in-process"]["seconds"]
                print(f"{where} / in-process at {k} copies: {ratio:.2f}x (target <= 1.3 at 10)")


if __name__ == "__main__":
    main()
