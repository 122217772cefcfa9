"""Time-based splits of snapshot frames: train on early cut-offs, validate later, hold out the last.

The hold-out is the latest cut-off whose labels are complete. A training row's label window
(cut-off + horizon) must end by the hold-out cut-off, and so must a validation row's, unless
validation reaches to the end of the labels (``valid_until``), where its subscribers leave the
hold-out instead: nothing the hold-out measures was seen while fitting, tuning, calibrating or
bucketing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from base import LapseError
from features import schema

#: Where validation's label windows may end: by the hold-out cut-off, or by the end of the labels.
ValidUntil = Literal["holdout", "labels_end"]


class DataSufficiencyError(LapseError, ValueError):
    """Too little labelled data for an honest train / validation / hold-out split."""


@dataclass(frozen=True)
class TimeSplit:
    """Which snapshot cut-offs go to training, validation and the hold-out."""

    train: tuple[pd.Timestamp, ...]
    valid: tuple[pd.Timestamp, ...]
    holdout: pd.Timestamp
    horizon_days: int

    def part(self, frame: pd.DataFrame, name: str) -> pd.DataFrame:
        """Rows of ``frame`` (indexed by SNAPSHOT_INDEX) whose cut-off belongs to ``name``."""
        cutoffs = {"train": self.train, "valid": self.valid, "holdout": (self.holdout,)}[name]
        as_of = frame.index.get_level_values(schema.AS_OF)
        return frame[as_of.isin(list(cutoffs))]


def time_split(
    cutoffs: list[pd.Timestamp] | pd.Index,
    horizon_days: int,
    valid_cutoffs: int = 1,
    valid_until: ValidUntil = "holdout",
) -> TimeSplit:
    """Hold out the latest cut-off; validate on the latest ``valid_cutoffs`` whose label window
    ends by it, train on the earlier ones; later-but-too-close cut-offs are left out.

    With ``valid_until`` ``"labels_end"`` (for ``split_rows`` with a ``valid_share``: held-out
    subscribers validate, the others train at the same cut-offs) validation is the latest
    ``valid_cutoffs`` of every cut-off before the hold-out, and training every cut-off whose label
    window ends by it: one such cut-off is enough, where a short export has no second one."""
    distinct = sorted(pd.Timestamp(c) for c in set(cutoffs))
    if not distinct:
        raise DataSufficiencyError("no labelled snapshot cut-offs; at least 3 are needed")
    holdout = distinct[-1]
    horizon = timedelta(days=horizon_days)
    eligible = [c for c in distinct[:-1] if c + horizon <= holdout]
    if valid_until == "labels_end":
        before = distinct[:-1]
        if not eligible or len(before) < valid_cutoffs:
            found = ", ".join(str(c.date()) for c in distinct)
            raise DataSufficiencyError(
                f"found {len(eligible)} labelled cut-off(s) whose {horizon_days}-day label window "
                f"ends by the hold-out cut-off {holdout.date()} and {len(before)} before it; "
                f"needed 1 for training and {valid_cutoffs} before the hold-out for validation "
                f"(training.valid_until = 'labels_end'). Cut-offs found: {found}. Use more "
                "history, a shorter horizon or closer cut-offs."
            )
        return TimeSplit(
            train=tuple(eligible),
            valid=tuple(before[-valid_cutoffs:]),
            holdout=holdout,
            horizon_days=horizon_days,
        )
    if len(eligible) < valid_cutoffs + 1:
        found = ", ".join(str(c.date()) for c in distinct)
        raise DataSufficiencyError(
            f"found {len(eligible)} labelled cut-off(s) whose {horizon_days}-day label window ends "
            f"by the hold-out cut-off {holdout.date()}; needed {valid_cutoffs + 1} "
            f"({valid_cutoffs} for validation, at least 1 for training). Cut-offs found: {found}. "
            "Use more history, a shorter horizon or closer cut-offs."
        )
    return TimeSplit(
        train=tuple(eligible[:-valid_cutoffs]),
        valid=tuple(eligible[-valid_cutoffs:]),
        holdout=holdout,
        horizon_days=horizon_days,
    )


def check_sufficient(
    labels: dict[str, pd.Series],
    min_churners: int,
    min_non_churners: int,
    notes: dict[str, str] | None = None,
) -> None:
    """Raise unless every split has enough churners and non-churners, saying what was found
    (and, for a split named in ``notes``, which rows it holds)."""
    short = []
    for name, y in labels.items():
        churners = int(y.sum())
        stayers = int(len(y) - churners)
        if churners < min_churners or stayers < min_non_churners:
            note = (notes or {}).get(name)
            found = f"{name}: {churners} churners, {stayers} non-churners"
            short.append(f"{found} {note}" if note else found)
    if short:
        raise DataSufficiencyError(
            f"not enough labelled subscribers for an honest hold-out ({'; '.join(short)}); "
            f"each split needs at least {min_churners} churners and {min_non_churners} "
            "non-churners (training.min_churners / training.min_non_churners)"
        )


def held_out_subscribers(index: pd.MultiIndex, share: float, seed: int) -> np.ndarray:
    """True for the rows of a stable ``share`` of subscribers (a hash of user_id, platform and
    ``seed``): the same subscriber is held out at every cut-off and in every run."""
    if share <= 0:
        return np.zeros(len(index), dtype=bool)
    who = index.to_frame(index=False)[list(schema.SUBSCRIBER_INDEX)].astype("str")
    hashed = pd.util.hash_pandas_object(who, index=False, hash_key=f"{seed:016d}"[:16])
    return (hashed.to_numpy() % 10_000) < round(share * 10_000)


def validation_cutoffs(
    held: pd.DataFrame, eligible: list[pd.Timestamp], at_least: int, min_churners: int
) -> list[pd.Timestamp]:
    """The latest ``at_least`` of the ``eligible`` cut-offs, and earlier ones one at a time until
    the ``held`` rows there hold ``min_churners`` churners (or none is left): the validation rows
    closest in time to the hold-out that are enough to rank on."""
    as_of = held.index.get_level_values(schema.AS_OF)
    chosen: list[pd.Timestamp] = []
    for cutoff in sorted(eligible, reverse=True):
        chosen.append(cutoff)
        churners = int(held[schema.CHURNED][as_of.isin(chosen)].sum())
        if len(chosen) >= at_least and churners >= min_churners:
            break
    return sorted(chosen)


def split_rows(
    frame: pd.DataFrame,
    split: TimeSplit,
    valid_share: float,
    seed: int,
    min_churners: int,
    valid_until: ValidUntil = "labels_end",
) -> dict[str, pd.DataFrame]:
    """Training, validation and hold-out rows of a labelled snapshot frame.

    With ``valid_share`` > 0, validation holds out whole subscribers: a stable ``valid_share``
    of them, at the latest cut-offs they may validate on (at least as many as ``split.valid``,
    going back until they hold ``min_churners`` churners), are never trained on. Those are the
    rows most like the hold-out's: at early cut-offs every history is cut short by the start of
    the data (tenure, renewals and 28-day windows not yet filled), and a validation spread over
    them ranked far below the hold-out (issue 12: 0.75 vs 0.86 ROC AUC). Every other
    subscriber's rows at every cut-off whose label window ends by the hold-out cut-off are
    training rows, and so are the held-out subscribers' rows whose label window ends by the
    first validation cut-off; their rows in between are purged (left out), so one renewal
    decision never sits in training and validation.

    ``valid_until`` says where validation may reach. ``"holdout"``: its label windows end by the
    hold-out cut-off too, so no outcome it sees falls in the hold-out's window; on a short export
    that keeps it weeks of history away from the hold-out. ``"labels_end"``: the held-out
    subscribers validate at the latest labelled cut-offs before the hold-out, their windows
    running on into the hold-out's, and leave the hold-out, so validation and hold-out share
    calendar weeks but never a subscriber. With ``valid_share`` 0, the time split alone:
    validation is the latest ``valid_cutoffs`` cut-offs and the hold-out every subscriber.
    """
    holdout = split.part(frame, "holdout")
    horizon = timedelta(days=split.horizon_days)
    if valid_share <= 0:
        late = [c for c in split.valid if c + horizon > split.holdout]
        if late:
            raise ValueError(
                f"validation cut-off {late[0].date()}'s label window passes the hold-out cut-off "
                f"{split.holdout.date()}: a split validating at the labels' end needs a "
                "valid_share > 0 (its subscribers leave the hold-out)"
            )
        return {
            "train": split.part(frame, "train"),
            "valid": split.part(frame, "valid"),
            "holdout": holdout,
        }
    # the cut-offs whose label window ends by the hold-out's (a labels_end split validates later)
    trainable = [c for c in {*split.train, *split.valid} if c + horizon <= split.holdout]
    as_of = frame.index.get_level_values(schema.AS_OF)
    if valid_until == "labels_end":
        reachable = sorted(c for c in set(as_of) if c < split.holdout)
        holdout = holdout[~held_out_subscribers(holdout.index, valid_share, seed)]
    else:
        reachable = trainable
    eligible = frame[as_of.isin(reachable)]
    held = held_out_subscribers(eligible.index, valid_share, seed)
    valid_at = validation_cutoffs(eligible[held], reachable, len(split.valid), min_churners)
    as_of = eligible.index.get_level_values(schema.AS_OF)
    before_validation = np.asarray(as_of + horizon <= min(valid_at))
    may_train = np.asarray(as_of.isin(trainable))
    return {
        "train": eligible[may_train & (~held | before_validation)],
        "valid": eligible[held & np.asarray(as_of.isin(valid_at))],
        "holdout": holdout,
    }


def used_split(split: TimeSplit, parts: dict[str, pd.DataFrame]) -> TimeSplit:
    """``split`` with the cut-offs ``split_rows`` actually trained and validated on (with a
    subscriber share they overlap: other subscribers train at the validation cut-offs)."""

    def cutoffs(part: pd.DataFrame) -> tuple[pd.Timestamp, ...]:
        return tuple(sorted(set(part.index.get_level_values(schema.AS_OF))))

    return replace(split, train=cutoffs(parts["train"]), valid=cutoffs(parts["valid"]))


def newest_cutoff(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame``'s latest cut-off: the population closest to the one a model will
    score, so a drift reference built on it does not flag the calendar's own drift (tenure and
    install age grow with every cut-off of a young app)."""
    as_of = frame.index.get_level_values(schema.AS_OF)
    return frame[as_of == as_of.max()] if len(frame) else frame


