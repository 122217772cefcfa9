"""lapse.console: summary tables show numbers readably and nothing as Python's None."""

from __future__ import annotations

from rich.console import Console

from lapse.console import table


def test_a_missing_value_is_a_dash_and_numbers_are_grouped() -> None:
    """Regression (hostile review): `realised churn rate │ None` in `lapse generate`."""
    console = Console(width=80, record=True)
    console.print(table("t", [("none", None), ("int", 12345), ("float", 0.123456), ("bool", True)]))
    text = console.export_text()
    none_row = next(line for line in text.splitlines() if "none" in line)
    assert "None" not in text and none_row.rstrip(" │").endswith("-")
    assert "12,345" in text and "0.1235" in text and "True" in text
