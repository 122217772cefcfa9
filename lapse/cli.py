"""The `lapse` command line: a thin edge that loads settings once and calls the packages."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lapse import __version__
from lapse.console import err, out, progress_bars, table
from lapse.settings import Settings, SettingsError

app = typer.Typer(
    name="lapse",
    help="Churn prediction and re-engagement for subscription apps: Adjust in, Braze out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@dataclass(frozen=True)
class _Global:
    config: Path | None
    verbose: bool

    def settings(self, **overrides: dict) -> Settings:
        """Load settings once per command: flags > environment > config file > defaults."""
        return Settings.load(self.config, **overrides)


def _version(value: bool) -> None:
    if value:
        out.print(f"lapse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Settings file (default: ./lapse.toml if present).",
            dir_okay=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the full traceback on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = _Global(config, verbose)


Day = Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], metavar="YYYY-MM-DD")]


@app.command()
def generate(
    ctx: typer.Context,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write into.", file_okay=False)
    ],
    users: Annotated[int | None, typer.Option(min=1, help="App users to simulate.")] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Random seed: same seed, same bytes.")
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="First day of data (UTC)."),
    ] = None,
    days: Annotated[int | None, typer.Option(min=8, help="Days of data.")] = None,
    horizon_days: Annotated[
        int | None, typer.Option(min=1, help="Churn horizon of the truth.")
    ] = None,
    cutoff: Annotated[
        list[datetime] | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Cut-off for the ground truth (repeatable; default weekly from day 28).",
        ),
    ] = None,
    legacy_share: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Share of days, from the start, in Adjust's legacy vocabulary."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace data generated earlier in --out.")
    ] = False,
) -> None:
    """Write a synthetic app's Adjust raw export, with the true churn probability per subscriber."""
    settings = ctx.obj.settings(
        synthetic={
            "users": users,
            "seed": seed,
            "start": start.date() if start else None,
            "days": days,
            "legacy_share": legacy_share,
        },
        labels={"horizon_days": horizon_days},
    )
    cutoffs = tuple(c.date() for c in cutoff) if cutoff else None
    summary = _generate(settings, out_dir, cutoffs, overwrite)
    _print_generation(summary)


