"""The event store: time-range reads, sandbox filter, atomic commits, orphans after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import load_events, load_quarantine
from features import schema as s
from features.ingest import ingest
from features.ingest.store import (
    EVENT_SCHEMA,
    MANIFEST,
    Manifest,
    StoreError,
    commit,
    read_events_table,
    read_manifest,
    remove_orphans,
    writer_lock,
)

T0 = pd.Timestamp("2026-01-30T12:00", tz="UTC")


def events(*specs: tuple[str, pd.Timestamp, str]) -> pa.Table:
    """Canonical rows from (user, ts, environment)."""
    n = len(specs)
    cols = {
        name: pa.nulls(n, field.type)
        for name, field in zip(EVENT_SCHEMA.names, EVENT_SCHEMA, strict=True)
    }
    cols[s.USER_ID] = pa.array([u for u, _, _ in specs])
    cols[s.PLATFORM] = pa.array(["ios"] * n)
    cols[s.TS] = pa.array([t.to_pydatetime() for _, t, _ in specs], pa.timestamp("us", tz="UTC"))
    cols[s.KIND] = pa.array(["session"] * n)
    cols[s.EVENT] = pa.array(["session"] * n)
    cols[s.ENVIRONMENT] = pa.array([e for _, _, e in specs])
    cols[s.EVENT_KEY] = pa.array([f"{u}-{t.value}" for u, t, _ in specs])
    cols[s.SOURCE] = pa.array(["x.csv"] * n)
    cols[s.LINE] = pa.array(range(2, n + 2), pa.int64())
    return pa.table(cols, schema=EVENT_SCHEMA)


EMPTY_Q = pa.table(
    {
        s.SOURCE: pa.array([], pa.string()),
        s.LINE: pa.array([], pa.int64()),
        s.REASON: pa.array([], pa.string()),
        s.RAW: pa.array([], pa.string()),
        s.DETAIL: pa.array([], pa.string()),
    }
)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rows = [("a", T0 + pd.Timedelta(days=d), "production") for d in range(0, 40, 4)]
    rows.append(("qa", T0 + pd.Timedelta(days=3), "sandbox"))
    with writer_lock(tmp_path):
        commit(tmp_path, Manifest(), events(*rows), EMPTY_Q, [{"sha256": "x", "path": "x.csv"}])
    return tmp_path


def test_time_range_is_half_open_and_prunes_months(store: Path) -> None:
    start, end = T0 + pd.Timedelta(days=4), T0 + pd.Timedelta(days=12)
    got = load_events(store, start, end)
    assert got[s.TS].tolist() == [T0 + pd.Timedelta(days=d) for d in (4, 8)]
    assert str(got[s.TS].dt.tz) == "UTC"
    # naive bounds are UTC; a range inside February opens only the February partition
    feb = load_events(store, "2026-02-01", "2026-03-01")
    assert feb[s.TS].min() >= pd.Timestamp("2026-02-01", tz="UTC")
    assert len(feb) == 8  # 7 production days + the sandbox row on 2026-02-02
    manifest = read_manifest(store)
    assert sorted(f.split("/")[1] for f in manifest.event_files()) == [
        "month=2026-01",
        "month=2026-02",
        "month=2026-03",
    ]


def test_sandbox_filter_and_columns(store: Path) -> None:
    everything = load_events(store)
    assert (everything[s.ENVIRONMENT] == "sandbox").sum() == 1
    production = load_events(store, include_sandbox=False, columns=[s.USER_ID, s.TS])
    assert list(production.columns) == [s.USER_ID, s.TS]
    assert set(production[s.USER_ID]) == {"a"}
    with pytest.raises(StoreError, match="unknown event column"):
        load_events(store, columns=["nope"])


def test_a_time_range_never_opens_the_other_months(store: Path) -> None:
    """Months outside the range are pruned before reading: junk there cannot be noticed."""
    for name in read_manifest(store).event_files():
        if "month=2026-01" not in name:
            (store / name).write_bytes(b"not parquet")
    table = read_events_table(store, T0, T0 + pd.Timedelta(days=1))
    assert table.num_rows == 1 and table[s.TS][0].as_py() == T0.to_pydatetime()
    with pytest.raises(
        StoreError, match=r"month=2026-02/.*: cannot read this event file \(.*(?i:parquet)"
    ):
        read_events_table(store, T0, T0 + pd.Timedelta(days=10))  # read once it is in range


def test_empty_store_reads_as_empty_frames(tmp_path: Path) -> None:
    assert list(load_events(tmp_path).columns) == list(s.EVENT_COLUMNS)
    assert len(load_quarantine(tmp_path)) == 0


def test_readers_ignore_files_no_commit_lists_and_the_writer_deletes_them(store: Path) -> None:
    before = load_events(store)
    orphan = store / "events" / "month=2026-01" / "part-999999-deadbeef.parquet"
    pq.write_table(events(("ghost", T0, "production")), orphan)
    (store / f".{MANIFEST}.abc.tmp").write_text("{")
    pd.testing.assert_frame_equal(load_events(store), before)
    assert remove_orphans(store, read_manifest(store)) == 2
    assert not orphan.exists()


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with (
        writer_lock(tmp_path),
        pytest.raises(StoreError, match="another ingest"),
        writer_lock(tmp_path),
    ):
        pass


def test_a_store_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    store = tmp_path / "a_file" / "store"
    with (
        pytest.raises(
            StoreError,
            match=r"a_file/store: cannot create the event store here \(Not a directory\)",
        ),
        writer_lock(store),
    ):
        pass


def test_a_foreign_manifest_is_an_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 99}))
    with pytest.raises(StoreError, match="format"):
        load_events(tmp_path)


KILLER = """
import os, signal, sys
import features.ingest.run as ingest_mod
import features.ingest.store as store_mod
ingest_mod.BATCH_FILES = 40
calls = 0
real = store_mod._replace_manifest
def dying(store, manifest):
    global calls
    calls += 1
    if calls == 3:  # parquet files of commit 3 are written; die before publishing them
        os.kill(os.getpid(), signal.SIGKILL)
    real(store, manifest)
