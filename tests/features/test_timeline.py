"""Cut-offs (features/timeline.py): what `to_timestamp` takes as an explicit `as_of`."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from base import LapseError
from features import schema as s
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


def test_a_missing_price_from_pandas_is_null_as_from_arrow(history, day) -> None:
    """Regression (hostile review): a charge without a price (an Adjust callback whose
    revenue_float is null) came from a pandas frame as NaN, which polars ranks above 0, so
    rescore took it as the last price paid (price NaN, its currency) while /score_events,
    reading the same events as Arrow, kept the earlier charge's: the two answers differed."""
    import pyarrow as pa

    from features.build import build_features

    h = history
    h.sub("a", 0, "activation", expires=30, price=9.99, currency="EUR").sessions("a", 0, 40, 1)
    h.sub("a", 30, "renewal", expires=60, price=None, currency="GBP")
    events = h.frame()
    assert events[s.PRICE].isna().sum() > 1  # sessions and the renewal: NaN in pandas
    columns = {}  # the store's Arrow: missing is null
    for name in events.columns:
        values = events[name].array
        if isinstance(events[name].dtype, pd.DatetimeTZDtype):
            columns[name] = pa.array(values.asi8, pa.timestamp("us", "UTC"), mask=values.isna())
        else:
            columns[name] = pa.array(values, from_pandas=True)
    from_pandas = build_features(events, day(40)).reset_index()
    from_arrow = build_features(pa.table(columns), day(40)).reset_index()
    assert from_pandas["price"].tolist() == from_arrow["price"].tolist() == [9.99]
    assert from_pandas["currency"].tolist() == from_arrow["currency"].tolist() == ["EUR"]