@app.command()
def demo(
    ctx: typer.Context,
    users: Annotated[int | None, typer.Option(min=1, help="App users to simulate.")] = None,
    trials: Annotated[
        int, typer.Option(min=1, help="Optuna trials (the demo keeps tuning short).")
    ] = 10,
) -> None:
    """Run the whole flow on the embedded defaults, in <store.path>/demo (replaced each run).

    Generate a synthetic app's Adjust export (with its true churn probabilities), ingest it,
    train and register the model (in the demo folder's own MLflow), rescore every active subscriber
    with the champion and push the buckets to a local Braze emulator, then sync once more to
    show that nothing unchanged is sent twice.
    """
    import shutil

    from pydantic import SecretStr

    from features import schema as s
    from features.synthetic import GenerationError
    from features.synthetic.calibration import check_truth
    from serving.emulator import Emulator, EmulatorConfig

    settings = ctx.obj.settings(synthetic={"users": users})
    if not _config(settings, None).observed_cutoff_days():
        days, horizon = settings.synthetic.days, settings.labels.horizon_days
        raise GenerationError(
            f"demo needs an outcome inside the data: with synthetic.days = {days} no cut-off's "
            f"{horizon}-day horizon ends in time; raise synthetic.days or lower labels.horizon_days"
        )
    root = settings.store.path / "demo"
    if root.exists():
        shutil.rmtree(root)
    folder = root / "synthetic"
    out.rule("1. generate a synthetic app, as Adjust exports it")
    summary = _generate(settings, folder, None, overwrite=True)
    _print_generation(summary)

    import pandas as pd

    truth = pd.read_parquet(folder / "truth" / "churn_truth.parquet")
    check = check_truth(truth)
    out.print(
        table(
            "Ground truth vs realised outcomes",
            [
                ("subscriber cut-offs with an observed outcome", check.observed),
                ("mean true churn probability", check.mean_probability),
                ("realised churn rate", check.realised_rate),
                ("Brier score, truth vs outcome", check.brier),
                ("Brier score expected if truth is right", check.expected_brier),
                ("deviation (standard errors)", round(check.brier_z, 2)),
                ("oracle ROC AUC (the ceiling for any model)", check.oracle_roc_auc),
            ],
        )
    )

    key = "demo-key"
    with Emulator(EmulatorConfig(api_keys=frozenset({key}))) as braze:
        demo_settings = settings.model_copy(
            update={
                "store": settings.store.model_copy(update={"path": root}),
                "ledger": settings.ledger.model_copy(
                    update={"url": f"sqlite:///{(root / 'ledger.db').resolve()}"}
                ),
                # its own registry: a demo model must never become a real deployment's champion
                "mlflow": settings.mlflow.model_copy(
                    update={
                        "tracking_uri": f"sqlite:///{(root / 'mlflow.db').resolve()}",
                        "artifact_location": str((root / "mlruns").resolve()),
                    }
                ),
                "optuna": settings.optuna.model_copy(
                    update={"storage": f"sqlite:///{(root / 'optuna.db').resolve()}"}
                ),
                "braze": settings.braze.model_copy(
                    update={"url": braze.url, "api_key": SecretStr(key)}
                ),
            }
        )
        out.rule("2. ingest the export into the event store")
        _ingest(demo_settings, [folder / "raw"])
        out.rule(f"3. train, evaluate against baselines and the oracle, register ({trials} trials)")
        _train(demo_settings, n_trials=trials)
        last_day = settings.synthetic.start + timedelta(days=settings.synthetic.days)
        out.rule(f"4. rescore on {last_day} and push changed buckets to the Braze emulator")
        braze.add_profiles(truth[s.USER_ID].unique().tolist())  # users Braze already knows
        scores = _rescore(demo_settings, last_day, None, dry_run=False)
        out.rule("5. the same scores again: nothing has changed, so nothing is sent")
        _push(demo_settings, scores, dry_run=False)
        landed = braze.stats()
    rows = [(k.replace("_", " "), v) for k, v in landed.items() if not isinstance(v, dict)]
    out.print(table("What landed in the Braze emulator", rows))
    out.print(
        f"Raw export in {folder / 'raw'}, event store in {root}; `mlflow ui --backend-store-uri "
        f"{demo_settings.mlflow.tracking_uri}` shows the training run (the demo keeps its own "
        "MLflow registry: your mlflow.tracking_uri and its champion are untouched)."
    )


@app.command()
def ingest(
    ctx: typer.Context,
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="SRC",
            help="Adjust CSV exports (.csv / .csv.gz), callback logs, or folders of them.",
        ),
    ],
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Event store folder (default: store.path).", file_okay=False),
    ] = None,
) -> None:
    """Add Adjust exports to the Parquet event store: validate, deduplicate, quarantine bad rows.

    Files the store already holds are skipped, so running it twice adds nothing the second time.
    """
    _ingest(ctx.obj.settings(store={"path": store}), sources)


def _ingest(settings: Settings, sources: list[Path]) -> None:
    from features.ingest import IngestError
    from features.ingest import ingest as run_ingest

    with progress_bars() as report:
        summary = run_ingest(
            sources,
            settings.store.path,
            user_id_column=settings.ingest.user_id_column,
            keep_unknown_columns=settings.ingest.keep_unknown_columns,
            progress=report,
        )
    rows = [
        ("store", summary.store),
        ("files", summary.files),
        ("  already in the store (skipped)", summary.files_skipped),
        ("  same bytes as another file (skipped)", summary.files_repeated),
        ("  header only", summary.header_only_files),
        ("  bad files", len(summary.bad_files)),
        ("rows read", summary.rows_read),
        ("rows stored", summary.rows_stored),
        ("duplicates dropped", summary.duplicates),
        ("rows quarantined", summary.rows_quarantined),
        *((f"  {reason}", n) for reason, n in summary.quarantined.items()),
        ("commits", summary.commits),
    ]
    out.print(table("Ingested", rows))
    if summary.bad_files:
        out.print(table("Bad files (in the quarantine at line 0)", list(summary.bad_files.items())))
        # everything readable is stored; the exit status tells cron that something was not
        raise IngestError(
            f"{len(summary.bad_files)} of {summary.files} file(s) could not be read (listed "
            "above); everything else was stored"
        )


