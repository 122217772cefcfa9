"""The service's jobs (lapse/serve.py) that need no running server: the /lookup scores cache."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from features import schema as s
from lapse.serve import ScoresCache, lookup
from serving.scores import write_scores


def _scores(probability: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            s.USER_ID: ["u1"],
            s.PLATFORM: ["ios"],
            s.CHURN_PROBABILITY: [probability],
            s.BUCKET: ["high" if probability > 0.5 else "low"],
            s.REASONS: [["plan_and_tenure"]],
        }
    )


def test_an_unreadable_newer_scores_file_keeps_the_last_scores_answering(
    tmp_path: Path, caplog
) -> None:
    folder = tmp_path / "scores"
    write_scores(_scores(0.2), folder / "scores-2026-04-20.parquet", provenance={"as_of": "a"})
    now = [0.0]
    cache = ScoresCache(folder, interval_s=5, clock=lambda: now[0])
    assert cache.get().get("u1")[0][s.CHURN_PROBABILITY] == 0.2
    newer = folder / "scores-2026-04-21.parquet"
    newer.write_bytes(b"PAR1 half written")  # as a reader sees a file being written
    with caplog.at_level(logging.WARNING, logger="lapse.serve"):
        for _ in range(3):  # checked three times, logged once, no error for the caller
            now[0] += 6
            assert cache.get().get("u1")[0][s.CHURN_PROBABILITY] == 0.2
    warned = [r.getMessage() for r in caplog.records if "scores-2026-04-21" in r.getMessage()]
    assert len(warned) == 1 and "answers from scores-2026-04-20.parquet (as_of a)" in warned[0]
    write_scores(_scores(0.9), newer)  # complete now: read at the next check
    now[0] += 6
    latest = cache.get()
    assert latest.path == newer and latest.get("u1")[0][s.CHURN_PROBABILITY] == 0.9


def test_no_readable_scores_file_is_not_scored_and_a_warning(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "scores"
    folder.mkdir()
    (folder / "scores-2026-04-20.parquet").write_bytes(b"not parquet")
    with caplog.at_level("WARNING", logger="lapse.serve"):
        cache = ScoresCache(folder)
    assert lookup(cache.get(), ["u1"]) == [{s.USER_ID: "u1", "scored": False}]
    damaged = folder / "scores-2026-04-20.parquet"
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"damaged scores file {damaged}: {damaged}: cannot read: ")
    assert "/lookup answers from none: every id is answered 'not scored'" in caplog.text


def test_a_folder_or_a_file_without_ids_named_as_scores_is_passed_over(
    tmp_path: Path, caplog
) -> None:
    """Regression (hostile review): a folder named scores-<newer day>.parquet, or a Parquet
    file with no user_id column and no rows, was taken as the newest scores: every id answered
    "not scored" and nothing said why."""
    folder = tmp_path / "scores"
    write_scores(_scores(0.2), folder / "scores-2026-04-20.parquet", provenance={"as_of": "a"})
    (folder / "scores-2026-04-22.parquet").mkdir()
    pd.DataFrame({"other": pd.Series([], dtype="float64")}).to_parquet(
        folder / "scores-2026-04-21.parquet"
    )
    with caplog.at_level(logging.WARNING, logger="lapse.serve"):
        latest = ScoresCache(folder).get()
    assert latest.path == folder / "scores-2026-04-20.parquet"
    assert latest.get("u1")[0][s.CHURN_PROBABILITY] == 0.2
    assert [(p.name, why.rsplit(": ", 1)[-1]) for p, why in latest.damaged] == [
        ("scores-2026-04-22.parquet", "not a file"),
        ("scores-2026-04-21.parquet", "no 'user_id' column"),
    ]
    assert "scores-2026-04-22.parquet: cannot read: not a file" in caplog.text


def _served_model():
    from lapse.serve import ServedModel
    from serving.scoring import LeanScorer
    from tests.serving.test_scoring import frame
    from training.pipeline import ChurnModel
    from training.registry import ModelInfo

    X, y = frame(1500, 1)
    Xv, yv = frame(800, 2)
    model = ChurnModel({"num_leaves": 7, "learning_rate": 0.1}, seed=3).fit(
        X, y, X_valid=Xv, y_valid=yv
    )
    return ServedModel(model, LeanScorer(model), ModelInfo("models:/test/1", "test", "1"))


def test_rows_of_a_batch_are_checked_per_key_set_wherever_it_changes() -> None:
    """A batch's key sets are checked once each (rows sharing the previous row's keys are
    skipped): a feature missing from a later row is still named with its row, and extra
    columns of any row are listed, whatever rows share keys around them."""
    import pytest

    from lapse.serve import RequestError, score_rows
    from tests.serving.test_scoring import frame, records

    served = _served_model()
    features, _ = frame(40, 9, unseen=True)
    rows = [
        {**row, s.USER_ID: f"u{i}", s.PLATFORM: "ios"} for i, row in enumerate(records(features))
    ]
    whole = score_rows(served, rows, 100)
    assert whole.ignored == []
    assert [r[s.USER_ID] for r in whole.results] == [f"u{i}" for i in range(40)]
    extra = [dict(row) for row in rows]
    extra[7]["note"] = "x"
    extra[30]["zz"] = 1
    got = score_rows(served, extra, 100)
    assert got.ignored == ["note", "zz"]
    assert [r[s.CHURN_PROBABILITY] for r in got.results] == [
        r[s.CHURN_PROBABILITY] for r in whole.results
    ]
    # the same keys in another order are the same key set: checked again, still accepted
    shuffled = [dict(reversed(list(row.items()))) if i % 2 else row for i, row in enumerate(rows)]
    assert score_rows(served, shuffled, 100).results == whole.results
    lacking = [dict(row) for row in rows]
    del lacking[25]["country"]
    with pytest.raises(RequestError, match=r"rows\[25\]: missing feature\(s\) country"):
        score_rows(served, lacking, 100)


def test_a_row_that_is_not_an_object_is_named_with_its_row() -> None:
    """Regression (hostile review): a row that was not a mapping reached ``row.keys()`` or the
    scorer as an AttributeError (a 500 for an in-process caller); a list of the previous row's
    keys even passed the key-set check as 'the same keys'. Each is now refused naming its row."""
    import pytest

    from lapse.serve import RequestError, score_rows
    from tests.serving.test_scoring import frame, records

    served = _served_model()
    features, _ = frame(3, 9)
    rows = [{**row, s.USER_ID: f"u{i}"} for i, row in enumerate(records(features))]
    for bad in (list(rows[0]), list(rows[0].items()), "abc", None, 5):
        with pytest.raises(RequestError, match=r"^rows\[1\]: expected an object of features"):
            score_rows(served, [rows[0], bad, rows[2]], 10)
    with pytest.raises(RequestError, match=r"^rows\[0\]: expected an object"):
        score_rows(served, ["abc", rows[0]], 10)
    assert len(score_rows(served, rows, 10).results) == 3
    assert score_rows(served, [], 10).results == []
