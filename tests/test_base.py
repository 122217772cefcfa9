"""base: the error base, database URLs (parsing, masking, SQLite paths and pragmas)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from base import resolve_sqlite_url, safe_url, sqlite_file, sqlite_pragmas


def test_sqlite_file_reads_urls_as_sqlalchemy_does(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path}/l.db") == tmp_path / "l.db"
    assert sqlite_file("sqlite:///relative.db").name == "relative.db"
    assert sqlite_file("sqlite+pysqlite:///x.db").name == "x.db"
    for other in ("sqlite://", "sqlite:///:memory:", "postgresql://u@h/db", "not a url"):
        assert sqlite_file(other) is None


@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="@/:?#"), min_size=1))
def test_safe_url_never_shows_the_password(password: str) -> None:
    url = f"postgresql+psycopg://lapse:{password}@db.internal:5432/ledger"
    shown = safe_url(url)
    assert "***" in shown and f":{password}@" not in shown
    assert shown.startswith("postgresql+psycopg://lapse:") and shown.endswith("/ledger")


def test_safe_url_masks_even_a_url_sqlalchemy_cannot_parse() -> None:
    shown = safe_url("postgresql://u:pw@h:abc/db")
    assert "pw" not in shown.replace("postgresql", "") and "***" in shown


def test_relative_sqlite_urls_are_anchored_and_others_kept(tmp_path: Path) -> None:
    assert resolve_sqlite_url("sqlite:///a.db", tmp_path) == f"sqlite:///{tmp_path / 'a.db'}"
    assert resolve_sqlite_url("sqlite:///a.db?timeout=5", tmp_path).endswith("a.db?timeout=5")
    for kept in ("sqlite:////abs/a.db", "sqlite:///:memory:", "sqlite://", "postgresql://h/db"):
        assert resolve_sqlite_url(kept, tmp_path) == kept


def test_sqlite_pragmas_put_every_connection_in_wal_mode(tmp_path: Path) -> None:
    engine = sqlite_pragmas(sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    engine.dispose()