@app.command()
def features(
    ctx: typer.Context,
    as_of: Annotated[
        datetime,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Cut-off (midnight UTC): only events before it are used.",
        ),
    ],
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="Parquet file to write.", dir_okay=False)
    ],
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Event store folder (default: store.path).", file_okay=False),
    ] = None,
) -> None:
    """Build the churn features of every subscriber active at --as-of, from the event store.

    One row per subscriber (user_id, platform); the columns are described in the feature
    registry (features/registry.py).
    """
    import time

    from features import FeatureConfig, build_features, load_events
    from features import schema as s
    from features import state as st
    from features.ingest.store import MANIFEST, StoreError
    from features.timeline import NEEDED_COLUMNS, to_timestamp

    settings = ctx.obj.settings(store={"path": store})
    if not (settings.store.path / MANIFEST).is_file():
        raise StoreError(
            f"{settings.store.path}: no event store here (no {MANIFEST}); run `lapse ingest` first"
        )
    started = time.perf_counter()
    cut = to_timestamp(as_of.date())
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out_file.parent, os.W_OK):  # say so before the work, not after it
        raise StoreError(f"--out {out_file}: cannot write in {out_file.parent}")
    with progress_bars() as report:
        report("load", 0, 1)
        events = load_events(
            settings.store.path, end=cut, columns=list(NEEDED_COLUMNS), include_sandbox=False
        )
        report("load", 1, 1)
        frame = build_features(events, cut, FeatureConfig(), progress=report)
    if frame.empty:
        span = (
            f"its events before then span {events[s.TS].min():%Y-%m-%d} .. "
            f"{events[s.TS].max():%Y-%m-%d}"
            if len(events)
            else "it holds no events before then"
        )
        raise StoreError(
            f"{settings.store.path}: no subscriber is active at {cut:%Y-%m-%d} ({span}); "
            "choose an --as-of inside the stored data"
        )
    frame.to_parquet(out_file)
    status = frame[st.STATUS].value_counts()
    rows = [
        ("store", settings.store.path),
        ("as of", str(cut)),
        ("events read", len(events)),
        ("active subscribers", len(frame)),
        *((f"  {name}", int(n)) for name, n in status.items()),
        ("  auto-renew off", int(frame[st.AUTO_RENEW_OFF].sum())),
        ("features", frame.shape[1]),
        ("output", out_file),
        ("seconds", round(time.perf_counter() - started, 1)),
    ]
    out.print(table("Features", rows))


