"""The scores history: appended by scoring day, never rewritten, atomic, read back by dates."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from features import schema as s
from serving import history
from serving.history import HistoryError, append_history, history_days, read_history


def _scores(n: int, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            s.USER_ID: [f"u{i}" for i in range(n)],
            s.PLATFORM: ["ios" if i % 2 else "android" for i in range(n)],
            s.CHURN_PROBABILITY: [round(offset + i / (n * 2), 6) for i in range(n)],
            s.BUCKET: ["high" if i > n // 2 else "low" for i in range(n)],
            s.REASONS: [["billing_trouble"]] * n,
        }
    )


def test_each_day_is_a_partition_and_each_version_a_file(tmp_path: Path) -> None:
    first = append_history(tmp_path, _scores(4), date(2026, 3, 1), "lapse-churn", "1")
    second = append_history(tmp_path, _scores(3), "2026-03-08", "lapse-churn", "1")
    other = append_history(tmp_path, _scores(2, 0.1), date(2026, 3, 8), "lapse-churn", "2")
    root = tmp_path / "scores_history"
    assert first.path == root / "as_of=2026-03-01" / "lapse-churn-v1.parquet"
    assert sorted(p.name for p in (root / "as_of=2026-03-08").iterdir()) == [
        "lapse-churn-v1.parquet",
        "lapse-churn-v2.parquet",
    ]
    assert (first.rows, second.rows, other.rows) == (4, 3, 2)
    assert first.written and second.written and other.written
    assert history_days(tmp_path) == [date(2026, 3, 1), date(2026, 3, 8)]

    everything = read_history(tmp_path)
    assert list(everything.columns) == list(s.HISTORY_COLUMNS)
    assert len(everything) == 9
    assert str(everything[s.AS_OF].dtype) == "datetime64[us, UTC]"
    day8 = everything[everything[s.AS_OF] == pd.Timestamp("2026-03-08", tz="UTC")]
    assert day8.groupby(s.MODEL_VERSION).size().to_dict() == {"1": 3, "2": 2}
    v2 = day8[day8[s.MODEL_VERSION] == "2"]
    assert v2[s.CHURN_PROBABILITY].tolist() == [0.1, 0.35]
    assert v2[s.USER_ID].tolist() == ["u0", "u1"] and set(v2[s.MODEL_NAME]) == {"lapse-churn"}


def test_between_dates_includes_both_ends(tmp_path: Path) -> None:
    for day in (1, 8, 15, 22):
        append_history(tmp_path, _scores(2), date(2026, 3, day), "m", "1")
    got = read_history(tmp_path, since="2026-03-08", until=date(2026, 3, 15))
    assert sorted(got[s.AS_OF].dt.day.unique().tolist()) == [8, 15]
    assert read_history(tmp_path, since="2026-03-16")[s.AS_OF].dt.day.unique().tolist() == [22]
    assert read_history(tmp_path, until="2026-02-28").empty
    with pytest.raises(HistoryError, match="since 2026-03-15 is after until 2026-03-08"):
        read_history(tmp_path, since="2026-03-15", until="2026-03-08")


def test_the_same_version_on_the_same_day_keeps_the_first_scoring(tmp_path: Path) -> None:
    append_history(tmp_path, _scores(4), date(2026, 3, 1), "m", "1")
    again = append_history(tmp_path, _scores(6, 0.2), date(2026, 3, 1), "m", "1")
    assert not again.written and again.rows == 4
    kept = read_history(tmp_path)
    assert len(kept) == 4 and kept[s.CHURN_PROBABILITY].max() < 0.5


@pytest.mark.parametrize("existing_day", [False, True])
def test_two_rescores_of_the_same_day_at_once_keep_the_first_scoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing_day: bool
) -> None:
    """Both find no file for (day, version); the one that publishes second must not replace
    the first's scores (the ones sent to Braze) nor claim to have written."""
    if existing_day:
        append_history(tmp_path, _scores(3), date(2026, 3, 1), "m", "1")
    write, raced = history._write, []

    def racing(table, path):
        if not raced:  # the other rescore finishes while this one writes its staged file
            raced.append(None)
            raced[0] = append_history(tmp_path, _scores(4), date(2026, 3, 1), "m", "2")
        write(table, path)

    monkeypatch.setattr(history, "_write", racing)
    late = append_history(tmp_path, _scores(6, 0.2), date(2026, 3, 1), "m", "2")
    assert raced[0].written and not late.written and late.rows == 4
    kept = read_history(tmp_path)
    assert len(kept[kept[s.MODEL_VERSION] == "2"]) == 4
    assert kept[s.CHURN_PROBABILITY].max() < 0.5  # the first scoring's values
    assert list((tmp_path / "scores_history" / ".staging").iterdir()) == []


def test_an_empty_store_has_no_history(tmp_path: Path) -> None:
    assert history_days(tmp_path) == []
    empty = read_history(tmp_path)
    assert empty.empty and list(empty.columns) == list(s.HISTORY_COLUMNS)


@pytest.mark.parametrize("existing_day", [False, True])
def test_a_crash_at_the_rename_leaves_no_partial_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing_day: bool
) -> None:
    if existing_day:
        append_history(tmp_path, _scores(3), date(2026, 3, 1), "m", "1")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(history.os, "rename", crash)
    monkeypatch.setattr(history.os, "link", crash)
    with pytest.raises(HistoryError, match=r"m-v2\.parquet: cannot record .*No space left"):
        append_history(tmp_path, _scores(5), date(2026, 3, 1), "m", "2")
    monkeypatch.undo()
    partition = tmp_path / "scores_history" / "as_of=2026-03-01"
    assert partition.is_dir() == existing_day
    if existing_day:
        assert [p.name for p in partition.iterdir()] == ["m-v1.parquet"]
    assert list((tmp_path / "scores_history" / ".staging").iterdir()) == []
    assert len(read_history(tmp_path)) == (3 if existing_day else 0)
    # and the next rescore records the day normally
    assert append_history(tmp_path, _scores(5), date(2026, 3, 1), "m", "2").written
    assert len(read_history(tmp_path)) == (8 if existing_day else 5)


def test_a_crash_while_writing_the_file_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(frame, path):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(history, "_write", half_written)
    with pytest.raises(HistoryError, match="Input/output error"):
        append_history(tmp_path, _scores(5), date(2026, 3, 1), "m", "1")
    root = tmp_path / "scores_history"
    assert [p.name for p in root.iterdir()] == [".staging"]
    assert list((root / ".staging").iterdir()) == []
    assert history_days(tmp_path) == []


def test_old_leftovers_of_a_killed_write_are_swept(tmp_path: Path) -> None:
    staging = tmp_path / "scores_history" / ".staging"
    staging.mkdir(parents=True)
    stale, fresh = staging / "dead.parquet", staging / "busy.parquet"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (0, 0))
    append_history(tmp_path, _scores(2), date(2026, 3, 1), "m", "1")
    assert sorted(p.name for p in staging.iterdir()) == ["busy.parquet"]


def test_a_file_that_is_not_history_is_named(tmp_path: Path) -> None:
    append_history(tmp_path, _scores(2), date(2026, 3, 1), "m", "1")
    bad = tmp_path / "scores_history" / "as_of=2026-03-01" / "x-v9.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(bad)
    with pytest.raises(HistoryError, match=r"x-v9\.parquet: lacks column"):
        read_history(tmp_path)


def test_scores_without_a_bucket_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match=r"lack column\(s\) \['bucket'\]"):
        append_history(tmp_path, _scores(2).drop(columns=s.BUCKET), "2026-03-01", "m", "1")
