"""Terminal output for the CLI: progress bars on stderr, summary tables on stdout."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console()
err = Console(stderr=True)


@contextmanager
def progress_bars() -> Iterator:
    """Yield ``report(stage, done, total)`` that draws one bar per stage while the block runs."""
    bars = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if not tasks:
            bars.start()  # only once there is something to show
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    try:
        yield report
    finally:
        if tasks:
            bars.stop()


def table(
    title: str, rows: Sequence[tuple[str, object]], columns: tuple[str, str] = ("", "")
) -> Table:
    """A two-column summary table; numbers get thousands separators."""
    t = Table(title=title, title_justify="left", show_header=any(columns))
    t.add_column(columns[0], style="bold")
    t.add_column(columns[1], justify="right")
    for name, value in rows:
        if value is None:
            text = "-"
        elif isinstance(value, bool):
            text = str(value)
        elif isinstance(value, int):
            text = f"{value:,}"
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        t.add_row(name, text)
    return t


class LazyModule:
    """A module imported on first attribute access (``jobs.train`` imports ``lapse.jobs``):
    the CLI parses its arguments and answers ``--help`` without the heavy libraries."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str):
        import importlib

        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name}>"
