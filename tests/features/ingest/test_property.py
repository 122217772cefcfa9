"""Keep it true (issue 13): any mix of valid rows and every corruption ingest must survive.

Export files are built from valid rows plus corrupt ones (unbalanced quotes, bytes that are not
UTF-8, values over the size limit, implausible times, non-finite revenue, short rows) in files
of every shape (LF, CRLF or CR-only line ends, gzip, a cut gzip, a plain file named .gz, a
column named like ours). The invariant: every valid row is stored exactly once or its file is
reported bad; every corrupt row is quarantined with a reason; the run never aborts; a re-run
adds nothing.
"""

from __future__ import annotations

import gzip
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import load_events, load_quarantine
from features import schema as s
from features.ingest import adjust, ingest, reprocess_quarantine

HEADER = "{created_at},{adid},{os_name},{activity_kind},{event_name},{revenue_float},{network_name}"
NOW = datetime(2026, 1, 20, tzinfo=UTC)
T = 1767571999  # 2026-01-05
LIMIT = 64  # MAX_FIELD_CHARS for the test, so "too large" stays small


def valid(i: int, kind: str) -> str:
    """A valid row whose adid encodes ``i``; purchases share one second and differ in price."""
    adid = f"{i:032x}"
    if kind == "purchase":  # same user, same second, other price: two events, not duplicates
        return f"{T},{'f' * 32},ios,event,purchase,{i}.99,"
    if kind == "multiline":
        return f'{T + i},{adid},ios,session,,,"two\nlines"'
    if kind == "iso":
        return f"2026-01-05T10:00:{i % 60:02d}.5+02:00,{adid},android,session,,,"
    return f"{T + i},{adid},android,session,,,net"


CORRUPT = {
    "unbalanced_quote": lambda i: f'{T + i},{i:032x},ios,session,,,"Meta',
    "wrong_encoding": lambda i: f"{T + i},{i:032x},ios,session,,,caf\udce9",
    "too_large": lambda i: f"{T + i},{i:032x},ios,session,,,{'x' * (LIMIT + 1)}",
    "implausible_time": lambda i: f"{(0, 253402300740)[i % 2]},{i:032x},ios,session,,,",
    "bad_number": lambda i: f"{T + i},{i:032x},ios,event,buy,1e400,",
    "truncated_row": lambda i: f"{T + i},{i:032x},ios",
}
VALID_KINDS = ["session", "session", "purchase", "multiline", "iso", "repeat"]

file_shape = st.fixed_dictionaries(
    {
        "newline": st.sampled_from(["\n", "\r\n", "\r"]),
        "packing": st.sampled_from(["plain", "gzip", "plain_named_gz", "cut_gzip"]),
        "line_column": st.booleans(),
    }
)
row_plan = st.lists(
    st.tuples(st.sampled_from(VALID_KINDS + list(CORRUPT)), st.integers(0, 2)), max_size=30
)


