"""training.splits: the time split's no-leak property and the data-sufficiency errors."""

from datetime import timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import schema
from tests.training.conftest import make_snapshots
from training.splits import (
    DataSufficiencyError,
    check_sufficient,
    held_out_subscribers,
    newest_cutoff,
    refit_rows,
    split_rows,
    time_split,
    used_split,
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


def _back_until(held: pd.DataFrame, cutoffs, churners: int):
    """The obvious loop: the latest of ``cutoffs``, and earlier ones one at a time until
    ``held``'s rows there hold ``churners`` churners; (those cut-offs, latest first; the rows)."""
    wanted = []
    for cutoff in reversed(list(cutoffs)):
        wanted.append(cutoff)
        at = held[held.index.get_level_values(schema.AS_OF).isin(wanted)]
        if at[schema.CHURNED].sum() >= churners:
            break
    return wanted, at


def test_the_refit_trains_on_every_labelled_cutoff_and_holds_out_the_same_subscribers(
    snapshots,
) -> None:
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    parts = refit_rows(frame, split, valid_share=0.2, seed=5, min_churners=30)
    evaluation = split_rows(frame, split, valid_share=0.2, seed=5, min_churners=30)
    # every cut-off, the two the time split leaves out (too close, and the hold-out) included
    assert _cutoffs(parts["train"]) == _cutoffs(frame) and len(_cutoffs(frame)) == 6
    assert len(parts["train"]) + len(parts["stop"]) == len(frame)
    # the subscribers held out for validation are the time split's, and never trained on
    assert _who(evaluation["valid"]) <= _who(parts["stop"])
    assert _who(parts["stop"]) == _who(frame[held_out_subscribers(frame.index, 0.2, 5)])
    assert _who(parts["train"]).isdisjoint(_who(parts["stop"]))
    # calibration: the held-out rows of the latest cut-offs, back until 30 churners (obvious loop)
    held = frame[held_out_subscribers(frame.index, 0.2, 5)]
    wanted, at = _back_until(held, _cutoffs(held), 30)
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


def _windows(frame: pd.DataFrame, horizon: int) -> dict[tuple[str, str], list[tuple]]:
    """Each subscriber's label windows (cut-off, cut-off + horizon) in ``frame``."""
    out: dict[tuple[str, str], list[tuple]] = {}
    for as_of, *who in frame.index:
        out.setdefault(tuple(who), []).append((as_of, as_of + timedelta(days=horizon)))
    return out


def test_validation_ending_by_the_holdout_takes_the_held_out_at_the_latest_cutoffs() -> None:
    frame, _ = make_snapshots(users=600, cutoffs=12, seed=3)  # weekly: 8 eligible for 28 days
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=28)
    eligible = [*split.train, *split.valid]
    assert len(eligible) == 8
    parts = split_rows(frame, split, 0.2, seed=5, min_churners=60, valid_until="holdout")
    held = frame[held_out_subscribers(frame.index, 0.2, 5)]
    # validation: held-out rows of the latest eligible cut-offs, back until 60 churners
    wanted, at = _back_until(held, eligible, 60)
    assert _cutoffs(parts["valid"]) == sorted(wanted) and 1 < len(wanted) < len(eligible)
    assert parts["valid"].index.equals(at.index)
    # no renewal decision in both: a held-out subscriber trains only on windows that end by
    # the first validation cut-off; everyone else trains on every eligible cut-off
    first = min(wanted)
    training = _windows(parts["train"], 28)
    for who in _who(parts["valid"]):
        assert who in training  # trained at the earliest cut-off, whose window ends in time
        assert all(end <= first for _, end in training[who])
    assert _cutoffs(parts["train"]) == eligible
    others = frame[~held_out_subscribers(frame.index, 0.2, 5)]
    assert len(parts["train"]) == int(
        others.index.get_level_values(schema.AS_OF).isin(eligible).sum()
        + (held.index.get_level_values(schema.AS_OF) + timedelta(days=28) <= first).sum()
    )
    assert parts["holdout"].index.equals(split.part(frame, "holdout").index)