def refit_rows(
    frame: pd.DataFrame, split: TimeSplit, valid_share: float, seed: int, min_churners: int
) -> dict[str, pd.DataFrame]:
    """Rows of the production refit, done after the time split has chosen the parameters and
    measured the hold-out: every cut-off with complete labels, the hold-out's included.

    ``train`` is fitted on; ``stop`` (early stopping) and ``calibrate`` are never trained on.
    With ``valid_share`` > 0 the same subscribers as in ``split_rows`` are held out, now at every
    cut-off: ``stop`` is all their rows, ``calibrate`` their rows at the latest cut-offs, going
    back one cut-off at a time until they hold ``min_churners`` churners (calibration learns the
    freshest base rate). With 0, the time split moved forward by one step: train on the cut-offs
    whose label window ends by the latest one, stop and calibrate on the latest one.
    """
    as_of = frame.index.get_level_values(schema.AS_OF)
    if valid_share <= 0:
        eligible = [*split.train, *split.valid]
        latest = frame[as_of == split.holdout]
        return {"train": frame[as_of.isin(eligible)], "stop": latest, "calibrate": latest}
    held = held_out_subscribers(frame.index, valid_share, seed)
    stop = frame[held]
    stop_as_of = stop.index.get_level_values(schema.AS_OF)
    chosen: list[pd.Timestamp] = []
    for cutoff in sorted(set(stop_as_of), reverse=True):
        chosen.append(cutoff)
        if int(stop[schema.CHURNED][stop_as_of.isin(chosen)].sum()) >= min_churners:
            break
    return {
        "train": frame[~held],
        "stop": stop,
        "calibrate": stop[stop_as_of.isin(chosen)],
    }