@app.command()
def train(
    ctx: typer.Context,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Event store folder (default: store.path).", file_okay=False),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, help="Optuna trials (default: optuna.n_trials)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.001, help="Tuning budget in seconds (optuna.timeout_s)."),
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option("--horizon", min=1, help="Churn horizon in days (labels.horizon_days)."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            "--truth",
            help="Generator ground truth to compare with (default: training.truth_path, else "
            "<store>/synthetic/truth/churn_truth.parquet if present).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Tune, fit, calibrate and evaluate the churn model; register it, moving `champion` only
    if it beats the current champion on the same hold-out.

    Snapshots are cut from the event store; the latest cut-off with complete labels is the
    hold-out. Everything is logged to MLflow (mlflow.tracking_uri); `mlflow ui` shows the run.
    """
    settings = ctx.obj.settings(
        store={"path": store},
        optuna={"n_trials": trials, "timeout_s": timeout},
        labels={"horizon_days": horizon},
        training={"truth_path": truth.resolve() if truth else None},
    )
    _train(settings)


def _train(settings: Settings, **overrides) -> None:
    """Run training with quiet library logs, then print its summary (`overrides`: TrainConfig)."""
    import logging
    import os

    import optuna

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from training import train as run_training  # imports mlflow, which sets its log levels

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with progress_bars() as report:
        result = run_training(settings, progress=report, **overrides)
    _print_training(settings, result)


def _print_training(settings: Settings, result) -> None:
    from rich.table import Table

    m, gate, split = result.metrics, result.gate, result.split
    oracle = (
        f"{result.oracle_rows:,} of {result.rows['holdout']:,} hold-out rows matched"
        if "oracle_rows" in m
        else "no ground truth"
    )
    out.print(
        table(
            "Training",
            [
                ("MLflow run", result.run_id),
                ("train cut-offs", f"{split.train[0].date()} .. {split.train[-1].date()}"),
                ("validation cut-offs", ", ".join(str(c.date()) for c in split.valid)),
                ("hold-out cut-off", str(split.holdout.date())),
                *((f"rows: {k}", v) for k, v in result.rows.items()),
                ("trials finished (pruned)", f"{result.tuning.finished} ({result.tuning.pruned})"),
                ("best validation ROC AUC", result.tuning.best_value),
                ("calibration", result.model.calibration_),
                ("oracle", oracle),
                ("oracle_ratio", m.get("oracle_ratio", "no ground truth")),
                ("seconds", round(result.seconds["total"], 1)),
            ],
        )
    )
    columns = [("model", "holdout"), ("rule", "baseline_rule"), ("logreg", "baseline_logreg")]
    if "oracle_roc_auc" in m:
        columns += [("model, matched", "oracle_matched_model"), ("oracle", "oracle")]
    comparison = Table(title="Hold-out metrics", title_justify="left")
    comparison.add_column("metric", style="bold")
    for label, _ in columns:
        comparison.add_column(label, justify="right")
    for metric in (
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
        "ece",
        "top10_lift",
        "top20_recall",
        "lift_quality",
    ):
        values = [m.get(f"{prefix}_{metric}") for _, prefix in columns]
        comparison.add_row(metric, *("-" if v is None else f"{v:.4f}" for v in values))
    out.print(comparison)
    buckets = Table(title="Hold-out buckets", title_justify="left")
    for column in (
        "bucket",
        "users",
        "share",
        "expected churners",
        "expected non-churners",
        "realised churn rate",
    ):
        buckets.add_column(column, justify="left" if column == "bucket" else "right")
    for name, row in result.buckets.iterrows():
        buckets.add_row(
            str(name),
            f"{int(row['users']):,}",
            f"{row['share']:.1%}",
            f"{row['expected_churners']:,.0f}",
            f"{row['expected_non_churners']:,.0f}",
            f"{row['realised_churn_rate']:.1%}",
        )
    out.print(buckets)
    name = settings.mlflow.registered_model
    if gate.moved:
        champion = f"moved to version {gate.version}"
    elif gate.champion_version is None:
        champion = "not set"
    else:
        champion = f"stays on version {gate.champion_version}"
    against = f" (champion: {gate.champion:.4f})" if gate.champion is not None else ""
    out.print(
        f"Registered {name} version {gate.version}; {gate.metric} {gate.candidate:.4f}"
        f"{against}. {gate.reason[:1].upper()}{gate.reason[1:]}: champion {champion}."
    )


def _config(settings: Settings, cutoffs: tuple[date, ...] | None):
    """The generator's parameters, from settings (flags already merged in)."""
    from features.synthetic import SyntheticConfig

    syn = settings.synthetic
    return SyntheticConfig(
        users=syn.users,
        seed=syn.seed,
        start=syn.start,
        days=syn.days,
        horizon_days=settings.labels.horizon_days,
        legacy_share=syn.legacy_share,
        cutoffs=cutoffs,
    )


def _generate(settings: Settings, folder: Path, cutoffs: tuple[date, ...] | None, overwrite: bool):
    from features.synthetic import generate

    with progress_bars() as report:
        return generate(_config(settings, cutoffs), folder, overwrite=overwrite, progress=report)


def _print_generation(summary) -> None:
    rows = [
        ("output", summary.out),
        ("users", summary.users),
        ("subscribers", summary.subscribers),
        ("sandbox testers", summary.sandbox_testers),
        ("files (legacy vocabulary)", f"{summary.files:,} ({summary.legacy_files:,})"),
        ("header-only files", summary.header_only_files),
        ("rows", summary.rows),
        *((f"  {kind} rows", n) for kind, n in sorted(summary.rows_by_activity.items())),
        ("duplicated rows", summary.duplicates),
        ("late rows", summary.late_rows),
        *((f"malformed: {kind}", n) for kind, n in summary.injected.items()),
        (
            "cut-offs",
            f"{len(summary.cutoffs)} ({summary.cutoffs[0]} .. {summary.cutoffs[-1]})"
            if summary.cutoffs
            else "none",
        ),
        ("ground-truth rows", summary.truth_rows),
        ("mean true churn probability", summary.mean_churn_probability),
        ("realised churn rate", summary.realised_churn_rate),
        ("seconds", round(summary.seconds, 1)),
    ]
    out.print(table("Generated", rows))


@app.command("braze-emulator")
def braze_emulator(
    ctx: typer.Context,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (default: braze.url's, else 4010)."),
    ] = None,
    rate_limit: Annotated[
        str, typer.Option(help="Requests per window, e.g. 3000/3s (Braze's documented default).")
    ] = "3000/3s",
    faults: Annotated[
        str | None,
        typer.Option(
            help="Seeded faults, e.g. seed=7,5xx=0.02,slow=0.01:2,drop=0.01,storm=0.005:5 "
            "(probability per request; slow=P:SECONDS, storm=P:LENGTH)."
        ),
    ] = None,
    header_mode: Annotated[
        str,
        typer.Option(help="X-RateLimit-Reset as an epoch (default) or as seconds (MAU contracts)."),
    ] = "epoch",
    profiles: Annotated[
        Path | None,
        typer.Option(
            help="Scores or user file (Parquet/CSV with user_id): these profiles exist already.",
            dir_okay=False,
            exists=True,
        ),
    ] = None,
) -> None:
    """Run a local Braze /users/track emulator (spec-true limits, bodies, headers and faults).

    It accepts the key in BRAZE_API_KEY (or `emulator-key` when that is unset) and serves what
    landed on GET /_emulator/profiles and /_emulator/stats. Stop it with Ctrl-C.
    """
    from urllib.parse import urlsplit

    from serving.emulator import (
        Emulator,
        EmulatorConfig,
        EmulatorConfigError,
        parse_faults,
        parse_rate_limit,
    )

    settings = ctx.obj.settings()
    limit, window = parse_rate_limit(rate_limit)
    if header_mode not in ("epoch", "seconds"):
        raise typer.BadParameter("expected 'epoch' or 'seconds'", param_hint="--header-mode")
    key = settings.braze.api_key.get_secret_value() if settings.braze.api_key else "emulator-key"
    config = EmulatorConfig(
        api_keys=frozenset({key}),
        burst_limit=limit,
        burst_window_s=window,
        header_mode=header_mode,
        faults=parse_faults(faults),
    )
    if port is None:
        configured = urlsplit(settings.braze.url)
        port = configured.port if configured.hostname in ("127.0.0.1", "localhost") else None
    port = 4010 if port is None else port
    users = _user_ids(profiles) if profiles is not None else []
    try:
        emulator = Emulator(config, port=port)
    except OSError as exc:
        raise EmulatorConfigError(
            f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror or exc}); "
            "pick another port (0 = any free one)"
        ) from None
    emulator.add_profiles(users)
    out.print(
        table(
            "Braze emulator",
            [
                ("POST", f"{emulator.url}/users/track"),
                ("inspect", f"{emulator.url}/_emulator/stats, /_emulator/profiles"),
                ("API key", "BRAZE_API_KEY" if settings.braze.api_key else "emulator-key"),
                ("rate limit", f"{limit:,} requests per {window:g} s, reset as {header_mode}"),
                ("faults", faults or "none"),
                ("existing profiles", len(emulator.profiles())),
            ],
        )
    )
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop: same as Ctrl-C
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stats = emulator.stats()
        emulator.stop()
    rows = [
        (name.replace("_", " "), value)
        for name, value in stats.items()
        if name not in ("statuses", "faults")
    ]
    rows += [(f"  HTTP {code}", n) for code, n in stats["statuses"].items()]
    rows += [(f"  injected {fault}", n) for fault, n in stats["faults"].items()]
    out.print(table("Emulator served", [*rows, ("seconds", round(time.perf_counter() - started))]))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _user_ids(path: Path) -> list[str]:
    """The user_id column of a Parquet or CSV file."""
    import pandas as pd

    from features.schema import USER_ID
    from serving.emulator import EmulatorConfigError

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={USER_ID: str})
    except (OSError, ValueError) as exc:
        raise EmulatorConfigError(f"--profiles {path}: cannot read: {exc}") from None
    if USER_ID not in frame.columns:
        found = ", ".join(map(str, frame.columns)) or "no columns"
        raise EmulatorConfigError(f"--profiles {path}: no {USER_ID!r} column (found {found})")
    return frame[USER_ID].dropna().astype(str).tolist()


