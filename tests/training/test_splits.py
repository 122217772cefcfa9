"""training.splits: the time split's no-leak property and the data-sufficiency errors."""

from datetime import timedelta

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features import schema
from training.splits import (
    DataSufficiencyError,
    check_sufficient,
    held_out_subscribers,
    newest_cutoff,
    refit_rows,
    split_rows,
    time_split,
)

DAY0 = pd.Timestamp("2026-01-05", tz="UTC")


def days(*offsets: int) -> list[pd.Timestamp]:
    return [DAY0 + timedelta(days=d) for d in offsets]


def test_weekly_cutoffs_horizon_30() -> None:
    split = time_split(days(28, 35, 42, 49, 56, 63, 70, 77, 84), horizon_days=30)
    assert split.holdout == DAY0 + timedelta(days=84)
    assert split.valid == tuple(days(49))
    assert split.train == tuple(days(28, 35, 42))


@given(
    offsets=st.sets(st.integers(0, 200), min_size=1, max_size=30),
    horizon=st.integers(1, 60),
    valid=st.integers(1, 3),
)
def test_no_training_label_window_reaches_the_holdout(offsets, horizon, valid) -> None:
    cutoffs = days(*offsets)
    try:
        split = time_split(cutoffs, horizon_days=horizon, valid_cutoffs=valid)
    except DataSufficiencyError:
        eligible = [c for c in cutoffs if c + timedelta(days=horizon) <= max(cutoffs)]
        assert len(eligible) < valid + 1
        return
    assert split.holdout == max(cutoffs)
    assert len(split.valid) == valid and split.train
    for c in (*split.train, *split.valid):
        assert c + timedelta(days=horizon) <= split.holdout
    assert max(split.train) < min(split.valid)
    assert set(split.train).isdisjoint(split.valid)


def test_part_selects_rows_by_cutoff(snapshots) -> None:
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values("as_of").unique(), horizon_days=14)
    parts = {name: split.part(frame, name) for name in ("train", "valid", "holdout")}
    assert [len(parts[n]) for n in ("train", "valid", "holdout")] == [1800, 600, 600]
    left_out = frame.index.get_level_values("as_of").max() - timedelta(days=7)
    assert left_out not in set(parts["train"].index.get_level_values("as_of"))


def test_too_few_cutoffs_says_what_was_found() -> None:
    with pytest.raises(DataSufficiencyError, match=r"found 1 labelled cut-off.*needed 2"):
        time_split(days(0, 20, 40), horizon_days=30)
    with pytest.raises(DataSufficiencyError, match="no labelled snapshot cut-offs"):
        time_split([], horizon_days=30)


def test_too_few_churners_names_the_split_and_counts() -> None:
    labels = {
        "train": pd.Series([True] * 60 + [False] * 60),
        "holdout": pd.Series([True] * 3 + [False] * 80),
    }
    with pytest.raises(DataSufficiencyError) as info:
        check_sufficient(labels, min_churners=50, min_non_churners=50)
    assert "holdout: 3 churners, 80 non-churners" in str(info.value)
    assert "train" not in str(info.value).split("(")[1].split(")")[0]
    assert "at least 50 churners and 50 non-churners" in str(info.value)
    check_sufficient(labels, min_churners=3, min_non_churners=50)


def _cutoffs(frame: pd.DataFrame) -> list[pd.Timestamp]:
    return sorted(set(frame.index.get_level_values(schema.AS_OF)))


def _who(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(frame.index.droplevel(schema.AS_OF))


def test_the_refit_trains_on_every_labelled_cutoff_and_holds_out_the_same_subscribers(
    snapshots,
) -> None:
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    parts = refit_rows(frame, split, valid_share=0.2, seed=5, min_churners=30)
    evaluation = split_rows(frame, split, valid_share=0.2, seed=5)
    # every cut-off, the two the time split leaves out (too close, and the hold-out) included
    assert _cutoffs(parts["train"]) == _cutoffs(frame) and len(_cutoffs(frame)) == 6
    assert len(parts["train"]) + len(parts["stop"]) == len(frame)
    # the subscribers held out for validation are the time split's, and never trained on
    assert _who(parts["stop"]) == _who(evaluation["valid"])
    assert _who(parts["train"]).isdisjoint(_who(parts["stop"]))
    # calibration: the held-out rows of the latest cut-offs, back until 30 churners (obvious loop)
    held = frame[held_out_subscribers(frame.index, 0.2, 5)]
    wanted = []
    for cutoff in reversed(_cutoffs(held)):
        wanted.append(cutoff)
        at = held[held.index.get_level_values(schema.AS_OF).isin(wanted)]
        if at[schema.CHURNED].sum() >= 30:
            break
    assert _cutoffs(parts["calibrate"]) == sorted(wanted)
    assert parts["calibrate"][schema.CHURNED].sum() >= 30
    assert max(wanted) == split.holdout and len(wanted) < 6


def test_the_refit_without_a_subscriber_share_is_the_time_split_one_step_later(snapshots) -> None:
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    parts = refit_rows(frame, split, valid_share=0, seed=5, min_churners=30)
    assert _cutoffs(parts["train"]) == [*split.train, *split.valid]
    assert _cutoffs(parts["stop"]) == _cutoffs(parts["calibrate"]) == [split.holdout]
    for cutoff in _cutoffs(parts["train"]):  # no training label window reaches the calibration
        assert cutoff + timedelta(days=14) <= split.holdout


def test_newest_cutoff_keeps_only_the_latest_rows(snapshots) -> None:
    frame, _ = snapshots
    newest = newest_cutoff(frame)
    assert _cutoffs(newest) == [max(_cutoffs(frame))] and len(newest) == 600
    assert newest_cutoff(frame.iloc[:0]).empty
