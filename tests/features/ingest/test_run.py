"""Ingest end to end: generator output in, store out; re-runs, bad files, crashes."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import load_events, load_quarantine
from features import schema as s
from features.ingest import IngestError, ingest
from features.settings import IngestSettings
from features.synthetic import SyntheticConfig, adjust_files, generate

#: The generator's defect names → the reason ingest must give.
DEFECT_REASON = {
    "bad_created_at": "bad_timestamp",
    "missing_identity": "missing_identity",
    "truncated_row": "truncated_row",
    "unknown_event": "unknown_event",
    "negative_price": "negative_price",
    "expiry_before_purchase": "expiry_before_purchase",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 users over 12 days (legacy vocabulary first), with every defect kind made common."""
    out = tmp_path_factory.mktemp("gen")
    rates = {"unknown_event": 0.05, "negative_price": 0.3, "expiry_before_purchase": 0.05}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            adjust_files,
            "CORRUPTIONS",
            {
                kind: (rates.get(kind, 0.01), sub)
                for kind, (_, sub) in adjust_files.CORRUPTIONS.items()
            },
        )
        generate(
            SyntheticConfig(
                users=300, seed=11, start=date(2026, 1, 5), days=12, cutoffs=(date(2026, 1, 12),)
            ),
            out,
        )
    return out