@app.command()
def sync(
    ctx: typer.Context,
    scores: Annotated[
        Path,
        typer.Option(
            "--scores",
            help="Scores file: Parquet or CSV with user_id, churn_probability.",
            dir_okay=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send and record nothing.")
    ] = False,
) -> None:
    """Push the churn buckets that changed to Braze /users/track, and record what it accepted.

    Only users whose bucket (or extra attribute) differs from what Braze acknowledged are sent;
    users no longer scored get the attribute set to null once. Safe to re-run after a crash.
    """
    from serving.sync import read_scores, read_scores_policy

    settings = ctx.obj.settings()
    frame = read_scores(scores)
    # a file from `lapse rescore` carries the model's bounds: a retry sends the same buckets
    policy = read_scores_policy(scores)
    if policy is not None:
        policy = replace(policy, hysteresis=settings.buckets.hysteresis)
        bounds = ", ".join(f"{name} >= {bound:.4g}" for name, bound in policy.cuts)
        out.print(f"Buckets: the model's bounds recorded in {scores.name} ({bounds})")
    _push(settings, frame, dry_run, policy)


@app.command()
def rescore(
    ctx: typer.Context,
    store: Annotated[
        Path | None,
        typer.Option(help="Event store (default: store.path).", file_okay=False),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Score subscribers active at the start of this day (UTC; default: today).",
        ),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Scores file to write, .parquet or .csv "
            "(default: <store>/scores/scores-<as-of>.parquet).",
            dir_okay=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Score and show what would be sent; send nothing.")
    ] = False,
) -> None:
    """Score every active subscriber with the champion model, then push changed buckets to Braze.

    The scores file is written first (user_id, platform, churn_probability, bucket, reasons), so
    a failed push can be retried with `lapse sync --scores FILE`.
    """
    from datetime import UTC

    settings = ctx.obj.settings(store={"path": store})
    when = as_of.date() if as_of else datetime.now(UTC).date()  # the edge is where "now" lives
    _rescore(settings, when, out_file, dry_run)


