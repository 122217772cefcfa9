"""The sync ledger: what Braze acknowledged per user, each run's outbox, and the run lock.

SQLAlchemy 2 Core on SQLite (default) or PostgreSQL. Tables, all named `<prefix><name>`:

- `state`       (user_id, attribute) -> value Braze acknowledged (JSON text; NULL = acknowledged
                null), and the run that set it.
- `rejections`  (user_id, attribute) -> the value Braze rejected and its message, so the same
                bad value is not re-sent (and re-billed) every run until the data changes.
- `runs`        one row per sync run: the digest of its input, status, times.
- `outbox`      per run and user: the batch it goes in, the attributes to send, and the outcome
                (pending / sending / acked / failed / unknown) with Braze's message.
- `uncertain`   (user_id, attribute) -> a value that was sent but never acknowledged (the answer
                was lost, or did not name the object): Braze holds it or the acknowledged one,
                nobody knows which, so the next plan sends the desired value whatever the state
                says. Cleared by Braze's next answer for that attribute.
- `target`      the Braze instance (endpoint, id field) whose acknowledgements this ledger holds,
                recorded with the first acknowledgement.
- `lock`        one row; a run holds it while it plans and sends.

A batch is marked `sending` before its request goes out; its outcome and the acknowledged values
it implies commit in one transaction after Braze answered, so a crash can only lose the answer to
the batch in flight. A resumed run sends it again; a run that supersedes it moves its users to
`uncertain`, so they are sent again with the new desired values.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from base import LapseError, db_url_problem, safe_url, sqlite_pragmas
from features.schema import USER_ID

__all__ = [
    "ACKED",
    "ATTRIBUTE",
    "VALUE",
    "FAILED",
    "PENDING",
    "SENDING",
    "UNKNOWN",
    "Ledger",
    "LedgerError",
    "LedgerLockedError",
    "OutboxRow",
    "Run",
]

PENDING, SENDING, ACKED, FAILED, UNKNOWN = "pending", "sending", "acked", "failed", "unknown"
RUN_OPEN, RUN_DONE, RUN_SUPERSEDED = "open", "done", "superseded"
_LOCK_NAME = "sync"
_NO_OUTCOME = "outcome not reported by Braze"
_SUPERSEDED_IN_FLIGHT = "in flight when the run was superseded; outcome unknown"
#: Columns of the frames `acknowledged()` and `rejected()` return, besides USER_ID.
ATTRIBUTE, VALUE = "attribute", "value"


class LedgerError(LapseError, RuntimeError):
    """The ledger database cannot be used as configured."""


class LedgerLockedError(LedgerError):
    """Another sync run holds the lock."""


@dataclass(frozen=True)
class Run:
    """One sync run as recorded."""

    run_id: int
    digest: str
    status: str
    created_at: float


@dataclass(frozen=True)
class OutboxRow:
    """One user's pending update in a run: the attributes to set (None = remove)."""

    user_id: str
    payload: dict[str, Any]


