"""features.ingest.callbacks: callback objects in memory go through ingest's own rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

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


def _tiny_store(tmp_path):
    from features.ingest import ingest
    from features.synthetic import SyntheticConfig, generate

    generate(SyntheticConfig(users=40, days=20, shape="monthly"), tmp_path / "app")
    ingest([tmp_path / "app" / "raw"], tmp_path / "store", now=datetime(2030, 1, 1, tzinfo=UTC))
    return tmp_path / "store"


def test_stored_events_read_back_as_callbacks_normalise_to_the_same_events(tmp_path) -> None:
    """stored_callbacks gives back what Adjust sent: through callback_events, the same events."""
    import pytest

    from features import load_events
    from features.ingest.callbacks import StoredSourceError, stored_callbacks

    store = _tiny_store(tmp_path)
    events = load_events(store)
    users = sorted(events[s.USER_ID].unique())[:3]
    objects = stored_callbacks(store, users)
    mine = events[events[s.USER_ID].isin(users)]
    assert len(objects) == len(mine) > 0
    assert all("created_at" in o and "{" not in "".join(o) for o in objects)  # bare names
    again = callback_events(objects, now=datetime(2030, 1, 1, tzinfo=UTC)).events
    assert again.num_rows == len(mine) and sorted(again.column(s.EVENT_KEY).to_pylist()) == sorted(
        mine[s.EVENT_KEY]
    )
    assert stored_callbacks(store, ["nobody"]) == []
    for path in (tmp_path / "app" / "raw").rglob("*.gz"):
        path.unlink()
    with pytest.raises(StoredSourceError, match="cannot read the export file"):
        stored_callbacks(store, users)


def test_keys_missing_from_the_first_object_survive_a_line_read_on_its_own() -> None:
    """Regression (hostile review): when Arrow could not read a batch at once (one refused
    line, or one ``created_at`` sent as a number among strings), the objects were read line by
    line into a table whose columns were the FIRST object's keys only: every later key (an
    event's ``event_name``) was lost, every in-app event refused and no one scored."""
    event = {**SESSION, "activity_kind": "event", "event_name": "like", "created_at": "1767574010"}
    for odd in ({**SESSION, "adid": "a9"}, {**SESSION, "adid": "a9", "x": [1, {}]}):
        # a number among strings, or a value Arrow reads as another type than the first line's
        got = callback_events([{**SESSION, "created_at": "1767574008"}, event, odd], now=NOW)
        assert got.rejected == []
        events = got.events.to_pandas().set_index(s.USER_ID)
        assert events[events[s.KIND] == s.KIND_EVENT][s.EVENT].tolist() == ["like"]
        assert sorted(events.index) == ["a1", "a1", "a9"]


def test_a_whole_float_time_reads_the_same_whether_arrow_or_python_reads_the_batch() -> None:
    """Regression (hostile review): ``created_at: 1767574009.0`` was accepted when Arrow read the
    batch, and refused as a bad timestamp ("1767574009.0") when one odd line sent the batch
    through the line-by-line reader."""
    whole = {**SESSION, "adid": "a2", "created_at": 1767574009.0}
    for batch in ([SESSION, whole], [SESSION, whole, {**SESSION, "adid": "a3", "x": [1, {}]}]):
        got = callback_events(batch, now=NOW)
        assert got.rejected == [] and "a2" in got.events.column(s.USER_ID).to_pylist()


def test_a_huge_whole_float_stays_huge_not_wrapped_to_a_negative() -> None:
    """Regression (hostile review): Arrow's path cast a whole float past int64 (a price of 1e300)
    to -9223372036854775808 before the price check saw it."""
    from features.ingest.adjust import _as_text

    column = pa.chunked_array([pa.array([1e300, 9.99, 1767574009.0])])
    assert [float(v) for v in _as_text(column).to_pylist()] == [1e300, 9.99, 1767574009.0]


def test_a_refused_callbacks_long_value_is_cut_in_its_detail() -> None:
    """Regression (hostile review): the detail repeated a client's value whole (the service's
    /score_events answer, the quarantine's detail); the raw text keeps it."""
    long = {"activity_kind": "session", "created_at": "y" * 5000, "adid": "a", "os_name": "ios"}
    short = {**long, "created_at": "soon"}
    refused = callback_events([long, short]).rejected
    assert [(r.index, r.reason) for r in refused] == [(0, "bad_timestamp"), (1, "bad_timestamp")]
    assert refused[0].detail == f"created_at='{'y' * 80}…' (5,000 characters)"
    assert refused[1].detail == "created_at='soon'"