def _rescore(settings: Settings, when: date, out_file: Path | None, dry_run: bool):
    """Score with the champion, write the scores file, sync it; returns the scores frame."""
    from features import FeatureConfig
    from features import schema as s
    from serving.rescore import load_champion, write_scores
    from serving.rescore import rescore as run_rescore

    model = load_champion(settings.mlflow.tracking_uri, settings.mlflow.registered_model)
    result = run_rescore(settings.store.path, when, model, FeatureConfig(include_sandbox=False))
    # a dry run writes the scores file only where asked (--out): the day's file may be a real
    # run's, still waiting for a `lapse sync` retry
    if dry_run and out_file is None:
        path = "(not written: dry run; --out FILE writes one)"
    else:
        path = write_scores(
            result.scores,
            out_file or settings.store.path / "scores" / f"scores-{when}.parquet",
            model.bucket_policy_,
        )
    counts = result.scores[s.BUCKET].value_counts()
    out.print(
        table(
            "Rescored",
            [
                ("as of", f"{result.as_of:%Y-%m-%d %H:%M} UTC"),
                ("events read", result.events),
                ("active subscribers scored", len(result.scores)),
                *((f"  model bucket {name}", int(n)) for name, n in counts.items()),
                ("mean churn probability", float(result.scores[s.CHURN_PROBABILITY].mean())),
                ("scores file", path),
            ],
        )
    )
    # Braze gets the buckets the model was evaluated with, kept steady by today's hysteresis.
    policy = replace(model.bucket_policy_, hysteresis=settings.buckets.hysteresis)
    _push(settings, result.scores, dry_run, policy)
    return result.scores