store_mod._replace_manifest = dying
ingest_mod.ingest([sys.argv[1]], sys.argv[2])
"""


SLOW_INGEST = """
import sys
import features.ingest.run as ingest_mod
ingest_mod.BATCH_FILES = 10
ingest_mod.ingest([sys.argv[1]], sys.argv[2])
"""


def test_sigkill_mid_ingest_then_rerun_equals_a_clean_run(tmp_path: Path, raw_export: Path) -> None:
    """The process dies between writing a commit's parquet files and publishing them."""
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(raw_export), str(crashed)],
        cwd=Path(__file__).parents[3],
        capture_output=True,
    )
    assert done.returncode == -9
    assert len(read_manifest(crashed).commits) == 2
    listed = set(read_manifest(crashed).event_files())
    on_disk = {p.relative_to(crashed).as_posix() for p in (crashed / "events").rglob("*.parquet")}
    assert on_disk - listed  # the dead commit left orphans that readers ignore
    resumed = ingest([raw_export], crashed)
    assert resumed.orphans_removed > 0
    ingest([raw_export], clean)
    _assert_same_store(crashed, clean)


def test_sigkill_from_outside_at_any_moment_then_rerun_equals_a_clean_run(
    tmp_path: Path, raw_export: Path
) -> None:
    """Killed by another process once some commits are in, wherever it happens to be."""
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_INGEST, str(raw_export), str(crashed)],
        cwd=Path(__file__).parents[3],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if (crashed / MANIFEST).exists() and len(read_manifest(crashed).commits) >= 3:
            break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -9, "the ingest finished before it could be killed"
    ingest([raw_export], crashed)
    ingest([raw_export], clean)
    _assert_same_store(crashed, clean)


