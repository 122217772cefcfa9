"""The scores file: what ``lapse rescore`` writes, ``lapse sync --scores`` reads, and the
service's ``/lookup`` answers from (DESIGN.md: Parquet or CSV with ``user_id``,
``churn_probability``, optional ``bucket`` and ``reasons``).

A file written by rescore carries the model's bucket bounds (Parquet metadata, or a CSV file's
``.bucket_policy.json`` sidecar), so a later sync of it sends exactly the buckets rescore would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from base import LapseError
from features import schema as s
from features.schema import BUCKET, CHURN_PROBABILITY, REASONS, USER_ID
from training.buckets import BucketPolicy, BucketPolicyError

__all__ = [
    "NOTES",
    "POLICY_METADATA",
    "ScoresFileError",
    "policy_sidecar",
    "prepare_scores",
    "read_scores",
    "read_scores_policy",
    "write_scores",
]


class ScoresFileError(LapseError, ValueError):
    """A scores file (or frame) that breaks the contract; says file, row and column."""


#: Parquet metadata key of where a scores file's scores come from (as_of, model, version).
PROVENANCE_METADATA = "lapse.provenance"
#: Key of ``DataFrame.attrs`` where `prepare_scores` leaves notes for the user (e.g. float ids
#: converted to text); `serving.sync.sync` copies them to ``SyncReport.notes``.
NOTES = "lapse.notes"
_EXACT_INT = 2**53  # floats hold every integer up to this exactly; above it an id may be altered

#: Parquet metadata key of the bucket policy a scores file was bucketed with (by `lapse rescore`).
POLICY_METADATA = "lapse.bucket_policy"


def policy_sidecar(path: str | Path) -> Path:
    """Where the bucket policy of a CSV scores file is kept (CSV has no metadata)."""
    path = Path(path)
    return path.with_name(path.name + ".bucket_policy.json")


def read_scores_policy(path: str | Path) -> BucketPolicy | None:
    """The bucket policy a scores file was bucketed with (Parquet metadata, or a CSV file's
    sidecar), or None when none was recorded."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            metadata = pq.read_schema(path).metadata or {}
        except (OSError, ValueError) as exc:
            raise ScoresFileError(f"{path}: cannot read: {exc}") from None
        text, where = metadata.get(POLICY_METADATA.encode()), f"metadata {POLICY_METADATA!r}"
    else:
        sidecar = policy_sidecar(path)
        text, where = (sidecar.read_text() if sidecar.is_file() else None), str(sidecar)
    if text is None:
        return None
    try:
        return BucketPolicy.from_json(text)
    except BucketPolicyError as exc:
        raise ScoresFileError(f"{path}: {where}: {exc}") from None


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV scores file and check it (see `prepare_scores`)."""
    path = Path(path)
    if not path.is_file():
        raise ScoresFileError(f"{path}: scores file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            first_row = 1
        elif path.suffix.lower() in (".csv", ".gz") or path.name.endswith(".csv.gz"):
            frame = pd.read_csv(path, dtype={USER_ID: str}, keep_default_na=False, na_values=[""])
            first_row = 2  # line 1 is the header
        else:
            raise ScoresFileError(f"{path}: expected a .parquet or .csv scores file")
    except (ValueError, OSError) as exc:
        if isinstance(exc, ScoresFileError):
            raise
        raise ScoresFileError(f"{path}: cannot read: {exc}") from None
    return prepare_scores(frame, source=str(path), first_row=first_row)


def prepare_scores(frame: pd.DataFrame, source: str = "scores", first_row: int = 1) -> pd.DataFrame:
    """Check the scores contract and keep one row per user (the highest probability wins).

    Returns USER_ID (str), CHURN_PROBABILITY (float), and BUCKET / REASONS when present, where
    REASONS is reduced to the top reason (the first of a list, or of a ';'/'|'-separated text).
    """
    where = "line" if first_row == 2 else "row"
    if frame.empty:
        raise ScoresFileError(
            f"{source}: no scored users; refusing to treat every user Braze holds a bucket for "
            "as no longer scored"
        )
    for column in (USER_ID, CHURN_PROBABILITY):
        if column not in frame.columns:
            raise ScoresFileError(
                f"{source}: no {column!r} column (found {', '.join(map(str, frame.columns))})"
            )
    ids = frame[USER_ID]
    bad = ids.isna() | (ids.astype(str).str.strip() == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + first_row
        raise ScoresFileError(f"{source}: {where} {row}, column {USER_ID!r}: empty user id")
    prob = pd.to_numeric(frame[CHURN_PROBABILITY], errors="coerce").astype(float)
    bad = ~((prob >= 0) & (prob <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ScoresFileError(
            f"{source}: {where} {i + first_row}, column {CHURN_PROBABILITY!r}: expected a "
            f"probability in 0..1, found {_plain(frame[CHURN_PROBABILITY].iloc[i])!r}"
        )
    notes = list(frame.attrs.get(NOTES, []))
    text_ids, note = _text_ids(ids, source, where, first_row)
    if note:
        notes.append(note)
    out = pd.DataFrame({USER_ID: text_ids, CHURN_PROBABILITY: prob})
    if BUCKET in frame.columns:
        buckets = [None if pd.isna(v) else str(v) for v in frame[BUCKET].to_numpy()]
        out[BUCKET] = pd.Series(buckets, index=out.index, dtype=object)
    if REASONS in frame.columns:
        reasons = [_top_reason(v) for v in frame[REASONS].to_numpy()]
        out[REASONS] = pd.Series(reasons, index=out.index, dtype=object)
    out = out.sort_values([CHURN_PROBABILITY, USER_ID], ascending=[False, True], kind="stable")
    repeated = out[USER_ID].duplicated(keep=False)
    if repeated.any():
        conflicting = out.loc[repeated].groupby(USER_ID)[CHURN_PROBABILITY].nunique().gt(1)
        first = out.loc[repeated, USER_ID].iloc[0]
        notes.append(
            f"{out.loc[repeated, USER_ID].nunique():,} user(s) appear more than once (first: "
            f"{first!r}), {int(conflicting.sum()):,} of them with different probabilities; "
            "each user's highest probability was kept (one row per platform is expected)"
        )
    out = out.drop_duplicates(USER_ID, keep="first").reset_index(drop=True)
    out.attrs[NOTES] = notes
    return out


def _text_ids(
    ids: pd.Series, source: str, where: str, first_row: int
) -> tuple[np.ndarray, str | None]:
    """User ids as text. Ids are text: a float id column (a Parquet writer's doing) would be sent
    as "1.0". Integral floats (every one, and exact) are converted, with a note; any other
    float is an error naming the column and the first such row."""
    values = ids.to_numpy()
    floats = np.array([isinstance(v, float | np.floating) for v in values], dtype=bool)
    if not floats.any():
        return ids.astype(str).str.strip().to_numpy(), None
    as_float = np.array([float(v) if f else 0.0 for v, f in zip(values, floats, strict=True)])
    bad = floats & ~(
        np.isfinite(as_float) & (as_float == np.round(as_float)) & (np.abs(as_float) <= _EXACT_INT)
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScoresFileError(
            f"{source}: {where} {i + first_row}, column {USER_ID!r}: expected a text (or whole "
            f"number) user id, found the float {_plain(values[i])!r}; write {USER_ID} as text"
        )
    text = [str(int(v)) if f else str(v).strip() for v, f in zip(values, floats, strict=True)]
    note = (
        f"{source}: column {USER_ID!r} holds {int(floats.sum()):,} user id(s) as floats, all "
        f"whole numbers: sent as text without the '.0' (e.g. {_plain(values[floats][0])!r} -> "
        f"{text[int(np.flatnonzero(floats)[0])]!r}); write {USER_ID} as text to silence this"
    )
    return np.array(text, dtype=object), note


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (its repr reads `1.5`, not `np.float64(1.5)`)."""
    return value.item() if isinstance(value, np.generic) else value


def _top_reason(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return _top_reason(json.loads(text))
            except ValueError:
                pass
        for sep in (";", "|"):
            text = text.split(sep)[0]
        return text.strip() or None
    items = list(value) if hasattr(value, "__iter__") else [value]
    return str(items[0]) if items else None


def write_scores(
    scores: pd.DataFrame,
    path: str | Path,
    policy: BucketPolicy | None = None,
    provenance: Mapping[str, str] | None = None,
) -> Path:
    """Write a scores file: Parquet (reasons as a list), or CSV (reasons joined by ';').

    ``policy`` (the model's bucket bounds) is recorded in a Parquet file's metadata, or beside a
    CSV file (``policy_sidecar``), so that ``lapse sync`` on it later (a retry) sends exactly
    the buckets ``lapse rescore`` would have sent. ``provenance`` (as_of, model, version) goes
    into a Parquet file's metadata too, for the service's ``/lookup``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScoresFileError(f"{path}: cannot create {path.parent} ({exc.strerror})") from None
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pa.Table.from_pandas(scores, preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        if policy is not None:
            metadata[POLICY_METADATA] = policy.to_json()
        if provenance:
            metadata[PROVENANCE_METADATA] = json.dumps(dict(provenance))
        # written beside it under a name no reader looks for, then renamed over it: the
        # service's /lookup, which reads the newest file, never sees one half written
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            pq.write_table(table.replace_schema_metadata(metadata), partial)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ScoresFileError(f"{path}: cannot write the scores file ({exc})") from None
    elif path.name.lower().endswith((".csv", ".csv.gz")):
        flat = scores.assign(**{s.REASONS: [";".join(r) for r in scores[s.REASONS]]})
        flat.to_csv(path, index=False)
        sidecar = policy_sidecar(path)
        if policy is not None:  # CSV has no metadata: the bounds travel beside it
            sidecar.write_text(policy.to_json() + "\n")
        else:
            sidecar.unlink(missing_ok=True)
    else:
        raise ScoresFileError(f"{path}: expected a .parquet or .csv scores file name")
    return path


#: The files ``lapse rescore`` keeps, one per scoring day, newest last by name.
SCORES_GLOB = "scores-*.parquet"


@dataclass(frozen=True)
class LatestScores:
    """The newest readable rescore scores file, indexed by user id for ``/lookup``; ``damaged``
    names the newer files that could not be read (each with why)."""

    path: Path | None
    provenance: dict[str, str]
    by_user: dict[str, list[dict[str, Any]]]
    damaged: tuple[tuple[Path, str], ...] = ()

    def get(self, user_id: str) -> list[dict[str, Any]]:
        """Every platform's score of ``user_id`` (empty: not scored)."""
        return self.by_user.get(user_id, [])


def latest_scores(folder: str | Path) -> LatestScores:
    """Read the newest readable ``scores-<date>.parquet`` under ``folder``: a damaged newer file
    is passed over (listed in ``damaged``) for the one before it; none readable: an empty index."""
    damaged: list[tuple[Path, str]] = []
    for path in sorted(Path(folder).glob(SCORES_GLOB), reverse=True):
        try:
            return _read_latest(path, tuple(damaged))
        except ScoresFileError as exc:
            damaged.append((path, str(exc)))
    return LatestScores(None, {}, {}, tuple(damaged))


def _read_latest(path: Path, damaged: tuple[tuple[Path, str], ...]) -> LatestScores:
    if not path.is_file():  # a folder of that name (a dataset) would read as no scores at all
        raise ScoresFileError(f"{path}: cannot read: not a file")
    try:
        table = pq.read_table(path)
        if USER_ID not in table.column_names:  # an empty table has no row to miss it in
            raise KeyError(USER_ID)
        metadata = table.schema.metadata or {}
        provenance = json.loads(metadata.get(PROVENANCE_METADATA.encode(), b"{}"))
        rows = table.to_pylist()
        by_user: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            user = str(row.pop(USER_ID))
            by_user.setdefault(user, []).append(row)
    except KeyError:
        raise ScoresFileError(f"{path}: cannot read: no {USER_ID!r} column") from None
    except (OSError, ValueError) as exc:
        raise ScoresFileError(f"{path}: cannot read: {exc}") from None
    return LatestScores(path, provenance if isinstance(provenance, dict) else {}, by_user, damaged)
