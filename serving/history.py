"""The scores history: what every ``lapse rescore`` scored, kept in the store so a backtest can
later set it against what really happened.

Layout: ``<store>/scores_history/as_of=YYYY-MM-DD/<model>-v<version>.parquet`` (Hive partitions by
scoring day; one file per model version that scored that day), columns ``schema.HISTORY_COLUMNS``.

History is never rewritten. A rescore of a day that a model version has already recorded is a
no-op (``HistoryWrite.written`` is False): a scheduler that re-runs a day keeps the first
scoring, which is the one Braze was sent. A different version on the same day adds its own file.

Writes are atomic: the file is written under ``scores_history/.staging/`` and linked into
place; a new day's partition is a staged folder renamed whole. A crash mid-write leaves at most
a file under ``.staging/`` (never read, removed by the next write), never a partial partition.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from base import LapseError
from features import schema as s

__all__ = [
    "HISTORY_DIR",
    "HistoryError",
    "HistoryWrite",
    "append_history",
    "history_days",
    "history_root",
    "read_history",
]

#: The history's folder under the store.
HISTORY_DIR = "scores_history"
_STAGING = ".staging"
_PARTITION = re.compile(r"^as_of=(\d{4}-\d{2}-\d{2})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class HistoryError(LapseError):
    """A scores history that cannot be written or read; names the file or folder."""


@dataclass(frozen=True)
class HistoryWrite:
    """Where a rescore's scores were recorded, and whether this call wrote them (False: that
    model version had already recorded the day, and history is never rewritten)."""

    path: Path
    rows: int
    written: bool


def history_root(store: str | os.PathLike[str]) -> Path:
    """``<store>/scores_history``."""
    return Path(store) / HISTORY_DIR


def _day(value: date | datetime | str | pd.Timestamp) -> date:
    stamp = pd.Timestamp(value)
    return stamp.date()


def _file_name(model_name: str, model_version: str) -> str:
    """``<model>-v<version>.parquet``, with anything but letters, digits, '.', '_', '-' as '_'."""
    return f"{_UNSAFE.sub('_', model_name)}-v{_UNSAFE.sub('_', model_version)}.parquet"


def append_history(
    store: str | os.PathLike[str],
    scores: pd.DataFrame,
    as_of: date | datetime | str | pd.Timestamp,
    model_name: str,
    model_version: str,
) -> HistoryWrite:
    """Record a rescore's scores (``user_id``, ``platform``, ``churn_probability``, ``bucket``)
    as scored at ``as_of`` by ``model_name`` version ``model_version``; a no-op when that
    version already recorded that day."""
    missing = [c for c in (s.USER_ID, s.PLATFORM, s.CHURN_PROBABILITY, s.BUCKET) if c not in scores]
    if missing:
        raise HistoryError(f"scores to record lack column(s) {missing} (found {list(scores)})")
    day = _day(as_of)
    root = history_root(store)
    partition = root / f"{s.AS_OF}={day.isoformat()}"
    target = partition / _file_name(model_name, model_version)
    if target.exists():
        return HistoryWrite(target, len(pd.read_parquet(target, columns=[s.USER_ID])), False)
    n = len(scores)
    when = datetime(day.year, day.month, day.day, tzinfo=UTC)
    table = pa.table(
        {
            s.USER_ID: pa.array(scores[s.USER_ID].astype("str").tolist(), pa.string()),
            s.PLATFORM: pa.array(scores[s.PLATFORM].astype("str").tolist(), pa.string()),
            s.AS_OF: pa.array([when] * n, pa.timestamp("us", tz="UTC")),
            s.CHURN_PROBABILITY: pa.array(scores[s.CHURN_PROBABILITY].to_numpy(float)),
            s.BUCKET: pa.array(scores[s.BUCKET].astype("str").tolist(), pa.string()),
            s.MODEL_NAME: pa.array([model_name] * n, pa.string()),
            s.MODEL_VERSION: pa.array([str(model_version)] * n, pa.string()),
        }
    )
    staging = root / _STAGING
    token = uuid.uuid4().hex
    try:
        staging.mkdir(parents=True, exist_ok=True)
        _sweep(staging)
        if partition.is_dir():
            staged = staging / f"{token}.parquet"
            _write(table, staged)
            _publish(staged, target)
        else:
            staged = staging / token
            staged.mkdir()
            _write(table, staged / target.name)
            try:
                os.rename(staged, partition)
            except OSError:
                if not partition.is_dir():  # not a concurrent writer's new partition: give up
                    raise
                _publish(staged / target.name, target)  # another rescore made it meanwhile
    except FileExistsError:  # a concurrent rescore of the same day and version recorded it first
        return HistoryWrite(target, len(pd.read_parquet(target, columns=[s.USER_ID])), False)
    except OSError as exc:
        raise HistoryError(
            f"{target}: cannot record the scores history ({exc.strerror or exc}); nothing was "
            "recorded for that day"
        ) from None
    finally:
        for leftover in (staging / f"{token}.parquet", staging / token):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    return HistoryWrite(target, n, True)


def _publish(staged: Path, target: Path) -> None:
    """Put a staged file in place unless ``target`` exists (FileExistsError): a hard link
    refuses to replace, where a rename would silently overwrite a concurrent first scoring."""
    os.link(staged, target)
    staged.unlink()


def _write(table: pa.Table, path: Path) -> None:
    """Write and fsync ``path``, so the rename that follows publishes a complete file."""
    with open(path, "wb") as handle:
        pq.write_table(table, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _sweep(staging: Path, older_than_s: float = 3600.0) -> None:
    """Remove what crashed writes left under ``.staging`` more than an hour ago."""
    import time

    limit = time.time() - older_than_s
    for leftover in staging.iterdir():
        try:
            if leftover.stat().st_mtime < limit:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        except OSError:
            continue


def history_days(store: str | os.PathLike[str]) -> list[date]:
    """The scoring days the history holds, oldest first."""
    root = history_root(store)
    if not root.is_dir():
        return []
    days = []
    for child in root.iterdir():
        match = _PARTITION.match(child.name)
        if match and child.is_dir() and any(child.glob("*.parquet")):
            days.append(date.fromisoformat(match[1]))
    return sorted(days)


def read_history(
    store: str | os.PathLike[str],
    since: date | datetime | str | pd.Timestamp | None = None,
    until: date | datetime | str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Every recorded score of the scoring days from ``since`` to ``until`` (both included;
    None: no bound), columns ``schema.HISTORY_COLUMNS``; empty when none was recorded."""
    first = _day(since) if since is not None else None
    last = _day(until) if until is not None else None
    if first is not None and last is not None and first > last:
        raise HistoryError(f"since {first} is after until {last}; expected since <= until")
    parts = []
    root = history_root(store)
    for day in history_days(store):
        if (first is not None and day < first) or (last is not None and day > last):
            continue
        for path in sorted((root / f"{s.AS_OF}={day.isoformat()}").glob("*.parquet")):
            try:
                part = pd.read_parquet(path)
            except (OSError, ValueError) as exc:
                raise HistoryError(f"{path}: cannot read the scores history ({exc})") from None
            missing = [c for c in s.HISTORY_COLUMNS if c not in part.columns]
            if missing:
                raise HistoryError(f"{path}: lacks column(s) {missing}; not a scores-history file")
            parts.append(part[list(s.HISTORY_COLUMNS)])
    if not parts:
        empty = pd.DataFrame({c: pd.Series(dtype="str") for c in s.HISTORY_COLUMNS})
        empty[s.AS_OF] = pd.Series(dtype="datetime64[us, UTC]")
        empty[s.CHURN_PROBABILITY] = pd.Series(dtype="float64")
        return empty
    frame = pd.concat(parts, ignore_index=True)
    frame[s.AS_OF] = pd.to_datetime(frame[s.AS_OF], utc=True).astype("datetime64[us, UTC]")
    return frame
