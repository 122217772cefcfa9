"""docs/operations.md lists every exit status the CLI returns (lapse.cli.ExitCode) and every
command, and the CLI really returns those statuses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from lapse import jobs
from lapse.cli import ExitCode, app, main

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_page_lists_every_exit_code_and_every_command() -> None:
    text = OPERATIONS.read_text()
    codes = _table_rows(text, "| exit code |")
    assert [(int(code), name.strip("`")) for code, name, *_ in codes] == [
        (c.value, c.name) for c in ExitCode
    ]
    commands = _table_rows(text, "| command |")
    named = [re.fullmatch(r"`lapse ([\w-]+)`", row[0]).group(1) for row in commands]
    assert sorted(named) == sorted(typer.main.get_command(app).commands)
    assert all(len(row) == 4 and all(row[1:]) for row in commands)


def _status(*args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code or 0


def test_the_cli_returns_those_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _status("--version") == ExitCode.OK
    assert _status("train", "--trials", "0") == ExitCode.USAGE  # out of range: nothing ran
    assert _status("no-such-command") == ExitCode.USAGE
    out = str(tmp_path / "features.txt")  # a LapseError, refused before any work
    assert _status("features", "--as-of", "2026-01-01", "--out", out) == ExitCode.FAILED


def test_ctrl_c_returns_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jobs, "generate", interrupted)
    # the page said 1; typer exits 130
    assert _status("generate", "--out", str(tmp_path / "app")) == ExitCode.INTERRUPTED == 130
