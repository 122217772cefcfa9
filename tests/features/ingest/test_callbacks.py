"""features.ingest.callbacks: callback objects in memory go through ingest's own rules."""

from __future__ import annotations

from datetime import UTC, datetime

from features import schema as s
from features.ingest.callbacks import callback_events

SESSION = {"activity_kind": "session", "created_at": 1767574008, "adid": "a1", "os_name": "ios"}
NOW = datetime(2026, 2, 1, tzinfo=UTC)


def test_each_refusal_names_its_index_and_copies_are_dropped() -> None:
    objects = [
        SESSION,
        SESSION,  # the same callback twice: one event
        {**SESSION, "created_at": "garbage"},
        "not an object",
        {**SESSION, "adid": "a2", "note": "\udbab"},  # a lone surrogate: was a crash (500)
        {**SESSION, "adid": "a3", "created_at": 0},  # 1970: before ingest.earliest
    ]
    got = callback_events(objects, now=NOW)
    assert got.events.column(s.USER_ID).to_pylist() == ["a1"] and got.duplicates == 1
    assert [(r.index, r.reason) for r in got.rejected] == [
        (2, "bad_timestamp"),
        (3, "invalid_callback"),
        (4, "invalid_callback"),
        (5, "implausible_time"),
    ]
    assert "lone surrogate" in got.rejected[2].detail


def test_a_callback_log_line_with_a_lone_surrogate_costs_only_that_line(tmp_path) -> None:
    """Regression (hostile review): one such line aborted the whole ingest run."""
    from features import load_events
    from features.ingest import ingest

    log = tmp_path / "callbacks.log"
    log.write_text(
        '{"activity_kind":"session","created_at":1767574008,"adid":"a1","os_name":"ios",'
        '"x":"\\udbab"}\n'
        '{"activity_kind":"session","created_at":1767574009,"adid":"a2","os_name":"ios"}\n'
    )
    summary = ingest([log], tmp_path / "store", now=NOW)
    assert (summary.rows_stored, summary.quarantined) == (1, {"invalid_callback": 1})
    assert load_events(tmp_path / "store")[s.USER_ID].tolist() == ["a2"]


def _export(path, rows: list[str]) -> None:
    """A raw-export CSV with Adjust's {placeholder} header, gzip when the name says so."""
    import gzip

    text = "{activity_kind},{created_at},{adid},{os_name},{event_name}\n" + "".join(
        f"{r}\n" for r in rows
    )
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_stored_events_give_back_the_callbacks_they_were_read_from(tmp_path) -> None:
    """Round trip: the objects read back from the export score as the stored events."""
    from features import load_events
    from features.ingest import ingest
    from features.ingest.callbacks import stored_callbacks

    _export(tmp_path / "a.csv.gz", ["session,1767574008,a1,ios,", "session,1767574100,a2,ios,"])
    _export(tmp_path / "b.csv", ["event,1767574200,a1,ios,workout"])
    ingest([tmp_path / "a.csv.gz", tmp_path / "b.csv"], tmp_path / "store", now=NOW)
    events = load_events(tmp_path / "store")
    mine = events[events[s.USER_ID] == "a1"]
    objects = stored_callbacks(mine)
    assert objects == [
        {"activity_kind": "session", "created_at": "1767574008", "adid": "a1", "os_name": "ios"},
        {
            "activity_kind": "event",
            "created_at": "1767574200",
            "adid": "a1",
            "os_name": "ios",
            "event_name": "workout",
        },
    ]
    again = callback_events(objects, now=NOW).events
    assert sorted(again.column(s.EVENT_KEY).to_pylist()) == sorted(mine[s.EVENT_KEY])


def test_a_stored_row_that_cannot_be_read_back_is_named(tmp_path) -> None:
    import pytest

    from features import load_events
    from features.ingest import ingest
    from features.ingest.callbacks import StoredRowError, stored_callbacks

    export = tmp_path / "a.csv"
    _export(export, ["session,1767574008,a1,ios,", "session,1767574100,a2,ios,"])
    ingest([export], tmp_path / "store", now=NOW)
    events = load_events(tmp_path / "store")
    _export(export, ["session,1767574008,a1,ios,"])  # rewritten after ingest: a row is gone
    with pytest.raises(StoredRowError, match=r"a\.csv: line 3 is not a row of 5 columns"):
        stored_callbacks(events)
    export.unlink()
    with pytest.raises(StoredRowError, match="cannot read the export ingest read"):
        stored_callbacks(events)