def test_validation_takes_at_least_valid_cutoffs_and_all_when_churners_are_few(snapshots) -> None:
    frame, _ = snapshots
    cutoffs = frame.index.get_level_values(schema.AS_OF).unique()
    two = time_split(cutoffs, horizon_days=14, valid_cutoffs=2)
    parts = split_rows(frame, two, 0.2, seed=5, min_churners=1, valid_until="holdout")
    assert _cutoffs(parts["valid"]) == list(two.valid)
    every = split_rows(frame, two, 0.2, seed=5, min_churners=10_000, valid_until="holdout")
    assert _cutoffs(every["valid"]) == [*two.train, *two.valid]
    # every held-out row's window overlaps validation: none trains
    assert _who(every["train"]).isdisjoint(_who(every["valid"]))
    assert used_split(two, every).train == (*two.train, *two.valid)
    assert used_split(two, every).valid == (*two.train, *two.valid)


def test_newest_cutoff_keeps_only_the_latest_rows(snapshots) -> None:
    frame, _ = snapshots
    newest = newest_cutoff(frame)
    assert _cutoffs(newest) == [max(_cutoffs(frame))] and len(newest) == 600
    assert newest_cutoff(frame.iloc[:0]).empty


def test_validation_up_to_the_end_of_the_labels_leaves_its_subscribers_out_of_the_holdout() -> None:
    frame, _ = make_snapshots(users=600, cutoffs=12, seed=3)  # weekly: 8 eligible for 28 days
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=28)
    eligible = [*split.train, *split.valid]
    before_holdout = _cutoffs(frame)[:-1]
    assert len(before_holdout) == 11 and max(eligible) < max(before_holdout)
    parts = split_rows(frame, split, 0.2, seed=5, min_churners=60, valid_until="labels_end")
    is_held = held_out_subscribers(frame.index, 0.2, 5)
    held, others = frame[is_held], frame[~is_held]
    # validation: held-out rows of the latest cut-offs before the hold-out, back until 60
    # churners, the ones too close to the hold-out to train on included
    wanted, at = _back_until(held, before_holdout, 60)
    assert parts["valid"].index.equals(at.index) and max(wanted) == max(before_holdout)
    # the hold-out: every other subscriber at the hold-out cut-off, none of validation's
    assert parts["holdout"].index.equals(split.part(others, "holdout").index)
    assert _who(parts["holdout"]).isdisjoint(_who(parts["valid"]))
    # training: the others at the eligible cut-offs, the held-out subscribers' windows that end
    # by the first validation cut-off; no training window reaches the hold-out cut-off
    first = min(wanted)
    held_as_of = held.index.get_level_values(schema.AS_OF)
    expected = pd.concat(
        [
            others[others.index.get_level_values(schema.AS_OF).isin(eligible)],
            held[(held_as_of + timedelta(days=28) <= first) & held_as_of.isin(eligible)],
        ]
    )
    assert parts["train"].index.sort_values().equals(expected.index.sort_values())
    assert max(_cutoffs(parts["train"])) + timedelta(days=28) <= split.holdout


def test_validation_up_to_the_end_of_the_labels_matches_the_default_without_a_share() -> None:
    frame, _ = make_snapshots(users=300, cutoffs=8, seed=4)
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=21)
    near = split_rows(frame, split, 0, seed=5, min_churners=10, valid_until="labels_end")
    default = split_rows(frame, split, 0, seed=5, min_churners=10)
    for name in ("train", "valid", "holdout"):
        assert near[name].index.equals(default[name].index)


