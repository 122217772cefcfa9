"""The `lapse` command line: a thin edge that loads settings once and calls the packages."""

from __future__ import annotations

import signal
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from base import LapseError
from features.ingest import IngestError
from lapse import __version__
from lapse.console import LazyModule, err, out, progress_bars
from lapse.settings import Settings

#: The job and rendering layers import MLflow, scikit-learn, LightGBM and BentoML (~7 s of
#: CPU here): loaded when a command runs, so `--help`, `--version` and a usage error stay fast.
jobs = LazyModule("lapse.jobs")
render = LazyModule("lapse.render")


class ExitCode(IntEnum):
    """Every exit status `lapse` returns; docs/operations.md says what each means to an
    operator and how a failed run resumes."""

    #: The command did its work.
    OK = 0
    #: The command failed (a one-line reason on stderr): a LapseError (what was found, what
    #: was expected, where), an OS error, or a bug.
    FAILED = 1
    #: The command line was wrong (unknown option, missing argument, bad value): nothing ran.
    USAGE = 2
    #: `lapse rescore --fail-on-drift` found drift past monitoring.psi_threshold: the scores
    #: were written and pushed; a scheduler can still tell.
    DRIFT = 3
    #: Ctrl-C (SIGINT) stopped the command, after it stopped what it started (typer's status,
    #: 128 + SIGINT as in shells); it resumes as FAILED does.
    INTERRUPTED = 130


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
    shape: Annotated[
        str | None,
        typer.Option(
            help="Shape of the app: default, no-trials, monthly, annual, late-renewals, social, "
            "foreign (synthetic.shape; see docs/synthetic-data.md)."
        ),
    ] = None,
    drift: Annotated[
        str | None,
        typer.Option(
            help="Change the app half-way through, for monitoring to catch: none (default) or "
            "acquisition (most new installs from paid social networks; synthetic.drift)."
        ),
    ] = None,
) -> None:
    """Write a synthetic app's Adjust raw export, with the true churn probability per subscriber."""
    settings = ctx.obj.settings(
        synthetic={
            "shape": shape,
            "drift": drift,
            "users": users,
            "seed": seed,
            "start": start.date() if start else None,
            "days": days,
            "legacy_share": legacy_share,
        },
        labels={"horizon_days": horizon_days},
    )
    cutoffs = [c.date() for c in cutoff] if cutoff else None
    with progress_bars() as report:
        summary = jobs.generate(settings, out_dir, cutoffs, overwrite, report)
    render.generation(summary)


@app.command()
def demo(
    ctx: typer.Context,
    users: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="App users to simulate (default synthetic.users; below a few thousand the "
            "hold-out may hold fewer than training.min_churners churners and training stops).",
        ),
    ] = None,
    trials: Annotated[
        int, typer.Option(min=1, help="Optuna trials (the demo keeps tuning short).")
    ] = 10,
) -> None:
    """Run the whole flow on the embedded defaults, in <store.path>/demo (replaced each run).

    Generate a synthetic app's Adjust export (with its true churn probabilities), ingest it,
    train and register the model (in the demo folder's own MLflow), rescore every active subscriber
    with the champion and push the buckets to a local Braze emulator, then sync once more to
    show that nothing unchanged is sent twice; last, start the HTTP service and score one
    subscriber by /score_events and /lookup.
    """
    settings = ctx.obj.settings(synthetic={"users": users})
    name = settings.mlflow.registered_model
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop: clean up as on Ctrl-C
    with progress_bars() as report:
        result = jobs.demo(
            settings,
            trials,
            report,
            on_step=lambda title, done: render.demo_step(title, done, name),
        )
    render.demo(result)