def _encode(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """Acknowledged state, outboxes and the run lock in one database (tables created on open)."""

    def __init__(self, url: str, prefix: str = "lapse_sync_") -> None:
        self.url = url
        self.prefix = prefix
        self._any_rejections: bool | None = None  # cached: only the lock holder writes
        self._unbound_target: tuple[str, str] | None = None  # recorded with the first ack
        try:
            self.engine = _engine(url)
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            raise LedgerError(
                f"ledger.url {safe_url(url)!r}: {db_url_problem(url) or exc}"
            ) from None
        self.meta = sa.MetaData()
        t = self.meta
        self.state = sa.Table(
            f"{prefix}state",
            t,
            sa.Column(USER_ID, sa.String, primary_key=True),
            sa.Column(ATTRIBUTE, sa.String, primary_key=True),
            sa.Column(VALUE, sa.Text, nullable=True),
            sa.Column("run_id", sa.Integer, nullable=False),
        )
        self.rejections = sa.Table(
            f"{prefix}rejections",
            t,
            sa.Column(USER_ID, sa.String, primary_key=True),
            sa.Column(ATTRIBUTE, sa.String, primary_key=True),
            sa.Column(VALUE, sa.Text, nullable=True),
            sa.Column("message", sa.Text, nullable=False),
            sa.Column("run_id", sa.Integer, nullable=False),
        )
        self.runs = sa.Table(
            f"{prefix}runs",
            t,
            sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("finished_at", sa.Float, nullable=True),
        )
        self.outbox = sa.Table(
            f"{prefix}outbox",
            t,
            sa.Column("run_id", sa.Integer, primary_key=True),
            sa.Column(USER_ID, sa.String, primary_key=True),
            sa.Column("batch", sa.Integer, nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("message", sa.Text, nullable=True),
            sa.Index(f"{prefix}outbox_batch", "run_id", "status", "batch"),
        )
        self.uncertain_values = sa.Table(
            f"{prefix}uncertain",
            t,
            sa.Column(USER_ID, sa.String, primary_key=True),
            sa.Column(ATTRIBUTE, sa.String, primary_key=True),
            sa.Column(VALUE, sa.Text, nullable=True),
            sa.Column("run_id", sa.Integer, nullable=False),
        )
        self.lock = sa.Table(
            f"{prefix}lock",
            t,
            sa.Column("name", sa.String(32), primary_key=True),
            sa.Column("holder", sa.String(64), nullable=True),
            sa.Column("host", sa.String(255), nullable=True),
            sa.Column("pid", sa.Integer, nullable=True),
            sa.Column("heartbeat", sa.Float, nullable=True),
        )
        self.target = sa.Table(
            f"{prefix}target",
            t,
            sa.Column("name", sa.String(32), primary_key=True),
            sa.Column("endpoint", sa.Text, nullable=False),
            sa.Column("id_field", sa.String(64), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        )
        try:
            self.meta.create_all(self.engine)
        except sa.exc.OperationalError as exc:
            raise LedgerError(
                f"ledger.url {safe_url(url)!r}: cannot open the database: {exc.orig}"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    def drop(self) -> None:
        """Remove this prefix's tables (tests and throwaway ledgers)."""
        self.meta.drop_all(self.engine)
        self.engine.dispose()

    # --- the Braze instance this ledger speaks for ----------------------------------------------
    def bind_target(self, endpoint: str, id_field: str, *, record: bool = True) -> None:
        """Check that this ledger records what ``endpoint`` acknowledged (users by ``id_field``).

        Raises LedgerError on another instance: its acknowledged state says nothing about this
        one, and diffing against it would send nothing. A ledger not bound yet is bound with
        ``record`` by the first batch Braze acknowledges (`record_batch`), never before: a
        mistyped braze.url that never answered must not claim the ledger.
        """
        endpoint = endpoint.rstrip("/")
        with self.engine.connect() as c:
            row = c.execute(sa.select(self.target)).first()
        if row is None:
            self._unbound_target = (endpoint, id_field) if record else None
            return
        self._unbound_target = None
        if (row.endpoint, row.id_field) != (endpoint, id_field):
            raise LedgerError(
                f"ledger.url {safe_url(self.url)!r} records what {row.endpoint} acknowledged "
                f"(users by {row.id_field}), but braze.url is {endpoint} (users by {id_field}); "
                "keep one ledger per Braze instance: point ledger.url at a new database"
            )

    def bound_target(self) -> tuple[str, str] | None:
        """The (endpoint, id_field) this ledger is bound to, if any."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(self.target)).first()
        return (row.endpoint, row.id_field) if row else None

    # --- the run lock --------------------------------------------------------------------------
    def acquire(self, ttl_s: float) -> str:
        """Take the run lock; returns the holder token. A lock whose holder's heartbeat is older
        than `ttl_s`, or whose process on this host is gone (e.g. SIGKILLed), is taken over."""
        me, host, pid, now = uuid.uuid4().hex, socket.gethostname(), os.getpid(), time.time()
        lock = self.lock
        for _ in range(3):
            with self.engine.begin() as c:
                row = c.execute(sa.select(lock).where(lock.c.name == _LOCK_NAME)).one_or_none()
                values = dict(holder=me, host=host, pid=pid, heartbeat=now)
                if row is None:
                    try:
                        c.execute(sa.insert(lock).values(name=_LOCK_NAME, **values))
                    except sa.exc.IntegrityError:
                        continue
                    return me
                free = (
                    row.holder is None
                    or (row.heartbeat or 0) < now - ttl_s
                    or (row.host == host and row.pid is not None and not _pid_alive(row.pid))
                )
                if not free:
                    age = now - (row.heartbeat or now)
                    raise LedgerLockedError(
                        f"another sync run holds the ledger lock (host {row.host}, pid "
                        f"{row.pid}, last seen {age:.0f} s ago); wait for it, or for "
                        f"{ttl_s:g} s without a heartbeat"
                    )
                held = (
                    lock.c.holder.is_(None) if row.holder is None else lock.c.holder == row.holder
                )
                taken = c.execute(
                    sa.update(lock).where(lock.c.name == _LOCK_NAME, held).values(**values)
                ).rowcount
                if taken == 1:
                    return me
        raise LedgerLockedError("another sync run took the ledger lock at the same moment")

    def heartbeat(self, holder: str) -> None:
        """Refresh the lock; raises LedgerLockedError if another run took it over."""
        with self.engine.begin() as c:
            n = c.execute(
                sa.update(self.lock)
                .where(self.lock.c.name == _LOCK_NAME, self.lock.c.holder == holder)
                .values(heartbeat=time.time())
            ).rowcount
        if n != 1:
            raise LedgerLockedError("the ledger lock was taken over by another run; stopping")

    def release(self, holder: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                sa.update(self.lock)
                .where(self.lock.c.name == _LOCK_NAME, self.lock.c.holder == holder)
                .values(holder=None, pid=None, heartbeat=None)
            )

    # --- acknowledged state ------------------------------------------------------------------
    def acknowledged(self) -> pd.DataFrame:
        """user_id, attribute, value (decoded; None = acknowledged null) for every known user."""
        return self._values(self.state)

    def rejected(self) -> pd.DataFrame:
        """user_id, attribute, value: values Braze rejected that have not been replaced since."""
        return self._values(self.rejections)

    def uncertain(self) -> pd.DataFrame:
        """user_id, attribute, value: values sent whose outcome is unknown, so Braze may hold
        them instead of the acknowledged ones: those of the `uncertain` table, and those of
        batches in flight (`sending`) in an open run, which a new plan supersedes."""
        ob = self.outbox
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(
                    self.uncertain_values.c[USER_ID],
                    self.uncertain_values.c[ATTRIBUTE],
                    self.uncertain_values.c[VALUE],
                )
            ).all()
            in_flight = c.execute(
                sa.select(ob.c[USER_ID], ob.c.payload)
                .join(self.runs, self.runs.c.run_id == ob.c.run_id)
                .where(ob.c.status == SENDING, self.runs.c.status == RUN_OPEN)
            ).all()
        rows = [tuple(r) for r in rows] + [
            (user, name, _encode(value))
            for user, payload in in_flight
            for name, value in json.loads(payload).items()
        ]
        return self._frame(rows).drop_duplicates([USER_ID, ATTRIBUTE], keep="last")

    def _values(self, table: sa.Table) -> pd.DataFrame:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(table.c[USER_ID], table.c[ATTRIBUTE], table.c[VALUE])).all()
        return self._frame(rows)

    @staticmethod
    def _frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                USER_ID: pd.Series([r[0] for r in rows], dtype=object),
                ATTRIBUTE: pd.Series([r[1] for r in rows], dtype=object),
                VALUE: pd.Series([_decode(r[2]) for r in rows], dtype=object),
            }
        )

    # --- runs and outboxes -------------------------------------------------------------------
    def open_run(self) -> Run | None:
        """The newest run that did not finish, if any."""
        runs = self.runs
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(runs).where(runs.c.status == RUN_OPEN).order_by(runs.c.run_id.desc())
            ).first()
        return Run(row.run_id, row.digest, row.status, row.created_at) if row else None

    def start_run(self, digest: str, batches: Sequence[Sequence[OutboxRow]]) -> int:
        """Record a run and its whole outbox atomically; returns the run id."""
        with self.engine.begin() as c:
            run_id = c.execute(
                sa.insert(self.runs).values(digest=digest, status=RUN_OPEN, created_at=time.time())
            ).inserted_primary_key[0]
            rows = [
                {
                    "run_id": run_id,
                    USER_ID: row.user_id,
                    "batch": number,
                    "payload": json.dumps(row.payload, sort_keys=True),
                    "status": PENDING,
                    "message": None,
                }
                for number, batch in enumerate(batches)
                for row in batch
            ]
            for start in range(0, len(rows), 10_000):
                c.execute(sa.insert(self.outbox), rows[start : start + 10_000])
        return int(run_id)

    def supersede(self, run_id: int) -> None:
        """Close an unfinished run that a new plan replaces. The users of its batches in flight
        (sent, never answered) move to `uncertain`: Braze may hold what was sent, so the next
        plan sends them their desired values whatever the acknowledged state says."""
        ob = self.outbox
        with self.engine.begin() as c:
            rows = c.execute(
                sa.select(ob.c[USER_ID], ob.c.payload).where(
                    ob.c.run_id == run_id, ob.c.status == SENDING
                )
            ).all()
            values = [
                {USER_ID: user, ATTRIBUTE: name, VALUE: _encode(value), "run_id": run_id}
                for user, payload in rows
                for name, value in json.loads(payload).items()
            ]
            if values:
                c.execute(self._uncertain_upsert, values)
                c.execute(
                    sa.update(ob)
                    .where(ob.c.run_id == run_id, ob.c.status == SENDING)
                    .values(status=UNKNOWN, message=_SUPERSEDED_IN_FLIGHT)
                )
            c.execute(
                sa.update(self.runs)
                .where(self.runs.c.run_id == run_id)
                .values(status=RUN_SUPERSEDED, finished_at=time.time())
            )

    def mark_sending(self, run_id: int, batch: int) -> None:
        """Record that a batch's request is about to go out: from now on its outcome is
        unknown until Braze's answer is recorded."""
        ob = self.outbox
        with self.engine.begin() as c:
            c.execute(
                sa.update(ob)
                .where(ob.c.run_id == run_id, ob.c.batch == batch, ob.c.status == PENDING)
                .values(status=SENDING)
            )

    def finish_run(self, run_id: int, status: str = RUN_DONE) -> None:
        with self.engine.begin() as c:
            c.execute(
                sa.update(self.runs)
                .where(self.runs.c.run_id == run_id)
                .values(status=status, finished_at=time.time())
            )

    def pending_batches(self, run_id: int) -> list[tuple[int, list[OutboxRow]]]:
        """The run's batches still to send (never sent, or in flight when the run stopped), in
        order (one query)."""
        ob = self.outbox
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(ob.c.batch, ob.c[USER_ID], ob.c.payload)
                .where(ob.c.run_id == run_id, ob.c.status.in_((PENDING, SENDING)))
                .order_by(ob.c.batch, ob.c[USER_ID])
            ).all()
        batches: dict[int, list[OutboxRow]] = {}
        for number, user, payload in rows:
            batches.setdefault(number, []).append(OutboxRow(user, json.loads(payload)))
        return list(batches.items())

    def outbox_users(self, run_id: int) -> list[str]:
        """Every user in a run's outbox, whatever the outcome so far."""
        ob = self.outbox
        with self.engine.connect() as c:
            return list(c.execute(sa.select(ob.c[USER_ID]).where(ob.c.run_id == run_id)).scalars())

    def outbox_counts(self, run_id: int) -> dict[str, int]:
        """Outbox rows per status for a run."""
        ob = self.outbox
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(ob.c.status, sa.func.count())
                .where(ob.c.run_id == run_id)
                .group_by(ob.c.status)
            ).all()
        return {status: int(n) for status, n in rows}

    def failures(self, run_id: int) -> dict[str, int]:
        """Braze's messages for this run's rejected updates, with how many users got each."""
        ob = self.outbox
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(ob.c.message, sa.func.count())
                .where(ob.c.run_id == run_id, ob.c.status == FAILED)
                .group_by(ob.c.message)
            ).all()
        return {str(message): int(n) for message, n in rows}

    def record_batch(
        self,
        run_id: int,
        acked: Iterable[OutboxRow],
        failed: Iterable[tuple[OutboxRow, str]] = (),
        unknown: Iterable[OutboxRow] = (),
    ) -> None:
        """Store Braze's answer to one batch and the acknowledged values, in one transaction.

        Values whose outcome Braze did not report go to `uncertain`; an answer (acknowledged or
        rejected) for an attribute clears it there. The first acknowledgement binds an unbound
        ledger to the Braze instance `bind_target` was given.
        """
        acked, failed, unknown = list(acked), list(failed), list(unknown)
        uncertain_rows = [
            {USER_ID: r.user_id, ATTRIBUTE: k, VALUE: _encode(v), "run_id": run_id}
            for r in unknown
            for k, v in r.payload.items()
        ]
        answered = [(r.user_id, k) for r in acked for k in r.payload] + [
            (r.user_id, k) for r, _ in failed for k in r.payload
        ]
        state_rows = [
            {USER_ID: r.user_id, ATTRIBUTE: k, VALUE: _encode(v), "run_id": run_id}
            for r in acked
            for k, v in r.payload.items()
        ]
        reject_rows = [
            {USER_ID: r.user_id, ATTRIBUTE: k, VALUE: _encode(v), "message": m, "run_id": run_id}
            for r, m in failed
            for k, v in r.payload.items()
        ]
        outcomes = [
            {"b_run": run_id, "b_user": r.user_id, "b_status": ACKED, "b_message": None}
            for r in acked
        ]
        outcomes += [
            {"b_run": run_id, "b_user": r.user_id, "b_status": FAILED, "b_message": m}
            for r, m in failed
        ]
        outcomes += [
            {"b_run": run_id, "b_user": r.user_id, "b_status": UNKNOWN, "b_message": _NO_OUTCOME}
            for r in unknown
        ]
        with self.engine.begin() as c:
            if self._any_rejections is None:
                self._any_rejections = (
                    c.execute(sa.select(self.rejections).limit(1)).first() is not None
                )
            if state_rows:
                c.execute(self._state_upsert, state_rows)
            if state_rows and self._any_rejections:
                c.execute(
                    sa.delete(self.rejections).where(
                        sa.tuple_(self.rejections.c[USER_ID], self.rejections.c[ATTRIBUTE]).in_(
                            [(r[USER_ID], r[ATTRIBUTE]) for r in state_rows]
                        )
                    )
                )
            if reject_rows:
                c.execute(self._rejection_upsert, reject_rows)
                self._any_rejections = True
            if outcomes:
                c.execute(self._set_outcome, outcomes)
            if answered and self._any_uncertain(c):
                u = self.uncertain_values
                for start in range(0, len(answered), 500):
                    c.execute(
                        sa.delete(u).where(
                            sa.tuple_(u.c[USER_ID], u.c[ATTRIBUTE]).in_(
                                answered[start : start + 500]
                            )
                        )
                    )
            if uncertain_rows:
                c.execute(self._uncertain_upsert, uncertain_rows)
            if acked and self._unbound_target is not None:
                if c.execute(sa.select(self.target)).first() is None:
                    endpoint, id_field = self._unbound_target
                    c.execute(
                        sa.insert(self.target).values(
                            name="braze",
                            endpoint=endpoint,
                            id_field=id_field,
                            created_at=time.time(),
                        )
                    )
                self._unbound_target = None

    def _any_uncertain(self, c: sa.Connection) -> bool:
        return c.execute(sa.select(self.uncertain_values).limit(1)).first() is not None

    @cached_property
    def _uncertain_upsert(self) -> Any:
        return self._upsert(self.uncertain_values, (VALUE, "run_id"))

    @cached_property
    def _state_upsert(self) -> Any:
        return self._upsert(self.state, (VALUE, "run_id"))

    @cached_property
    def _rejection_upsert(self) -> Any:
        return self._upsert(self.rejections, (VALUE, "message", "run_id"))

    @cached_property
    def _set_outcome(self) -> Any:
        ob = self.outbox
        return (
            sa.update(ob)
            .where(ob.c.run_id == sa.bindparam("b_run"), ob.c[USER_ID] == sa.bindparam("b_user"))
            .values(status=sa.bindparam("b_status"), message=sa.bindparam("b_message"))
        )

    def _upsert(self, table: sa.Table, update: tuple[str, ...]) -> Any:
        """INSERT ... ON CONFLICT (primary key) DO UPDATE for SQLite and PostgreSQL."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise LedgerError(
                f"ledger.url {safe_url(self.url)!r}: {self.engine.dialect.name} is not supported; "
                "use SQLite or PostgreSQL"
            )
        stmt = insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key.columns],
            set_={name: stmt.excluded[name] for name in update},
        )


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return sqlite_pragmas(sa.create_engine(url, connect_args={"timeout": 30}))
    return sa.create_engine(url, pool_pre_ping=True)