@settings(max_examples=30)
@given(
    share=st.sampled_from([0.1, 0.2, 0.5]),
    seed=st.integers(0, 50),
    min_churners=st.integers(1, 200),
    horizon=st.sampled_from([7, 14, 28, 35]),
)
def test_no_outcome_sits_in_two_parts_when_validation_reaches_the_labels_end(
    share, seed, min_churners, horizon
) -> None:
    frame, _ = make_snapshots(users=200, cutoffs=10, seed=seed)
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon)
    parts = split_rows(frame, split, share, seed, min_churners, valid_until="labels_end")
    assert _cutoffs(parts["holdout"]) == [split.holdout]
    assert _who(parts["holdout"]).isdisjoint(_who(parts["valid"]))
    assert max(_cutoffs(parts["valid"])) < split.holdout
    first = min(_cutoffs(parts["valid"]))
    training = _windows(parts["train"], horizon)
    for windows in training.values():
        assert all(end <= split.holdout for _, end in windows)
    for who in _who(parts["valid"]):
        assert all(end <= first for _, end in training.get(who, []))


def test_a_short_export_validates_at_the_labels_end_with_one_cutoff_to_train_on() -> None:
    # 6 weekly cut-offs, 35-day labels: only 02-02's window ends by the hold-out (03-09), so the
    # time split had no second cut-off to validate on and refused, though validation at the
    # labels' end needs none: the held-out subscribers validate at the latest cut-offs before it
    frame, _ = make_snapshots(users=600, cutoffs=6, seed=3)
    cutoffs = frame.index.get_level_values(schema.AS_OF).unique()
    with pytest.raises(DataSufficiencyError, match=r"found 1 .*needed 2 \(1 for validation"):
        time_split(cutoffs, horizon_days=35)
    split = time_split(cutoffs, horizon_days=35, valid_until="labels_end")
    assert split.train == tuple(days(28)) and split.valid == tuple(days(56))
    assert split.holdout == DAY0 + timedelta(days=63)
    parts = split_rows(frame, split, 0.2, seed=5, min_churners=60, valid_until="labels_end")
    is_held = held_out_subscribers(frame.index, 0.2, 5)
    held, others = frame[is_held], frame[~is_held]
    wanted, at = _back_until(held, _cutoffs(frame)[:-1], 60)
    assert parts["valid"].index.equals(at.index) and len(wanted) > 1
    # training: everyone else at 02-02, the only cut-off whose window ends by the hold-out (the
    # held-out subscribers' 02-02 window overlaps validation, so it is purged)
    expected = others[others.index.get_level_values(schema.AS_OF) == days(28)[0]]
    assert parts["train"].index.equals(expected.index)
    assert parts["holdout"].index.equals(split.part(others, "holdout").index)
    # without a share the split cannot validate there: every subscriber is in the hold-out
    with pytest.raises(ValueError, match=r"2026-03-02's label window passes .* valid_share > 0"):
        split_rows(frame, split, 0, seed=5, min_churners=60)
    # no cut-off whose window ends by the hold-out: nothing to train on, whatever validates
    with pytest.raises(
        DataSufficiencyError,
        match=r"found 0 .*ends by the hold-out cut-off 2026-03-09 and 5 before it; needed 1 for "
        r"training and 1 before the hold-out for validation \(training.valid_until",
    ):
        time_split(cutoffs, horizon_days=36, valid_until="labels_end")


@settings(max_examples=30)
@given(
    seed=st.integers(0, 50),
    min_churners=st.integers(1, 200),
    horizon=st.sampled_from([7, 14, 35, 49, 56]),
    valid=st.integers(1, 3),
)
def test_a_labels_end_split_never_trains_on_a_window_that_reaches_the_holdout(
    seed, min_churners, horizon, valid
) -> None:
    frame, _ = make_snapshots(users=200, cutoffs=9, seed=seed)
    split = time_split(_cutoffs(frame), horizon, valid, valid_until="labels_end")
    parts = split_rows(frame, split, 0.2, seed, min_churners, valid_until="labels_end")
    assert _who(parts["holdout"]).isdisjoint(_who(parts["valid"]))
    assert len(_cutoffs(parts["valid"])) >= valid and len(parts["train"])
    first = min(_cutoffs(parts["valid"]))
    for who, windows in _windows(parts["train"], horizon).items():
        assert all(end <= split.holdout for _, end in windows)
        if who in _who(parts["valid"]):
            assert all(end <= first for _, end in windows)