def _assert_same_store(crashed: Path, clean: Path) -> None:
    """Same events (source and line included), same quarantine, same ingested files."""

    def contents(store: Path) -> pd.DataFrame:
        return load_events(store).sort_values(s.EVENT_KEY, ignore_index=True)

    pd.testing.assert_frame_equal(contents(crashed), contents(clean))
    q = [
        load_quarantine(p).sort_values([s.SOURCE, s.LINE], ignore_index=True)
        for p in (crashed, clean)
    ]
    pd.testing.assert_frame_equal(*q)
    assert set(read_manifest(crashed).sources) == set(read_manifest(clean).sources)


@pytest.fixture(scope="module")
def raw_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datetime import date

    from features.synthetic import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("gen")
    generate(
        SyntheticConfig(
            users=120, seed=5, start=date(2026, 1, 5), days=8, cutoffs=(date(2026, 1, 10),)
        ),
        out,
    )
    return out / "raw"


def test_store_and_ingest_errors_are_lapse_errors() -> None:
    from base import LapseError
    from features.ingest import IngestError, StoreError

    assert issubclass(StoreError, LapseError) and issubclass(StoreError, ValueError)
    assert issubclass(IngestError, LapseError) and issubclass(IngestError, ValueError)


# --- footers: parsed once per process, row groups chosen by their bucket statistics ---------------


@pytest.fixture
def many_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store of 600 subscribers in two commits (two files in one month), 40 rows a row group."""
    import features.ingest.store as store_mod

    monkeypatch.setattr(store_mod, "EVENT_ROW_GROUP_ROWS", 40)
    users = [f"subscriber-{i:04d}" for i in range(600)]
    with writer_lock(tmp_path):
        manifest = Manifest()
        for n, half in enumerate((users[::2], users[1::2])):
            rows = [(u, T0 + pd.Timedelta(minutes=i), "production") for i, u in enumerate(half)]
            manifest = commit(
                tmp_path, manifest, events(*rows), EMPTY_Q, [{"sha256": f"{n}", "path": f"{n}.csv"}]
            )
    return tmp_path


def _in_partition(table: pa.Table, index: int, count: int) -> list[str]:
    """The slow reference: every row's bucket computed from its subscriber, then the range."""
    from features.ingest.partitions import partition_of, subscriber_buckets

    buckets = subscriber_buckets(table.column(s.USER_ID), table.column(s.PLATFORM))
    mine = partition_of(buckets, count) == index
    return sorted(table.filter(pa.array(mine)).column(s.EVENT_KEY).to_pylist())


@pytest.mark.parametrize("count", [1, 2, 7, 64])
def test_a_partition_reads_exactly_its_subscribers_from_the_row_groups_reaching_them(
    many_row_groups: Path, count: int
) -> None:
    from features.ingest.partitions import bucket_range
    from features.ingest.store import _footer

    everything = read_events_table(many_row_groups)
    files = sorted(many_row_groups.glob("events/*/*.parquet"))
    assert len(files) == 2 and all(pq.ParquetFile(f).metadata.num_row_groups >= 8 for f in files)
    for index in range(count):
        got = read_events_table(many_row_groups, partition=(index, count))
        assert sorted(got.column(s.EVENT_KEY).to_pylist()) == _in_partition(
            everything, index, count
        )
        first, last = bucket_range(index, count)
        for path in files:  # a row group is skipped only when none of its rows is in range
            kept = _footer(path).row_groups_in(first, last).row_groups
            kept_ids = {g.id for g in kept}
            whole = pq.ParquetFile(path)
            for g in range(whole.metadata.num_row_groups):
                b = whole.read_row_group(g, columns=["bucket"]).column(0).to_numpy()
                if ((b >= first) & (b < last)).any():
                    assert g in kept_ids, (path.name, g, index, count)
            if count == 64:  # a narrow range leaves most row groups unread
                assert len(kept) < whole.metadata.num_row_groups / 2


