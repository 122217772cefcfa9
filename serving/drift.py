"""Drift records: the population stability of every rescore, kept in the store.

Each rescore writes ``<store>/monitoring/drift/drift-<as_of>.json``: when, which model, the PSI
of the score and of each feature against the model's training reference (``training.drift``)
and the features past ``monitoring.psi_threshold``. ``lapse train --if-due`` reads the newest.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from base import LapseError
from training.drift import DriftReport

__all__ = ["DriftRecord", "DriftRecordError", "drift_path", "newest_drift", "write_drift"]


class DriftRecordError(LapseError, ValueError):
    """A drift record in the store that cannot be read."""


@dataclass(frozen=True)
class DriftRecord:
    """One rescore's drift: the day scored, the model that scored it, and the report."""

    as_of: date
    model_name: str | None
    model_version: str | None
    report: DriftReport
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "model_name": self.model_name,
            "model_version": self.model_version,
            **self.report.to_dict(),
        }


def drift_folder(store: str | Path) -> Path:
    return Path(store) / "monitoring" / "drift"


def drift_path(store: str | Path, as_of: date) -> Path:
    """Where the drift of the rescore of ``as_of`` is kept."""
    return drift_folder(store) / f"drift-{as_of.isoformat()}.json"


def write_drift(store: str | Path, record: DriftRecord) -> Path:
    """Write a record atomically (a reader never sees half a file); a rescore of the same day
    again replaces it."""
    path = drift_path(store, record.as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".drift-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record.to_dict(), handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_drift(path: Path) -> DriftRecord:
    try:
        data = json.loads(path.read_text())
        return DriftRecord(
            as_of=date.fromisoformat(data["as_of"]),
            model_name=data.get("model_name"),
            model_version=data.get("model_version"),
            report=DriftReport.from_dict(data),
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DriftRecordError(
            f"{path}: not a drift record ({type(exc).__name__}: {exc}); expected the JSON a "
            "rescore writes (as_of, threshold, rows, feature_psi, flagged); delete it or rescore "
            "that day again"
        ) from None


def newest_drift(store: str | Path) -> DriftRecord | None:
    """The drift record of the latest day rescored, or None when no rescore kept one."""
    folder = drift_folder(store)
    if not folder.is_dir():
        return None
    days = sorted(folder.glob("drift-????-??-??.json"))
    return read_drift(days[-1]) if days else None
