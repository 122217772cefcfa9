"""Adjust callbacks given in memory (a service request) rather than as files: the same reading,
normalisation, validation and event keys as ``lapse ingest``, so what a request's events score
is what the store would have held for them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base import LapseError
from features import schema as s
from features.ingest.adjust import SOURCE_INDEX, BadFile, read_source
from features.ingest.run import Rules
from features.settings import IngestSettings


@dataclass(frozen=True)
class Rejection:
    """A callback ingest would quarantine: its position in the request, the reason and why."""

    index: int
    reason: str
    detail: str


@dataclass
class CallbackEvents:
    """Canonical events of the accepted callbacks (duplicates dropped) and the rejected ones."""

    events: pa.Table
    rejected: list[Rejection] = field(default_factory=list)
    duplicates: int = 0


def callback_events(
    objects: Sequence[Any],
    settings: IngestSettings | None = None,
    *,
    now: datetime | None = None,
    source: str = "request",
    shared: bool = False,
) -> CallbackEvents:
    """Normalise callback objects (one per activity, as ``lapse ingest`` reads them from a
    callback log) into canonical events; item ``i`` of ``objects`` is line ``i + 1``.
    ``shared`` keys them in the process's long-lived DuckDB (``features.duck``): a service."""
    text = "\n".join(json.dumps(o, default=str, separators=(",", ":")) for o in objects)
    try:
        read = read_source(f"{source}.log", text.encode("utf-8"))
    except BadFile as exc:  # nothing usable at all (an empty list)
        return CallbackEvents(_empty(), [Rejection(-1, exc.reason, exc.detail)])
    rejected = [Rejection(line - 1, reason, detail) for line, reason, detail, _ in read.rejected]
    rows = read.rows.append_column(SOURCE_INDEX, pa.array(np.zeros(read.rows.num_rows, np.int32)))
    normalised = Rules.of(settings, now).normalise(rows, shared)
    bad = normalised.rejected
    rejected += [
        Rejection(line - 1, reason, detail)
        for line, reason, detail in zip(
            bad.column(s.LINE).to_pylist(),
            bad.column("reason").to_pylist(),
            bad.column("detail").to_pylist(),
            strict=True,
        )
    ]
    events = normalised.events
    key = events.column(s.EVENT_KEY).combine_chunks()
    first = pc.equal(pc.index_in(key, value_set=key), pa.array(np.arange(len(key))))
    kept = events.filter(first)
    kept = kept.set_column(
        kept.schema.get_field_index(s.SOURCE), s.SOURCE, pa.array([source] * kept.num_rows)
    )
    return CallbackEvents(kept, sorted(rejected, key=lambda r: r.index), len(key) - len(kept))


def _empty() -> pa.Table:
    return pa.table({name: pa.array([], pa.string()) for name in (s.USER_ID, s.PLATFORM)})


def stored_callbacks(store: str | os.PathLike[str], users: Sequence[str]) -> list[dict[str, str]]:
    """The stored events of ``users`` as the callback objects Adjust would have sent for them:
    each event's own row, read again from the export file the store names (``source``, ``line``),
    with its non-empty values. What a caller posts to ``/score_events`` to score subscribers the
    store holds (the demo, the service benchmark); a source file no longer on disk is an error."""
    from features.ingest.store import load_events

    events = load_events(store, columns=[s.USER_ID, s.SOURCE, s.LINE])
    mine = events[events[s.USER_ID].isin(list(users))]
    objects: list[dict[str, str]] = []
    for source, lines in mine.groupby(s.SOURCE, sort=True)[s.LINE]:
        path = Path(source)
        try:
            read = read_source(path.name, path.read_bytes())
        except OSError as exc:
            raise StoredSourceError(
                f"{source}: cannot read the export file the store names ({exc.strerror or exc}); "
                "the callbacks of its events are lost with it"
            ) from None
        wanted = pa.array(sorted({int(n) for n in lines}), pa.int64())
        rows = read.rows.filter(pc.is_in(read.rows.column(s.LINE), value_set=wanted))
        for row in rows.drop_columns([s.LINE]).to_pylist():
            objects.append({k: v for k, v in row.items() if v not in (None, "")})
    return objects


class StoredSourceError(LapseError):
    """An export file the store names cannot be read again."""
