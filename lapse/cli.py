"""The `lapse` command line: a thin edge that loads settings once and calls the packages."""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from datetime import date, datetime
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
) -> None:
    """Run the flow end to end on the embedded defaults.

    So far: generate a synthetic app's Adjust export and check its ground truth against the
    outcomes it realised. Later stages (ingest, features, train, serve, sync) join as they land.
    """
    from features.synthetic import GenerationError
    from features.synthetic.calibration import check_truth

    settings = ctx.obj.settings(synthetic={"users": users})
    if not _config(settings, None).observed_cutoff_days():
        days, horizon = settings.synthetic.days, settings.labels.horizon_days
        raise GenerationError(
            f"demo needs an outcome inside the data: with synthetic.days = {days} no cut-off's "
            f"{horizon}-day horizon ends in time; raise synthetic.days or lower labels.horizon_days"
        )
    folder = settings.store.path / "synthetic"
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
    out.print(f"Raw Adjust export in {folder / 'raw'}; ground truth in {folder / 'truth'}.")


@app.command()
def ingest(
    ctx: typer.Context,
    sources: Annotated[
        list[Path],
        typer.Argument(help="Adjust CSV exports (.csv / .csv.gz), callback logs, or folders of them."),
    ],
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Event store folder (default: store.path).", file_okay=False),
    ] = None,
) -> None:
    """Add Adjust exports to the Parquet event store: validate, deduplicate, quarantine bad rows.

    Files the store already holds are skipped, so running it twice adds nothing the second time.
    """
    from features.ingest import ingest as run_ingest

    settings = ctx.obj.settings(store={"path": store})
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


#: Errors a user can fix: shown as one line, exit code 1.
def _user_errors() -> tuple[type[BaseException], ...]:
    from features.ingest import IngestError
    from features.store import StoreError
    from features.synthetic import GenerationError

    return (SettingsError, GenerationError, IngestError, StoreError, OSError)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, tracebacks only with -v/--verbose."""
    args = sys.argv[1:] if argv is None else list(argv)
    verbose = "-v" in args or "--verbose" in args
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
