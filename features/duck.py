"""DuckDB connections for the feature and ingest code: a database of its own per use (the
default), or a cursor on the process's one long-lived database (``shared``).

Opening a DuckDB database costs 17-40 ms on this machine, more than the whole work of a service
request for one subscriber (its event keys, its feature aggregate); a cursor on the shared one
(a connection of its own, ~10 µs) keeps its registered inputs and temporary views to itself.
The shared database runs each query on the calling thread only (``threads = 1``): it serves
request-sized inputs, where handing a query to DuckDB's worker threads costs more in wake-ups
than it saves. Its state does not survive a fork, so by default each use opens and closes a
database of its own; a forked child opens a new shared one on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Environment variable: the threads of each database ``connect`` opens (unset: DuckDB's
#: default, one per core); a ``local:N`` cluster sets it in its workers (``features.cluster``).
DUCKDB_THREADS = "LAPSE_DUCKDB_THREADS"

_DATABASE: Any = None
_LOCK = threading.Lock()
#: Databases inherited across a fork: kept referenced, since closing one in the child would
#: wait for the parent's DuckDB threads, which a fork does not copy.
_INHERITED: list[object] = []


def shared_database() -> Any:
    """The process's long-lived in-memory DuckDB, opened on first use (one query thread)."""
    global _DATABASE
    with _LOCK:
        if _DATABASE is None:
            import duckdb

            _DATABASE = duckdb.connect(config={"threads": 1})
        return _DATABASE


def connect(shared: bool = False) -> Any:
    """A DuckDB connection: a cursor on the shared database, or a database of its own (closed
    when the connection is closed or collected)."""
    if shared:
        return shared_database().cursor()
    import duckdb

    threads = os.environ.get(DUCKDB_THREADS, "").strip()
    return duckdb.connect(config={"threads": int(threads)}) if threads else duckdb.connect()


@contextmanager
def connection(shared: bool = False) -> Iterator[Any]:
    """``connect(shared)`` for a block, closed at its end."""
    con = connect(shared)
    try:
        yield con
    finally:
        con.close()


def _forget_database() -> None:
    """A forked child opens its own on first use: a DuckDB database does not survive a fork."""
    global _DATABASE, _LOCK
    if _DATABASE is not None:
        _INHERITED.append(_DATABASE)
    _DATABASE, _LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_database)
