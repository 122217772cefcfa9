"""What every Lapse package stands on, importing nothing of ours.

The base of every error a user can fix (``LapseError``), the base of every settings section
(``Section``), and the database URLs the ledger, Optuna and MLflow share: parsing, masking the
password, and the SQLite pragmas that let several writers wait instead of fail.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # SQLAlchemy is imported where a URL is parsed: settings stay cheap to load
    import sqlalchemy as sa

__all__ = [
    "SHOWN_CHARS",
    "DatabaseUrl",
    "LapseError",
    "Section",
    "lazy_names",
    "shown",
    "db_url_problem",
    "resolve_sqlite_url",
    "safe_url",
    "sqlite_file",
    "sqlite_pragmas",
]

_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?):///(.*)$", re.IGNORECASE)


class LapseError(Exception):
    """An error the user can fix; its message says what was found, what was expected, and where.

    Every package's own errors derive from it, so a caller (the CLI, the service) tells a user's
    mistake from a bug by this one class.
    """


#: Characters of a client's value an error message repeats, at most (``shown``).
SHOWN_CHARS = 80


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters with an ellipsis and the
    value's own length: a client's 1 MB string is not echoed back into answers and logs."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:limit]}… ({size:,} characters)"


class Section(BaseModel):
    """A section of the settings (``[store]``, ``[braze]``, ...): typed, immutable, no unknown keys.

    Each package defines the sections it reads, with their defaults; ``lapse.settings.Settings``
    composes them, so every default is written once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's ``__getattr__`` that imports each public name from its home module on first
    use, so importing the package (or its light settings module) stays cheap."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    return __getattr__


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (SQLAlchemy's parsing), or None for other databases
    and in-memory SQLite."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


_URL_PORT = re.compile(r"^[\w+.-]+://(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#@]*):([^/?#@]*)(?=[/?#]|$)")


def db_url_problem(url: str, *, parse: bool = True) -> str | None:
    """Why ``url`` cannot be a database URL (one phrase, no password), or None. The port is
    checked without importing SQLAlchemy (settings stay cheap to load); ``parse`` also asks
    SQLAlchemy's parser."""
    port = _URL_PORT.match(url)
    if port and port.group(1) and not port.group(1).isdigit():
        return f"the port {port.group(1)!r} is not a number (expected e.g. host:5432)"
    if not parse:
        return None
    import sqlalchemy as sa

    try:
        sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return (
            "not a database URL (expected e.g. sqlite:///ledger.db or "
            "postgresql+psycopg://user@host:5432/db)"
        )
    except ValueError as exc:
        return f"cannot parse it ({exc})"
    return None


def _checked_db_url(url: str) -> str:
    problem = db_url_problem(url, parse=False) if "://" in url else None
    if problem:
        raise ValueError(problem)
    return url


#: A settings value that must be a usable database (or tracking server) URL; checked without
#: SQLAlchemy, so a bad port is named where it was set when the settings load.
DatabaseUrl = Annotated[str, Field(min_length=1), AfterValidator(_checked_db_url)]


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages, logs and MLflow params."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def resolve_sqlite_url(url: str, base: Path) -> str:
    """Turn a relative ``sqlite:///name.db`` into ``sqlite:////<base>/name.db``; leave other URLs.

    Three slashes mean a path relative to the process's cwd, so URLs read from a file are pinned.
    """
    match = _SQLITE_URL.match(url)
    if match is None:
        return url
    scheme, rest = match.groups()
    db, sep, query = rest.partition("?")
    if not db or db.startswith("/") or db == ":memory:" or db.startswith("file:"):
        return url
    path = Path(db).expanduser()
    path = path if path.is_absolute() else (Path(base) / path).resolve()
    return f"{scheme}:///{path}{sep}{query}"


def sqlite_pragmas(engine: sa.Engine) -> sa.Engine:
    """Run every new connection of a SQLite ``engine`` in WAL mode without a sync per commit, so
    readers never block the writer and frequent small commits stay cheap; other engines pass."""
    import sqlalchemy as sa

    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _pragmas)
    return engine


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
