"""Store compaction (features.ingest.store.compact): a month's files rewritten as one, every
read unchanged, crash-safe, and run by ingest past store.compact_files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import schema as s
from features.ingest import ingest
from features.ingest import store as store_mod
from features.ingest.store import (
    BUCKET,
    EVENT_SCHEMA,
    MANIFEST,
    QUARANTINE_SCHEMA,
    Manifest,
    StoreError,
    commit,
    compact,
    event_rows,
    events_span,
    load_events,
    load_quarantine,
    read_events_table,
    read_manifest,
    remove_orphans,
    stored_keys,
)

UTC_TS = pa.timestamp("us", tz="UTC")
START = pd.Timestamp("2026-01-20", tz="UTC")


def odd_events(n: int, seed: int = 1) -> pa.Table:
    """``n`` events of ~n/4 subscribers over three months: both platforms and a null one, null
    prices and environments, a null user id, and events sharing a subscriber and a time."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, max(1, n // 4), n)
    user_ids = [None if u == 0 else f"u{u}" for u in users]
    platforms = [(s.OS_IOS, s.OS_ANDROID, None)[u % 3] for u in users]
    minutes = rng.integers(0, 60 * 24 * 70, n) // 60 * 60  # whole hours: ties happen
    ts = START + pd.to_timedelta(minutes, unit="min")
    cols = {f.name: pa.nulls(n, f.type) for f in EVENT_SCHEMA}
    cols[s.USER_ID] = pa.array(user_ids, pa.string())
    cols[s.PLATFORM] = pa.array(platforms, pa.string())
    cols[s.TS] = pa.array(ts.as_unit("us").asi8, pa.int64()).cast(UTC_TS)
    cols[s.KIND] = pa.array(["session"] * n)
    cols[s.EVENT] = pa.array(["session"] * n)
    cols[s.ENVIRONMENT] = pa.array([(None, "production", "sandbox")[i % 3] for i in range(n)])
    cols[s.PRICE] = pa.array([None if i % 2 else float(i) for i in range(n)], pa.float64())
    cols[s.EVENT_KEY] = pa.array([f"k{i}" for i in range(n)])
    cols[s.SOURCE] = pa.array([f"f{i % 5}.csv" for i in range(n)])
    cols[s.LINE] = pa.array(np.arange(n) + 2, pa.int64())
    return pa.table(cols, schema=EVENT_SCHEMA)


def commit_in_parts(
    store: Path, events: pa.Table, cuts: list[int], key_version: int | None = 1
) -> Manifest:
    """Commit ``events`` split at ``cuts`` (row positions), one commit per part, as ingests."""
    store.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(store)
    bounds = [0, *sorted(cuts), events.num_rows]
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        part = events.slice(lo, hi - lo)
        source = {"sha256": f"sha-{len(manifest.commits)}-{i}", "path": f"p{i}.csv"}
        manifest = commit(
            store,
            manifest,
            part,
            QUARANTINE_SCHEMA.empty_table(),
            [source],
            key_version=key_version,
        )
    return manifest