def _push(settings: Settings, frame, dry_run: bool, policy=None) -> None:
    """Sync a scores frame to Braze and print what happened (shared by sync and rescore).

    `policy` replaces the [buckets] policy (rescore passes the champion's own).
    """
    import json

    from serving.sync import SyncConfig
    from serving.sync import sync as run_sync

    config = SyncConfig.from_settings(settings)
    if policy is not None:
        config = replace(config, policy=policy)
    key = settings.braze.api_key.get_secret_value() if settings.braze.api_key else None
    with progress_bars() as report:
        result = run_sync(frame, config, key, dry_run=dry_run, progress=report)
    if dry_run:
        moves = sorted(result.transitions.items(), key=lambda kv: (-kv[1], kv[0]))
        out.print(
            table(
                f"Would change {config.attribute} (dry run: nothing sent)",
                [(f"{a} -> {b}", n) for (a, b), n in moves],
                columns=("from -> to", "users"),
            )
        )
        request = {
            "method": "POST",
            "url": f"{config.client.url.rstrip('/')}/users/track",
            "headers": result.headers,
            "body": {"attributes": result.sample},
        }
        if result.sample:
            out.print("Sample request (first users of the first batch):")
            out.print_json(json.dumps(request))
        else:
            out.print("Nothing would be sent: Braze already holds every value.")
    failed = sum(result.failed.values())
    rows = [
        ("users scored", result.users_scored),
        ("changed (to send)", result.changed),
        ("  of which set to null (no longer scored)", result.nulled),
        ("batches", result.batches),
        ("sent", result.sent),
        ("acknowledged", result.acknowledged),
        ("failed", failed),
        *((f"  {reason}", n) for reason, n in sorted(result.failed.items())),
        ("outcome unknown (sent again next run)", result.unknown),
        (  # Braze bills no write to a profile it does not have, and does not say so
            "data points, at most" + (" (would use)" if dry_run else ""),
            result.data_points,
        ),
        ("requests", result.requests),
        ("429s waited", result.rate_limited),
        ("seconds waiting for rate limits", round(result.waited_s, 1)),
        ("run", "dry run" if dry_run else f"{result.run_id}" + (" (resumed)" * result.resumed)),
        ("seconds", round(result.seconds, 1)),
    ]
    out.print(table("Braze sync" + (" (dry run)" if dry_run else ""), rows))


#: Errors a user can fix: shown as one line, exit code 1.
def _user_errors() -> tuple[type[BaseException], ...]:
    from features import FeatureInputError
    from features.ingest import IngestError
    from features.ingest.store import StoreError
    from features.synthetic import GenerationError
    from serving.braze_client import BrazeError
    from serving.buckets import BucketPolicyError
    from serving.emulator import EmulatorConfigError
    from serving.ledger import LedgerError
    from serving.rescore import RescoreError
    from serving.sync import ScoresFileError
    from training.pipeline import FeatureSchemaError
    from training.splits import DataSufficiencyError
    from training.train import TrainingInputError
    from training.tune import TuningError

    return (
        SettingsError,
        GenerationError,
        IngestError,
        StoreError,
        FeatureInputError,
        BrazeError,
        BucketPolicyError,
        EmulatorConfigError,
        LedgerError,
        ScoresFileError,
        RescoreError,
        DataSufficiencyError,
        TrainingInputError,
        TuningError,
        FeatureSchemaError,
        OSError,
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, tracebacks only with -v/--verbose."""
    args = sys.argv[1:] if argv is None else list(argv)
    verbose = "-v" in args or "--verbose" in args
    if verbose:  # accepted anywhere, as the error hint suggests: `lapse sync ... -v` too
        args = ["--verbose", *(a for a in args if a not in ("-v", "--verbose"))]
    try:
        app(args=args, prog_name="lapse")  # usage errors and ^C exit here, the typer way
    except Exception as exc:  # noqa: BLE001 - the edge where every failure becomes one line
        if verbose:
            traceback.print_exc()
        known = isinstance(exc, _user_errors())
        message = str(exc) if known else f"unexpected {type(exc).__name__}: {exc}"
        hint = "" if verbose or known else " (run with -v for the traceback)"
        err.print(f"[red]error:[/red] {escape(message + hint)}", highlight=False, soft_wrap=True)
        sys.exit(1)