def _write(raw: Path, f: int, rows: list[str], shape: dict) -> Path:
    """Write one export file of the given shape."""
    header = HEADER + (",line" if shape["line_column"] else "")
    rows = [r + (",7" if shape["line_column"] else "") for r in rows]
    newline = shape["newline"]
    if newline == "\r":  # old-Mac files hold no value with a line break of another kind
        rows = [r.replace("\n", "\r") for r in rows]
    text = newline.join([header, *rows]) + newline
    data = text.encode("utf-8", "surrogateescape")
    packing = shape["packing"]
    path = raw / (f"part{f}.csv" + ("" if packing == "plain" else ".gz"))
    if packing in ("gzip", "cut_gzip"):
        data = gzip.compress(data, mtime=0)
    if packing == "cut_gzip":
        data = data[: max(20, len(data) * 3 // 4)]
    path.write_bytes(data)
    return path


PLAN = st.lists(file_shape, min_size=3, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=row_plan, shapes=PLAN)
def test_any_mix_of_valid_and_corrupt_rows_and_file_shapes(plan, shapes) -> None:
    check_invariant(plan, shapes)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=row_plan, shapes=PLAN)
def test_any_mix_many_examples(plan, shapes) -> None:
    check_invariant(plan, shapes)


def check_invariant(plan: list[tuple[str, int]], shapes: list[dict]) -> None:
    """Ingest the files the plan describes and check the invariant of the module doc."""
    files: dict[int, list[str]] = {0: [], 1: [], 2: []}
    lines = {0: 1, 1: 1, 2: 1}
    expected_valid: dict[str, int] = {}  # "adid:..." or "price:..." -> file
    corrupt: list[tuple[int, int, str]] = []
    first_session = None
    for i, (what, f) in enumerate(plan):
        if what == "repeat":
            if first_session is None:
                continue
            files[f].append(valid(first_session, "session"))  # an exact copy: one event
            lines[f] += 1
            continue
        if what in CORRUPT:
            files[f].append(CORRUPT[what](i))
            lines[f] += 1
            corrupt.append((f, lines[f], what))
            continue
        row = valid(i, what)
        if what == "session" and first_session is None:
            first_session = i
        files[f].append(row)
        lines[f] += 1 + row.count("\n")
        ident = f"price:{i}.99" if what == "purchase" else f"adid:{i:032x}"
        expected_valid[ident] = f
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(adjust, "MAX_FIELD_CHARS", LIMIT)
        raw = Path(tmp) / "raw"
        raw.mkdir()
        paths = {f: _write(raw, f, rows, shapes[f]) for f, rows in files.items()}
        store = Path(tmp) / "store"
        summary = ingest([raw], store, now=NOW)  # never raises
        events = load_events(store)
        quarantine = load_quarantine(store)
        again = ingest([raw], store, now=NOW)
        assert (again.rows_stored, again.commits) == (0, 0)
        # the same rules again: nothing passes, every row keeps its reason, and only once
        retried = reprocess_quarantine(store, now=NOW)
        assert retried.rows_stored == 0
        assert _rows(load_quarantine(store)) == _rows(quarantine)
        assert reprocess_quarantine(store, now=NOW).rows_read == 0
        content = {f: p.read_bytes() for f, p in paths.items()}
    bad = {f for f, p in paths.items() if str(p) in summary.bad_files}
    # files cut inside the same bytes are one file: a later copy is skipped as a repeat, so
    # what the first one's report says (bad) holds for the copy too (found by this test)
    bad |= {f for f in paths for g in bad if g < f and content[f] == content[g]}
    for f, p in paths.items():  # only a cut gzip may make a file bad
        if str(p) in summary.bad_files:
            assert shapes[f]["packing"] == "cut_gzip", summary.bad_files
    file_of = {str(p): f for f, p in paths.items()}
    stored = [
        f"price:{price:.2f}" if adid == "f" * 32 else f"adid:{adid}"
        for adid, price in zip(events[s.ADID], events[s.PRICE], strict=True)
    ]
    assert len(stored) == len(set(stored)), "an event stored twice"
    for ident, f in expected_valid.items():
        assert ident in stored or f in bad, (ident, f)
    assert set(stored) <= set(expected_valid)
    got = {
        (file_of[src], line): reason
        for src, line, reason in zip(
            quarantine[s.SOURCE], quarantine[s.LINE], quarantine[s.REASON], strict=True
        )
    }
    for f, line, reason in corrupt:
        assert got.get((f, line)) == reason or f in bad, (f, line, reason, got)


def _rows(quarantine) -> list[tuple[str, int, str, str]]:
    """The quarantine's rows as sortable tuples (bad files, at line 0, are not rows)."""
    rows = quarantine[quarantine[s.LINE] > 0]
    return sorted(zip(rows[s.SOURCE], rows[s.LINE], rows[s.REASON], rows[s.RAW], strict=True))