def by_row(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas().sort_values(s.EVENT_KEY, ignore_index=True)


def reads(store: Path) -> dict:
    """Everything a reader of the store gets."""
    return {
        "events": load_events(store, columns=[*s.EVENT_COLUMNS, s.EXTRA]),
        "window": load_events(store, "2026-02-03", "2026-03-10", include_sandbox=False),
        "partitions": [by_row(read_events_table(store, partition=(i, 3))) for i in range(3)],
        "span": events_span(store, "2026-03-01"),
        "rows": event_rows(store),
        "quarantine": load_quarantine(store),
    }


def assert_same_reads(a: dict, b: dict) -> None:
    pd.testing.assert_frame_equal(a["events"], b["events"])
    pd.testing.assert_frame_equal(a["window"], b["window"])
    for x, y in zip(a["partitions"], b["partitions"], strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert (a["span"], a["rows"]) == (b["span"], b["rows"])
    pd.testing.assert_frame_equal(a["quarantine"], b["quarantine"])


def files_per_month(store: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for rel in read_manifest(store).event_files():
        out[rel.split("/")[1]] = out.get(rel.split("/")[1], 0) + 1
    return out


def test_compaction_leaves_one_file_a_month_and_every_read_as_it_was(tmp_path: Path) -> None:
    events = odd_events(600)
    commit_in_parts(tmp_path, events, [100, 250, 260, 430])
    assert files_per_month(tmp_path) == {"month=2026-01": 5, "month=2026-02": 5, "month=2026-03": 5}
    before = reads(tmp_path)

    done = compact(tmp_path, chunk_rows=70)  # several bucket ranges a month

    assert files_per_month(tmp_path) == {"month=2026-01": 1, "month=2026-02": 1, "month=2026-03": 1}
    assert (done.months, done.files_before, done.files_after) == (
        ("2026-01", "2026-02", "2026-03"),
        15,
        3,
    )
    assert done.rows == 600 and done.seconds > 0
    assert_same_reads(before, reads(tmp_path))
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}
    assert on_disk == set(read_manifest(tmp_path).event_files())  # the old files are gone
    for rel in read_manifest(tmp_path).event_files():  # bucket then time, as commit orders
        table = pq.read_table(tmp_path / rel)
        keys = pa.table({"b": table.column(BUCKET), "t": table.column(s.TS)})
        assert pc.sort_indices(keys, [("b", "ascending"), ("t", "ascending")]).equals(
            pa.array(np.arange(table.num_rows), pa.uint64())
        )
    assert compact(tmp_path).months == ()  # nothing left to do


def test_a_month_at_or_under_the_limit_is_left_alone(tmp_path: Path) -> None:
    commit_in_parts(tmp_path, odd_events(200), [50, 120])
    files = read_manifest(tmp_path).event_files()
    assert compact(tmp_path, more_than=3).months == ()
    assert read_manifest(tmp_path).event_files() == files


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 120),
    cuts=st.lists(st.integers(0, 120), max_size=6),
    chunk_rows=st.integers(1, 60),
    row_group=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_any_split_into_commits_then_compaction_equals_one_commit(
    n: int, cuts: list[int], chunk_rows: int, row_group: int, seed: int
) -> None:
    """The compacted file of a month holds the rows, their order and the row groups that one
    commit of all the rows writes, however the rows were split and the month chunked."""
    events = odd_events(n, seed)
    cuts = [c for c in cuts if c <= n]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_mod, "EVENT_ROW_GROUP_ROWS", row_group)
        parts, whole = Path(tmp) / "parts", Path(tmp) / "whole"
        commit_in_parts(parts, events, cuts)
        commit_in_parts(whole, events, [])
        compact(parts, chunk_rows=chunk_rows)
        got = sorted(read_manifest(parts).event_files(), key=lambda f: f.split("/")[1])
        want = read_manifest(whole).event_files()  # in month order
        assert [f.split("/")[1] for f in got] == [f.split("/")[1] for f in want]
        for a, b in zip(got, want, strict=True):
            left, right = pq.ParquetFile(parts / a), pq.ParquetFile(whole / b)
            assert left.read().equals(right.read())
            groups = [left.metadata.row_group(i).num_rows for i in range(left.num_row_groups)]
            assert groups == [
                right.metadata.row_group(i).num_rows for i in range(right.num_row_groups)
            ]


def test_files_from_before_the_bucket_column_are_compacted_into_a_bucketed_file(
    tmp_path: Path,
) -> None:
    events = odd_events(300, seed=4)
    commit_in_parts(tmp_path, events, [120])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    for c in manifest["commits"][:1]:  # the first commit as an old store wrote it
        c.pop("bucketed")
        for rel in c["events"]:
            pq.write_table(pq.read_table(tmp_path / rel).drop_columns([BUCKET]), tmp_path / rel)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    before = reads(tmp_path)
    compact(tmp_path, chunk_rows=50)
    assert_same_reads(before, reads(tmp_path))
    assert all(c.get("bucketed") for c in read_manifest(tmp_path).commits if c["events"])


def test_files_of_another_key_version_are_compacted_apart(tmp_path: Path) -> None:
    """stored_keys rekeys commits of an older key version: their rows stay in their own file."""
    events = odd_events(300, seed=2)
    commit_in_parts(tmp_path, events.slice(0, 150), [60], key_version=1)
    commit_in_parts(tmp_path, events.slice(150), [80], key_version=2)

    def keys() -> list[str]:
        def rekey(old: pa.Table) -> pa.Array:
            return pc.binary_join_element_wise(old.column(s.EVENT_KEY), "-old", "").combine_chunks()

        got = stored_keys(tmp_path, read_manifest(tmp_path), ["2026-02"], 2, rekey, [s.EVENT_KEY])
        return sorted(got.to_pylist())

    before = keys()
    done = compact(tmp_path)
    assert files_per_month(tmp_path)["month=2026-02"] == 2
    assert keys() == before
    assert sum(k.endswith("-old") for k in before) > 0
    assert (done.files_before, done.files_after, done.rows) == (12, 6, 300)
    again = compact(tmp_path)  # one file per key version: nothing to rewrite, none reported
    assert (again.months, again.files_before, again.files_after, again.rows) == ((), 0, 0, 0)


