"""Cut-offs (features/timeline.py): what `to_timestamp` takes as an explicit `as_of`."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from base import LapseError
from features.timeline import to_timestamp


@pytest.mark.parametrize("word", ["now", "today"])
def test_the_clocks_words_are_no_cut_off(word: str) -> None:
    """Regression (hostile review): pandas reads "now" and "today" off the clock, so a
    /score_events `as_of` of "today" scored at the request's second, a clock read inside the
    transform; a cut-off is a date or time, named."""
    with pytest.raises(LapseError, match=rf"^as_of: expected a date or time .* got '{word}'$"):
        to_timestamp(word)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-02-01", "2026-02-01T00:00:00+00:00"),
        (date(2026, 2, 1), "2026-02-01T00:00:00+00:00"),
        ("2026-02-01T00:00:00+05:00", "2026-01-31T19:00:00+00:00"),
        ("2026-02-01 12:00", "2026-02-01T12:00:00+00:00"),
    ],
)
def test_a_date_is_its_midnight_utc_and_a_time_is_taken_in_utc(when, expected) -> None:
    assert to_timestamp(when) == pd.Timestamp(expected)