@pytest.fixture(scope="module")
def ingested(generated: Path, tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("store")
    summary = ingest([generated / "raw"], store)
    return store, summary


def test_every_injected_defect_is_quarantined_with_its_reason(generated: Path, ingested) -> None:
    store, summary = ingested
    injected = pd.read_parquet(generated / "truth" / "injected.parquet")
    assert set(injected["defect"]) == set(DEFECT_REASON)  # the fixture made every kind appear
    quarantine = load_quarantine(store)
    quarantine["file"] = quarantine[s.SOURCE].map(lambda p: Path(p).name)
    got = quarantine.set_index(["file", s.LINE])[s.REASON].sort_index()
    want = (
        injected.assign(reason=injected["defect"].map(DEFECT_REASON))
        .set_index(["file", "line"])["reason"]
        .sort_index()
    )
    want.index.names = ["file", s.LINE]
    pd.testing.assert_series_equal(got, want, check_names=False)
    assert summary.quarantined == injected["defect"].map(DEFECT_REASON).value_counts().to_dict()
    assert summary.bad_files == {}


def test_duplicates_are_dropped_and_every_row_is_accounted_for(generated: Path, ingested) -> None:
    store, summary = ingested
    events = load_events(store)
    manifest = pd.read_json(generated / "manifest.json", typ="series")
    assert summary.rows_read == manifest["rows"]
    assert summary.duplicates == manifest["duplicates"]
    assert summary.rows_stored == len(events)
    assert summary.rows_read == summary.rows_stored + summary.duplicates + summary.rows_quarantined
    assert events[s.EVENT_KEY].is_unique
    assert events[s.TS].dt.tz is not None
    assert list(events.columns) == list(s.EVENT_COLUMNS)


def test_rerun_adds_nothing(generated: Path, ingested) -> None:
    store, _ = ingested
    before = load_events(store)
    again = ingest([generated / "raw"], store)
    assert (again.rows_stored, again.rows_read, again.commits) == (0, 0, 0)
    assert again.files_skipped == again.files
    pd.testing.assert_frame_equal(load_events(store), before)


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        ingest([tmp_path / "nope"], tmp_path / "store")


# --- property: any mix of valid and corrupted rows ---------------------------------------------

PROP_HEADER = (
    "{activity_kind},{created_at},{os_name},{adid},user_id,{subscription_event_type},"
    "{revenue_float},{subscription_purchased_at},{subscription_expiration_time}"
)
CORRUPT = {
    "missing_identity": lambda i: f"subscription,{1767571999 + i},ios,,,renewal,1.0,,",
    "bad_timestamp": lambda i: f"subscription,17O{i},ios,{i:032x},u{i},renewal,1.0,,",
    "missing_event_time": lambda i: f"subscription,,ios,{i:032x},u{i},renewal,1.0,,",
    "truncated_row": lambda i: f"subscription,{1767571999 + i},ios",
    "unknown_event": lambda i: f"subscription,{1767571999 + i},ios,{i:032x},u{i},wobble,,,",
    "negative_price": lambda i: f"subscription,{1767571999 + i},ios,{i:032x},u{i},renewal,-{i}.5,,",
    "expiry_before_purchase": lambda i: (
        f"subscription,{1767571999 + i},ios,{i:032x},u{i},renewal,,1767571999,1767500000"
    ),
}


def _valid(i: int) -> str:
    return f"session,{1767571999 + 37 * i},android,{i:032x},u{i},,,,"


row_plan = st.lists(
    st.tuples(st.sampled_from(["valid", "repeat", *CORRUPT]), st.integers(0, 2)),
    max_size=40,
)


@settings(max_examples=20, deadline=None)
@given(plan=row_plan)
def test_any_mix_stores_each_valid_row_once_and_quarantines_each_bad_row_once(plan) -> None:
    files: dict[int, list[str]] = {0: [], 1: [], 2: []}
    valid_ids, bad = set(), []
    for i, (what, f) in enumerate(plan):
        if what == "valid" or (what == "repeat" and not valid_ids):
            files[f].append(_valid(i))
            valid_ids.add(i)
        elif what == "repeat":  # an earlier valid row sent again, maybe in another file
            files[f].append(_valid(min(valid_ids)))
        else:
            files[f].append(CORRUPT[what](i))
            bad.append((f, len(files[f]) + 1, what))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for f, lines in files.items():
            (raw / f"part{f}.csv").write_text("\n".join([PROP_HEADER, *lines]) + "\n")
        ingest([raw], Path(tmp) / "store")
        events = load_events(Path(tmp) / "store")
        quarantine = load_quarantine(Path(tmp) / "store")
    stored = sorted(int(a, 16) for a in events[s.ADID])
    assert stored == sorted(valid_ids)
    got = sorted(
        (int(Path(src).stem.removeprefix("part")), line, reason)
        for src, line, reason in zip(
            quarantine[s.SOURCE], quarantine[s.LINE], quarantine[s.REASON], strict=True
        )
    )
    assert got == sorted(bad)


def test_cli_ingests_reports_bad_files_and_fails_in_one_line(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lapse.cli import main

    raw = tmp_path / "raw"
    raw.mkdir()
    good = sorted((generated / "raw").glob("*.csv.gz"))[:5]
    for path in good:
        (raw / path.name).write_bytes(path.read_bytes())
    (raw / "cut.csv.gz").write_bytes(good[0].read_bytes()[:-20])
    store = tmp_path / "store"
    with pytest.raises(SystemExit) as done:
        main(["ingest", str(raw), "--store", str(store)])
    assert done.value.code == 1  # a cron job notices; the good files are stored all the same
    captured = capsys.readouterr()
    assert "rows stored" in captured.out and "truncated_gzip" in captured.out
    assert "1 of 6 file(s) could not be read (listed above); everything else was stored" in (
        " ".join(captured.err.split())
    )
    assert len(load_events(store)) > 0
    quarantine = load_quarantine(store)
    bad = quarantine[quarantine[s.LINE] == 0]
    assert bad[s.REASON].tolist() == ["truncated_gzip"]
    assert Path(bad[s.SOURCE].iloc[0]).name == "cut.csv.gz"
    with pytest.raises(SystemExit) as failed:
        main(["ingest", str(tmp_path / "missing"), "--store", str(store)])
    assert failed.value.code == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_late_rows_land_in_their_month_and_copies_in_other_files_are_dropped(
    tmp_path: Path,
) -> None:
    header = "{activity_kind},{created_at},{os_name},{adid},user_id"
    midnight = int(pd.Timestamp("2026-02-01", tz="UTC").timestamp())
    jan, feb = midnight - 3600, midnight + 60
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a_2026-02-01T000000_h_p1.csv").write_text(
        f"{header}\nsession,{feb},ios,{'a' * 32},u1\nsession,{jan},ios,{'a' * 32},u1\n"
    )
    (raw / "a_2026-02-01T000000_h_p2.csv").write_text(
        f"{header}\nsession,{jan},ios,{'a' * 32},u1\n"
    )
    summary = ingest([raw], tmp_path / "store")
    assert (summary.rows_stored, summary.duplicates) == (2, 1)
    january = load_events(tmp_path / "store", end="2026-02-01")
    assert january[s.TS].tolist() == [pd.Timestamp(jan, unit="s", tz="UTC")]
    assert Path(january[s.SOURCE].iloc[0]).name == "a_2026-02-01T000000_h_p1.csv"
    assert len(load_events(tmp_path / "store", start="2026-02-01")) == 1


def test_a_callback_repeating_an_exported_row_is_a_duplicate(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    fields = {
        "activity_kind": "subscription",
        "created_at": "1767571999",
        "os_name": "ios",
        "adid": "a" * 32,
        "user_id": "u1",
        "subscription_event_type": "renewal",
        "subscription_transaction_id": "230000000000001",
        "subscription_original_transaction_id": "230000000000000",
        "revenue_float": "9.99",
    }
    header = ",".join(k if k == "user_id" else "{" + k + "}" for k in fields)
    (raw / "app_2026-01-05T000000_h.csv").write_text(header + "\n" + ",".join(fields.values()))
    query = "&".join(f"{k}={v}" for k, v in fields.items())
    (raw / "callbacks.log").write_text(f"GET /adjust?{query} HTTP/1.1\n" * 2)
    summary = ingest([raw], tmp_path / "store")
    assert (summary.rows_read, summary.rows_stored, summary.duplicates) == (3, 1, 2)
    (event,) = load_events(tmp_path / "store").to_dict("records")
    assert (event[s.EVENT], event[s.PRICE], event[s.USER_ID]) == ("renewal", 9.99, "u1")


def test_a_file_that_grew_is_read_again_and_only_its_new_rows_are_stored(tmp_path: Path) -> None:
    header = "{activity_kind},{created_at},{os_name},{adid}"
    part = tmp_path / "raw" / "app_2026-01-05T000000_h.csv"
    part.parent.mkdir()
    part.write_text(f"{header}\nsession,1767571999,ios,{'a' * 32}\n")
    first = ingest([part.parent], tmp_path / "store")
    with part.open("a") as handle:
        handle.write(f"session,1767572999,ios,{'a' * 32}\n")
    second = ingest([part.parent], tmp_path / "store")
    assert (first.rows_stored, second.rows_stored, second.duplicates) == (1, 1, 1)
    assert len(load_events(tmp_path / "store")) == 2


def test_a_source_with_no_export_files_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("not an export")
    with pytest.raises(IngestError, match=r"nothing to ingest in .*empty: no files ending in"):
        ingest([empty], tmp_path / "store")
    assert not (tmp_path / "store" / "manifest.json").exists()


# --- issue 13: one bad file never costs other files' rows -------------------------------------

SESSION_HEADER = "{created_at},{adid},{os_name},{activity_kind}"


def _sessions(n: int, start: int = 1767571999) -> str:
    return "".join(f"{start + i},{i:032x},ios,session\n" for i in range(n))


def test_a_column_named_line_does_not_abort_the_run(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.csv").write_text(f"{SESSION_HEADER},line\n1767574008,{'a' * 32},ios,session,1\n")
    (raw / "y.csv").write_text(f"{SESSION_HEADER}\n{_sessions(2)}")
    summary = ingest([raw], tmp_path / "store")
    assert (summary.rows_stored, summary.bad_files) == (3, {})
    assert summary.notes == {
        str(raw / "x.csv"): ["column 'line' is one of Lapse's own names: kept as 'raw_line'"]
    }
    events = load_events(tmp_path / "store", columns=[s.LINE, s.EXTRA])
    assert sorted(events[s.LINE]) == [2, 2, 3]


def test_unknown_columns_are_stored_alike_however_the_files_are_batched(tmp_path: Path) -> None:
    """A file without another file's unknown column stores no entry for it, whether the two
    are ingested together (one batch) or one at a time (how daily files arrive)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.csv").write_text(f"{SESSION_HEADER},campaign\n1767574008,{'a' * 32},ios,session,\n")
    (raw / "y.csv").write_text(f"{SESSION_HEADER},campaign\n1767574009,{'b' * 32},ios,session,c1\n")
    (raw / "z.csv").write_text(f"{SESSION_HEADER}\n{_sessions(1)}")

    def extras(store: Path) -> list:
        events = load_events(store, columns=[s.ADID, s.EXTRA]).sort_values(s.ADID)
        return [None if e is None else dict(e) for e in events[s.EXTRA]]

    ingest([raw], tmp_path / "together")
    for name in ("x.csv", "y.csv", "z.csv"):
        ingest([raw / name], tmp_path / "apart")
    assert (
        extras(tmp_path / "together")
        == extras(tmp_path / "apart")
        == [None, None, {"campaign": "c1"}]
    )


def test_a_truncated_gzip_keeps_its_complete_rows_and_is_reported(tmp_path: Path) -> None:
    import gzip

    raw = tmp_path / "raw"
    raw.mkdir()
    packed = gzip.compress(f"{SESSION_HEADER}\n{_sessions(300)}".encode())
    (raw / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])
    summary = ingest([raw], tmp_path / "store")
    assert summary.bad_files == {str(raw / "cut.csv.gz"): "truncated_gzip"}
    stored = load_events(tmp_path / "store")
    assert 0 < len(stored) < 300 and summary.rows_stored == len(stored)
    quarantine = load_quarantine(tmp_path / "store")
    assert quarantine[s.REASON].tolist()[0] == "truncated_gzip"
    assert quarantine[s.LINE].tolist() in ([0], [0, len(stored) + 2])
    again = ingest([raw], tmp_path / "store")
    assert (again.rows_stored, again.files_skipped) == (0, 1)


def test_folder_links_are_followed_once_and_broken_links_reported(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    data.mkdir()
    (data / "a.csv").write_text(f"{SESSION_HEADER}\n{_sessions(2)}")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "linked").symlink_to(data, target_is_directory=True)
    (data / "loop").symlink_to(raw, target_is_directory=True)  # raw/linked/loop -> raw
    (raw / "gone.csv").symlink_to(tmp_path / "missing.csv")
    summary = ingest([raw], tmp_path / "store")
    assert summary.rows_stored == 2 and summary.files == 2
    assert summary.bad_files == {str(raw / "gone.csv"): "broken_link"}
    quarantine = load_quarantine(tmp_path / "store")
    assert quarantine[s.REASON].tolist() == ["broken_link"]


def test_a_named_pipe_is_skipped_with_a_reason(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    good = tmp_path / "good.csv"
    good.write_text(f"{SESSION_HEADER}\n{_sessions(1)}")
    summary = ingest([fifo, good], tmp_path / "store")  # would block for ever before
    assert summary.rows_stored == 1
    assert summary.bad_files == {str(fifo): "not_a_regular_file"}


def test_the_time_window_comes_from_the_arguments_and_now(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    src = tmp_path / "a.csv"
    src.write_text(
        f"{SESSION_HEADER}\n0,{'a' * 32},ios,session\n1767571999,{'b' * 32},ios,session\n"
        f"1767744799,{'c' * 32},ios,session\n"  # 2026-01-07 00:13:19, two days after "now"
    )
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    summary = ingest([src], tmp_path / "store", now=now)
    assert (summary.rows_stored, summary.quarantined) == (1, {"implausible_time": 2})
    window = IngestSettings(max_future_days=3, earliest=date(1970, 1, 1))
    later = ingest([src], tmp_path / "other", window, now=now)
    assert (later.rows_stored, later.quarantined) == (3, {})


def test_the_price_bound_comes_from_the_settings(tmp_path: Path) -> None:
    a = "a" * 32
    src = tmp_path / "a.csv"
    src.write_text(
        f"{PURCHASE_HEADER}\n1767571999,{a},ios,event,purchase,150\n"
        f"1767572999,{a},ios,event,purchase,1e308\n"
    )
    summary = ingest([src], tmp_path / "store")
    assert (summary.rows_stored, summary.quarantined) == (1, {"implausible_price": 1})
    reason = load_quarantine(tmp_path / "store")
    assert reason[s.LINE].tolist() == [3]
    strict = ingest([src], tmp_path / "strict", IngestSettings(max_price=100))
    assert (strict.rows_stored, strict.quarantined) == (0, {"implausible_price": 2})


def test_a_huge_price_in_a_json_callback_is_implausible_too(tmp_path: Path) -> None:
    import json

    a = "a" * 32
    base = {"adid": a, "os_name": "ios", "activity_kind": "event", "event_name": "purchase"}
    lines = [
        {**base, "created_at": 1767571999, "revenue_float": 1e300},  # a JSON number, not text
        {**base, "created_at": 1767572999, "revenue_float": 4.99},
    ]
    (tmp_path / "cb.log").write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = ingest([tmp_path / "cb.log"], tmp_path / "store")
    assert (summary.rows_stored, summary.quarantined) == (1, {"implausible_price": 1})


def test_ingest_settings_have_the_window_defaults() -> None:
    from features.settings import IngestSettings

    settings = IngestSettings()
    assert (settings.earliest, settings.max_future_days) == (date(2008, 1, 1), 1.0)
    assert IngestSettings(earliest="2015-06-01").earliest == date(2015, 6, 1)


PURCHASE_HEADER = "{created_at},{adid},{os_name},{activity_kind},{event_name},{revenue_float}"


def test_two_purchases_in_one_second_are_two_events_and_a_copy_is_one(tmp_path: Path) -> None:
    a = "a" * 32
    src = tmp_path / "a.csv"
    src.write_text(
        f"{PURCHASE_HEADER}\n1767571999,{a},ios,event,purchase,0.99\n"
        f"1767571999,{a},ios,event,purchase,9.99\n1767571999,{a},ios,event,purchase,0.99\n"
    )
    (tmp_path / "cb.log").write_text(
        f"/cb?created_at=1767571999&adid={a}&os_name=ios&activity_kind=event"
        "&event_name=purchase&revenue_float=9.99\n"
    )
    summary = ingest([src, tmp_path / "cb.log"], tmp_path / "store")
    assert (summary.rows_stored, summary.duplicates) == (2, 2)
    assert sorted(load_events(tmp_path / "store")[s.PRICE]) == [0.99, 9.99]


def test_a_store_keyed_by_an_older_key_version_still_dedupes(tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq

    store = tmp_path / "store"
    src = tmp_path / "raw" / "a.csv"
    src.parent.mkdir()
    src.write_text(f"{SESSION_HEADER}\n{_sessions(3)}")
    ingest([src.parent], store)
    # make it look like a store written before key version 2: other keys, no version recorded
    manifest = json.loads((store / "manifest.json").read_text())
    for entry in manifest["commits"]:
        entry.pop("key_version")
        for rel in entry["events"]:
            table = pq.read_table(store / rel)
            old = [f"v1-{i}" for i in range(table.num_rows)]
            index = table.schema.get_field_index(s.EVENT_KEY)
            pq.write_table(table.set_column(index, s.EVENT_KEY, pa.array(old)), store / rel)
    (store / "manifest.json").write_text(json.dumps(manifest))
    src.write_text(f"{SESSION_HEADER}\n{_sessions(4)}")  # the file grew by one row
    again = ingest([src.parent], store)
    assert (again.rows_stored, again.duplicates) == (1, 3)
    assert len(load_events(store)) == 4
    assert ingest([src.parent], store).rows_stored == 0


# --- reprocessing the quarantine under today's rules ---------------------------------------


def test_reprocess_quarantine_stores_rows_that_now_pass_exactly_once(tmp_path: Path) -> None:
    from features.ingest import reprocess_quarantine

    store = tmp_path / "store"
    src = tmp_path / "a.csv"
    src.write_text(
        f"{SESSION_HEADER},{{network_name}}\n"
        f"1262304000,{'a' * 32},ios,session,x\n"  # 2010: before a strict earliest
        f'1262304001,{"b" * 32},ios,session,"two\nlines"\n'
        f"1767571999,{'c' * 32},ios,session,x\n"
        f"1767571999,{'d' * 32},ios\n"  # truncated: fails under any rule
    )
    first = ingest([src], store, IngestSettings(earliest=date(2020, 1, 1)))
    assert (first.rows_stored, first.quarantined) == (
        1,
        {"implausible_time": 2, "truncated_row": 1},
    )
    again = reprocess_quarantine(store)  # default window: 2008 onwards
    assert (again.rows_read, again.rows_stored, again.quarantined) == (3, 2, {"truncated_row": 1})
    events = load_events(store)
    assert sorted(zip(events[s.LINE], events[s.ADID].str[0], strict=True)) == [
        (2, "a"),
        (3, "b"),
        (5, "c"),
    ]
    assert Path(events[s.SOURCE].iloc[0]) == src
    quarantine = load_quarantine(store)
    assert quarantine[[s.LINE, s.REASON, s.RAW]].values.tolist() == [
        [6, "truncated_row", f"1767571999,{'d' * 32},ios"]
    ]
    twice = reprocess_quarantine(store)
    assert (twice.rows_read, twice.rows_stored, twice.commits) == (0, 0, 0)
    assert twice.already_retried == 1  # the truncated row: said, not silently skipped
    assert ingest([src], store).rows_stored == 0 and len(load_events(store)) == 3


def test_reprocess_quarantine_drops_rows_already_stored_and_reads_callbacks(
    tmp_path: Path,
) -> None:
    from features.ingest import reprocess_quarantine

    store = tmp_path / "store"
    line = f"/cb?created_at=1262304000&adid={'a' * 32}&os_name=ios&activity_kind=session\n"
    (tmp_path / "a.log").write_text(line)
    (tmp_path / "b.log").write_text("\n" + line)  # other bytes, same callback
    first = ingest([tmp_path / "a.log"], store, IngestSettings(earliest=date(2020, 1, 1)))
    ingest([tmp_path / "b.log"], store, IngestSettings(earliest=date(2009, 1, 1)))
    assert first.quarantined == {"implausible_time": 1} and len(load_events(store)) == 1
    again = reprocess_quarantine(store)
    assert (again.rows_read, again.rows_stored, again.duplicates) == (1, 0, 1)
    assert load_quarantine(store).empty


def test_a_file_rejected_before_is_said_to_be_rejected_not_already_in_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (hostile review): a rejected file ingested again was "already in the store"."""
    from lapse import render

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "notes.csv").write_text("colour,size\nred,3\n")  # no Adjust column: rejected whole
    bad_time = f"{SESSION_HEADER}\n{_sessions(2)}0,{'b' * 32},ios,session\n"
    (raw / "partly.csv").write_text(bad_time)  # created_at 0: one row quarantined
    (raw / "fine.csv").write_text(f"{SESSION_HEADER}\n{_sessions(3, start=1767600000)}")
    store = tmp_path / "store"
    first = ingest([raw], store)
    assert first.bad_files == {str(raw / "notes.csv"): "not_adjust_csv"}
    assert first.quarantined == {"implausible_time": 1}
    again = ingest([raw], store)
    assert (again.files_skipped, again.rows_read, again.commits) == (3, 0, 0)
    assert set(again.seen_before) == {str(raw / "notes.csv"), str(raw / "partly.csv")}
    rejected = again.seen_before[str(raw / "notes.csv")]
    assert rejected.startswith("rejected before in commit 1 (not_adjust_csv: header ")
    assert "fix the file (or export it again) and ingest the new file" in rejected
    partly = again.seen_before[str(raw / "partly.csv")]
    assert partly.startswith("ingested before in commit 1: 2 row(s) stored, 1 quarantined")
    assert "`lapse ingest --reprocess-quarantine`" in partly
    # the same bytes under another name say where they were seen
    (tmp_path / "copy.csv").write_bytes((raw / "notes.csv").read_bytes())
    copied = ingest([tmp_path / "copy.csv"], store).seen_before[str(tmp_path / "copy.csv")]
    assert copied.startswith(f"rejected before as {raw / 'notes.csv'} in commit 1")
    render.ingest(again)
    shown = " ".join(capsys.readouterr().out.split())
    assert "already in the store" not in shown
    assert "Seen before, not all stored then" in shown and "rejected before" in shown