def compact_killed_at(step: str, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``compact(store)`` killed as it calls the store module's ``step`` (a SIGKILL there)."""

    def die(*args):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(store_mod, step, die)
        with pytest.raises(KeyboardInterrupt):
            compact(store)


def test_a_crash_before_the_manifest_swap_leaves_the_old_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_in_parts(tmp_path, odd_events(400), [100, 200, 300])
    before, files = reads(tmp_path), read_manifest(tmp_path).event_files()
    compact_killed_at("_replace_manifest", tmp_path, monkeypatch)
    assert read_manifest(tmp_path).event_files() == files
    assert_same_reads(before, reads(tmp_path))  # the written file is an unlisted orphan
    assert remove_orphans(tmp_path, read_manifest(tmp_path)) == 1
    compact(tmp_path)
    assert_same_reads(before, reads(tmp_path))


def test_a_crash_after_the_swap_leaves_the_new_file_and_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_in_parts(tmp_path, odd_events(400), [100, 200, 300])
    before = reads(tmp_path)
    compact_killed_at("_remove_files", tmp_path, monkeypatch)
    assert files_per_month(tmp_path) == {"month=2026-01": 1, "month=2026-02": 4, "month=2026-03": 4}
    assert_same_reads(before, reads(tmp_path))  # the old January files are unlisted
    assert remove_orphans(tmp_path, read_manifest(tmp_path)) == 4
    compact(tmp_path)
    assert_same_reads(before, reads(tmp_path))


def test_a_reader_that_listed_the_replaced_files_reads_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescore reads its partitions over minutes: a compaction between its reading the
    manifest and the files costs it a second look at the manifest, not an error."""
    commit_in_parts(tmp_path, odd_events(300), [100, 200])
    before, stale = reads(tmp_path), read_manifest(tmp_path)
    compact(tmp_path)
    calls: list[int] = []

    def first_stale(store: Path) -> Manifest:
        calls.append(1)
        return stale if len(calls) % 2 else read_manifest(store)

    monkeypatch.setattr(store_mod, "read_manifest", first_stale)
    assert_same_reads(before, reads(tmp_path))
    monkeypatch.undo()
    with pytest.raises(StoreError, match="is missing"):  # gone, still listed: a real fault
        (tmp_path / read_manifest(tmp_path).event_files()[0]).unlink()
        read_events_table(tmp_path)


def test_compaction_refuses_a_folder_without_a_store_and_a_zero_limit(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no event store here \(no manifest.json\)"):
        compact(tmp_path / "none")
    commit_in_parts(tmp_path, odd_events(50), [20])
    with pytest.raises(StoreError, match="more_than must be at least 1 file a month, got 0"):
        compact(tmp_path, more_than=0)


EXPORT_HEADER = "created_at,adid,os_name,activity_kind,event_name\n"


def export(path: Path, *rows: tuple[str, int]) -> Path:
    """An Adjust CSV of sessions from (device, unix time)."""
    body = "".join(f"{unix},{adid},ios,session,\n" for adid, unix in rows)
    path.write_text(EXPORT_HEADER + body)
    return path


JAN, FEB = 1767574008, 1770252408  # 2026-01-05 and 2026-02-05


def test_ingest_compacts_past_the_limit_and_still_knows_every_file(tmp_path: Path) -> None:
    """Daily files: one commit each. Past compact_files the month is one file, and a second
    ingest of the same files (or of a new file repeating an event) adds nothing."""
    src, store = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    files = [
        export(src / f"d{i}.csv", (f"dev{i}", JAN + i * 3600), (f"dev{i}", FEB)) for i in range(4)
    ]
    (src / "bad.csv").write_text(EXPORT_HEADER + "not-a-time,devx,ios,session,\n")
    for i, f in enumerate(files):
        summary = ingest([f], store, compact_files=3)
        assert summary.compaction.months == (("2026-01", "2026-02") if i == 3 else ())
    assert files_per_month(store) == {"month=2026-01": 1, "month=2026-02": 1}
    assert summary.compaction.files_before == 8 and summary.compaction.files_after == 2
    ingest([src / "bad.csv"], store, compact_files=3)

    again = ingest([src], store)
    assert (again.files_skipped, again.rows_read, again.rows_stored) == (5, 0, 0)
    assert "quarantined" in again.seen_before[str(src / "bad.csv")]
    repeat = export(tmp_path / "late.csv", ("dev2", JAN + 2 * 3600), ("new", JAN))
    late = ingest([repeat], store)
    assert (late.rows_stored, late.duplicates) == (1, 1)
    assert sorted(load_events(store)["user_id"]) == sorted(
        [f"dev{i}" for i in range(4) for _ in range(2)] + ["new"]
    )


def test_ingest_with_compact_files_zero_never_compacts(tmp_path: Path) -> None:
    for i in range(3):
        ingest([export(tmp_path / f"d{i}.csv", (f"d{i}", JAN))], tmp_path / "s", compact_files=0)
    assert files_per_month(tmp_path / "s") == {"month=2026-01": 3}


@pytest.mark.parametrize("damage", ["truncated", "scrambled"])
def test_a_damaged_event_file_refuses_compaction_naming_it_and_loses_nothing(
    tmp_path: Path, damage: str
) -> None:
    """A truncated file (no footer) or one with corrupt pages: the error names the file, the
    month keeps its files, no half-written file is left, and other months still compact."""
    events = odd_events(400)
    commit_in_parts(tmp_path, events, [100, 200, 300])
    months = files_per_month(tmp_path)
    bad = sorted((tmp_path / "events" / "month=2026-02").glob("*.parquet"))[1]
    data = bad.read_bytes()
    bad.write_bytes(data[:300] if damage == "truncated" else data[:8] + b"\xab" * 400 + data[408:])
    with pytest.raises(StoreError, match=rf"{bad}: cannot read this event file \(") as caught:
        compact(tmp_path)
    assert "its month was not compacted" in str(caught.value)
    assert "Traceback" not in str(caught.value)
    after = files_per_month(tmp_path)
    assert after["month=2026-02"] == months["month=2026-02"]
    assert after["month=2026-01"] == 1  # compacted before February was reached
    listed = set(read_manifest(tmp_path).event_files())
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("events/*/*.parquet")}
    assert on_disk == listed  # the half-written file of February was removed


def test_an_ingest_whose_compaction_fails_says_its_rows_were_committed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for i in range(2):
        ingest([export(tmp_path / f"d{i}.csv", (f"d{i}", JAN))], store, compact_files=0)
    bad = sorted((store / "events" / "month=2026-01").glob("*.parquet"))[0]
    bad.write_bytes(bad.read_bytes()[:100])
    committed = r"committed \(1 row\(s\) stored\), then compaction failed: "
    with pytest.raises(StoreError, match=committed + rf"{bad}: cannot read this event file"):
        ingest([export(tmp_path / "d2.csv", ("d2", FEB))], store, compact_files=1)
    assert "d2.csv" in json.dumps(read_manifest(store).sources)
    assert files_per_month(store) == {"month=2026-01": 2, "month=2026-02": 1}
    assert list(load_events(store, start="2026-02-01")["user_id"]) == ["d2"]


def test_a_read_of_a_store_missing_a_listed_file_names_the_file(tmp_path: Path) -> None:
    commit_in_parts(tmp_path, odd_events(200), [100])
    gone = sorted((tmp_path / "events" / "month=2026-02").glob("*.parquet"))[0]
    gone.unlink()
    for read in (load_events, event_rows, events_span):
        with pytest.raises(StoreError, match=rf"{gone}: event file listed in .* is missing"):
            read(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "scrambled"])
def test_a_read_of_a_damaged_event_file_names_the_file(tmp_path: Path, damage: str) -> None:
    """A read of many files fails without saying which: the error names the damaged one."""
    commit_in_parts(tmp_path, odd_events(400), [100, 200, 300])
    bad = sorted((tmp_path / "events" / "month=2026-02").glob("*.parquet"))[2]
    data = bad.read_bytes()
    bad.write_bytes(data[:300] if damage == "truncated" else data[:8] + b"\xab" * 400 + data[408:])
    named = rf"{bad}: cannot read this event file \(.+\); it is damaged"
    with pytest.raises(StoreError, match=named):
        load_events(tmp_path)
    with pytest.raises(StoreError, match=named):
        read_events_table(tmp_path, start="2026-02-01", partition=(1, 3))
    assert len(load_events(tmp_path, end="2026-02-01")) > 0  # January is not touched
    if damage == "truncated":  # the footer is gone: even a footer-only count fails
        with pytest.raises(StoreError, match=named):
            event_rows(tmp_path)


def test_an_ingest_into_a_month_with_a_damaged_file_names_it_and_stores_nothing(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    ingest([export(tmp_path / "d0.csv", ("d0", JAN))], store)
    bad = next((store / "events" / "month=2026-01").glob("*.parquet"))
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(StoreError, match=rf"{bad}: cannot read this event file \(.+damaged"):
        ingest([export(tmp_path / "d1.csv", ("d1", JAN + 60))], store)
    assert len(read_manifest(store).commits) == 1
    assert "d1.csv" not in json.dumps(read_manifest(store).sources)  # can be ingested later