def test_each_footer_is_parsed_once_and_again_once_its_file_changes(
    many_row_groups: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import features.ingest.store as store_mod
    from features.ingest.store import _Footer, compact

    store_mod._footer.clear()
    parsed: list[str] = []
    read = _Footer.read.__func__

    def counted(cls, path: Path) -> _Footer:
        parsed.append(Path(path).name)
        return read(cls, path)

    monkeypatch.setattr(_Footer, "read", classmethod(counted))
    for index in range(4):
        read_events_table(many_row_groups, partition=(index, 4))
    assert len(parsed) == 2  # two files, however many partitions read them

    compact(many_row_groups)  # a new file replaces both: parsed once, the old ones never again
    before = read_events_table(many_row_groups, partition=(1, 4))
    read_events_table(many_row_groups, partition=(2, 4))
    assert len(parsed) == 3
    (new,) = many_row_groups.glob("events/*/*.parquet")
    assert parsed[-1] == new.name

    data, kept = new.read_bytes(), new.stat()  # damaged after its footer was kept: read again,
    new.write_bytes(data[: len(data) // 2])  # and named
    with pytest.raises(StoreError, match=new.name):
        read_events_table(many_row_groups, partition=(1, 4))
    assert parsed.count(new.name) >= 2  # not served from the footer kept before
    new.write_bytes(data)  # restored with its old times (cp -p): its change time is new
    os.utime(new, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    again = parsed.count(new.name)
    assert read_events_table(many_row_groups, partition=(1, 4)).equals(before)
    assert parsed.count(new.name) == again + 1


def test_the_footer_cache_lets_the_least_recently_used_files_go_past_its_limit(
    many_row_groups: Path,
) -> None:
    from features.ingest.store import _FooterCache

    first, second = sorted(many_row_groups.glob("events/*/*.parquet"))
    groups = pq.ParquetFile(first).metadata.num_row_groups
    cache = _FooterCache(limit=groups)  # room for one of the two files
    one = cache(first)
    assert cache(first) is one  # kept
    cache(second)
    assert cache(first) is not one  # the first went to make room, and is read again
    roomy = _FooterCache(limit=10 * groups)
    kept = roomy(first)
    roomy(second)
    assert roomy(first) is kept


def test_a_read_outlasts_a_compaction_publishing_month_after_month_under_it(
    many_row_groups: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction in another process publishes each month on its own: a reader's manifest can
    go stale twice in one read, and is read again each time (it never fails)."""
    import features.ingest.store as store_mod
    from features.ingest.partitions import partition_of, subscriber_buckets

    later = [
        (f"late-{i:03d}", T0 + pd.Timedelta(days=5, minutes=i), "production") for i in range(60)
    ]
    with writer_lock(many_row_groups):  # a second month (February) of two files
        manifest = read_manifest(many_row_groups)
        for n in (0, 1):
            manifest = commit(
                many_row_groups,
                manifest,
                events(*later[n::2]),
                EMPTY_Q,
                [{"sha256": f"late{n}", "path": f"late{n}.csv"}],
            )
    everything = read_events_table(many_row_groups)
    buckets = subscriber_buckets(everything.column(s.USER_ID), everything.column(s.PLATFORM))
    expected = everything.filter(pa.array(partition_of(buckets, 3) == 1))
    months = iter(["2026-01", "2026-02"])
    real = store_mod._read_events

    def compacted_meanwhile(store: Path, manifest: Manifest, *args: object) -> pa.Table:
        month = next(months, None)  # the first two tries each meet one month compacted
        if month is not None:
            with writer_lock(store):
                store_mod._compact_month(store, read_manifest(store), month, 1000)
        return real(store, manifest, *args)

    monkeypatch.setattr(store_mod, "_read_events", compacted_meanwhile)
    got = read_events_table(many_row_groups, partition=(1, 3))
    assert len(list(many_row_groups.glob("events/*/*.parquet"))) == 2  # both months compacted
    assert sorted(got.column(s.EVENT_KEY).to_pylist()) == sorted(
        expected.column(s.EVENT_KEY).to_pylist()
    )
    assert got.num_rows > 0