@app.command()
def ingest(
    ctx: typer.Context,
    sources: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="SRC",
            help="Adjust CSV exports (.csv / .csv.gz), callback logs, or folders of them.",
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Event store folder (default: store.path).", file_okay=False),
    ] = None,
    reprocess_quarantine: Annotated[
        bool,
        typer.Option(
            "--reprocess-quarantine",
            help="Run the quarantined rows through today's rules, once each: rows that pass now "
            "are stored and leave the quarantine (after a rule or setting was fixed).",
        ),
    ] = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="After the ingest (or alone, without SRC), rewrite every month holding more "
            "than one event file as one; months above store.compact_files are always rewritten.",
        ),
    ] = False,
) -> None:
    """Add Adjust exports to the Parquet event store: validate, deduplicate, quarantine bad rows.

    Files seen before (the same bytes) are skipped, so running it twice adds nothing the second
    time; the summary says what happened to those that were rejected or quarantined then.
    Times before ingest.earliest or more than ingest.max_future_days after now are quarantined.
    """
    settings = ctx.obj.settings(store={"path": store})
    now = datetime.now(UTC)  # the edge is where "now" lives
    if reprocess_quarantine and sources:
        raise typer.BadParameter(
            "give SRC files or folders, or --reprocess-quarantine, not both", param_hint="SRC"
        )
    if reprocess_quarantine and compact:
        raise typer.BadParameter(
            "give --reprocess-quarantine or --compact, not both (run them one after the other)",
            param_hint="--compact",
        )
    if not reprocess_quarantine and not sources and not compact:
        raise typer.BadParameter(
            "nothing to ingest: give SRC files or folders (or --reprocess-quarantine, --compact)",
            param_hint="SRC",
        )
    if compact and not sources:
        with progress_bars() as report:
            render.compaction(jobs.compact(settings, report))
        return
    if reprocess_quarantine:
        summary = jobs.reprocess_quarantine(settings, now)
    else:
        with progress_bars() as report:
            summary = jobs.ingest(settings, sources or [], now, report, compact=compact)
    render.ingest(summary)
    if summary.rows_read and not summary.rows_stored and not summary.duplicates:
        # every row refused: most likely a rule or setting (ingest.earliest, the id column)
        raise IngestError(
            f"all {summary.rows_read:,} rows read were quarantined (reasons above); nothing was "
            "stored. Fix the files or the [ingest] settings, then `lapse ingest "
            "--reprocess-quarantine`"
        )
    if summary.bad_files:  # everything readable is stored; the exit status tells cron the rest
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
    settings = ctx.obj.settings(store={"path": store})
    with progress_bars() as report:
        result = jobs.features(settings, as_of.date(), out_file, report)
    render.features(result)


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
    if_due: Annotated[
        bool,
        typer.Option(
            "--if-due",
            help="Train only when due: no champion, champion older than training.max_age_days, "
            "the newest backtest below monitoring.min_roc_auc or above monitoring.max_ece, or "
            "drift flagged by the newest rescore; else say why not and exit 0.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes running Optuna trials on one shared study (optuna.workers; more "
            "than 1 needs a PostgreSQL optuna.storage).",
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
        optuna={"n_trials": trials, "timeout_s": timeout, "workers": workers},
        labels={"horizon_days": horizon},
        training={"truth_path": truth.resolve() if truth else None},
    )
    # a scheduler's stop: the run is marked KILLED and no half-registered version is left, as on
    # Ctrl-C (the default SIGTERM ends the process at once, leaving the MLflow run RUNNING)
    signal.signal(signal.SIGTERM, _interrupt)
    if if_due:
        with progress_bars() as report:
            outcome = jobs.train_if_due(settings, datetime.now(UTC), report)
        render.if_due(outcome, settings.mlflow.registered_model)
        return
    with progress_bars() as report:
        result = jobs.train(settings, report)
    render.training(result, settings.mlflow.registered_model)


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
    settings = ctx.obj.settings()
    emulator = jobs.emulator(settings, port, rate_limit, faults, header_mode, profiles)
    render.emulator_started(
        emulator.url,
        "BRAZE_API_KEY" if settings.braze.api_key else "emulator-key",
        f"{emulator.config.burst_limit:,} requests per {emulator.config.burst_window_s:g} s, "
        f"reset as {emulator.config.header_mode}",
        faults,
        len(emulator.profiles()),
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
    render.emulator_stopped(stats, time.perf_counter() - started)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
    settings = ctx.obj.settings()
    with progress_bars() as report:
        outcome = jobs.sync(settings, scores, dry_run, report)
    render.sync(outcome, from_file=scores.name)


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
    fail_on_drift: Annotated[
        bool,
        typer.Option(
            "--fail-on-drift",
            help=f"Exit with status {ExitCode.DRIFT.value} when a feature or the score drifted "
            "past monitoring.psi_threshold (after the scores are written and pushed).",
        ),
    ] = False,
) -> None:
    """Score every active subscriber with the champion model, then push changed buckets to Braze.

    The scores file is written first (user_id, platform, churn_probability, bucket, reasons), so
    a failed push can be retried with `lapse sync --scores FILE`; the scores are also kept in the
    store's scores history (once per day and model version) for `lapse backtest`. The drift of
    the scored population from the model's training data (PSI per feature and of the score) is
    shown and kept in <store>/monitoring/drift/.
    """
    settings = ctx.obj.settings(store={"path": store})
    when = as_of.date() if as_of else datetime.now(UTC).date()  # the edge is where "now" lives
    with progress_bars() as report:
        outcome = jobs.rescore(settings, when, out_file, dry_run, report)
    render.rescore(outcome)
    if fail_on_drift and outcome.result.drift.drifted:
        flagged = ", ".join(outcome.result.drift.flagged)
        err.print(
            f"drift: {flagged} past PSI {settings.monitoring.psi_threshold:g} "
            f"(exit status {ExitCode.DRIFT.value}, --fail-on-drift)",
            highlight=False,
        )
        raise typer.Exit(ExitCode.DRIFT.value)


@app.command()
def backtest(
    ctx: typer.Context,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="First scoring day to check (UTC)."
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="Last scoring day to check (UTC)."
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="HTML report to write (default: <store>/reports/backtest-<newest day>.html).",
            dir_okay=False,
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="Event store (default: store.path).", file_okay=False),
    ] = None,
) -> None:
    """Check every past rescore against what really happened: realised ROC/PR AUC, Brier,
    calibration (ECE), lift quality, top-decile lift and churn per bucket, per scoring day.

    Scoring days come from the scores history every `lapse rescore` keeps in the store; a day
    is checked once its labels.horizon_days (plus the renewal leeway) have passed by the newest
    stored event, else it is listed as pending. One run goes to the MLflow experiment
    monitoring.experiment; the report is one HTML file that opens with no server.
    """
    settings = ctx.obj.settings(store={"path": store})
    with progress_bars() as progress:
        outcome = jobs.backtest(
            settings,
            since.date() if since else None,
            until.date() if until else None,
            report,
            progress,
        )
    render.backtest(outcome)


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: serving.port).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address (default: serving.host).")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="MLflow model URI (default: models:/<mlflow.registered_model>@champion).",
        ),
    ] = None,
    build: Annotated[
        bool,
        typer.Option(
            "--build",
            help="Instead of serving: build a Bento (bentofile.yaml) that carries the model; "
            "`bentoml serve <tag>` runs it, `bentoml containerize <tag>` makes an image.",
        ),
    ] = False,
) -> None:
    """Serve churn scores over HTTP (BentoML): /score, /score_events, /lookup, /metadata.

    The OpenAPI page is at / (its spec at /docs.json); /livez and /readyz are the probes.
    Ctrl-C stops it.
    """
    import threading

    from lapse import serve as serving

    settings = ctx.obj.settings()
    if build:
        built = serving.build_bento(settings, model)
        out.print(
            f"Built Bento {built.tag} carrying {built.info.label} (BentoML model "
            f"{built.model_tag}); run it with `bentoml serve {built.tag}`"
        )
        return
    with progress_bars() as report:
        server = serving.start_server(
            settings, host, port, model, waiting=lambda s: report("starting", min(int(s), 60), 60)
        )
    out.print(f"Serving {server.info.label} on {server.url} (OpenAPI page: {server.url}/)")

    def relay() -> None:  # the service's own log, from here on
        with server.log.open(errors="replace") as log:
            log.seek(0, 2)
            while server.process.poll() is None:
                line = log.readline()
                if line:
                    err.print(line.rstrip(), highlight=False, markup=False)
                else:
                    time.sleep(0.2)

    threading.Thread(target=relay, daemon=True).start()
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    try:
        code = server.process.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        serving.stop_server(server.process)
        log = server.log.read_text(errors="replace") if code else ""
        server.log.unlink(missing_ok=True)
    if code:
        err.print(log[-3000:], highlight=False, markup=False)
        raise serving.RequestError(f"the service stopped with exit status {code} (log above)")
    out.print(f"Stopped after {time.perf_counter() - started:.0f} s.")


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
        known = isinstance(exc, (LapseError, OSError))
        message = str(exc) if known else f"unexpected {type(exc).__name__}: {exc}"
        hint = "" if verbose or known else " (run with -v for the traceback)"
        err.print(f"[red]error:[/red] {escape(message + hint)}", highlight=False, soft_wrap=True)
        sys.exit(ExitCode.FAILED)


if __name__ == "__main__":
    main()
