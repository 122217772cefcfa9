"""Snapshots: features + label at many cut-offs, the same as one call per cut-off."""

from __future__ import annotations

import pandas as pd

from features import build_features, churn_labels, snapshots
from features import schema as s
from features.build import feature_names


def test_snapshots_stack_features_and_labels_per_cut_off(history, day):
    h = history.install("a", 0).sub("a", 0, "activation", expires=30, price=9.99)
    h.sub("a", 30, "renewal", expires=60, price=9.99).sub("a", 45, "cancellation", expires=60)
    h.sub("a", 60, "expiration")
    h.sub("b", 20, "trial_started", expires=27).sub("b", 27, "renewal", expires=57)
    h.sub("b", 57, "renewal", expires=87).sessions("b", 20, 70, 1)
    h.sub("c", 5, "trial_started", expires=12).sub("c", 12, "expiration")
    events = h.frame()  # last event: b's session on day 69.5
    cutoffs = [day(40), day(10), day(25), day(50)]
    calls = []
    snap = snapshots(events, cutoffs, 30, progress=lambda *a: calls.append(a))

    assert snap.index.names == list(s.SNAPSHOT_INDEX)
    assert list(snap.columns) == [*feature_names(), s.CHURNED]
    assert snap[s.CHURNED].dtype == "boolean"
    assert sorted(snap.index.get_level_values(s.AS_OF).unique()) == sorted(cutoffs)
    assert calls[-1] == ("snapshots", 4, 4)
    for cut in cutoffs:
        part = snap.xs(cut, level=s.AS_OF)
        pd.testing.assert_frame_equal(part[list(feature_names())], build_features(events, cut))
        labels = churn_labels(events, cut, 30)
        if cut + pd.Timedelta(days=30) <= day(69.5):
            pd.testing.assert_series_equal(part[s.CHURNED], labels)
        else:  # the horizon runs past the data: rows kept, label NA
            assert labels.empty and part[s.CHURNED].isna().all() and len(part) > 0
    assert bool(snap.loc[(day(10), "c", "ios"), s.CHURNED])  # trial not converted
    assert not bool(snap.loc[(day(25), "b", "ios"), s.CHURNED])
    assert pd.isna(snap.loc[(day(40), "a", "ios"), s.CHURNED])  # day 70: after the data


def test_no_cut_offs_give_an_empty_frame_with_the_columns(history):
    snap = snapshots(history.sub("a", 0, "activation", expires=30).frame(), [], 30)
    assert snap.empty and snap.index.names == list(s.SNAPSHOT_INDEX)
    assert list(snap.columns) == [*feature_names(), s.CHURNED]
