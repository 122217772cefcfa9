"""build_features as a whole: point-in-time, order- and neighbour-independent, registry-typed."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import FeatureConfig, FeatureInputError, build_features
from features import schema as s
from features.build import feature_names, feature_registry
from features.registry import REASON_GROUPS

FEATURES = feature_registry()

USERS = ("a", "b", "c")
SUBSCRIPTION_EVENTS = s.CURRENT_EVENTS
APP_EVENTS = ("workout_completed", "paywall_viewed", "support_contacted")

quarter_days = st.integers(0, 400).map(lambda q: q / 4)  # coarse, so equal times happen
rows = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.sampled_from((s.OS_IOS, s.OS_ANDROID)),
        quarter_days,
        st.one_of(
            st.tuples(
                st.just(s.KIND_SUBSCRIPTION),
                st.sampled_from(SUBSCRIPTION_EVENTS),
                st.sampled_from((None, 7, 30, 365)),
                st.sampled_from((None, 9.99, 4.99)),
            ),
            st.tuples(
                st.sampled_from((s.KIND_SESSION, s.KIND_EVENT, s.KIND_INSTALL)),
                st.sampled_from(APP_EVENTS),
                st.just(None),
                st.just(None),
            ),
        ),
    ),
    max_size=40,
)
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def table(new_history, drawn) -> pd.DataFrame:
    h = new_history()
    h.sub("anchor", 0, "activation", expires=1000)  # never an empty result frame
    for user, platform, when, (kind, event, length, price) in drawn:
        cols = {}
        if kind == s.KIND_SUBSCRIPTION:
            if length is not None:
                cols[s.EXPIRES_AT] = when + length
            cols[s.PRICE] = price
            h.sub(user, when, event, platform=platform, **cols)
        elif kind == s.KIND_INSTALL:
            h.install(user, when, platform=platform, network="Meta", country="US")
        else:
            h.add(user, when, kind, s.KIND_SESSION if kind == s.KIND_SESSION else event, platform)
    return h.frame()


@SETTINGS
@given(drawn=rows, cut=quarter_days)
def test_events_at_or_after_as_of_change_nothing(new_history, day, drawn, cut):
    events = table(new_history, drawn)
    as_of = day(cut)
    past = events[events[s.TS] < as_of]
    pd.testing.assert_frame_equal(build_features(events, as_of), build_features(past, as_of))


@SETTINGS
@given(drawn=rows, cut=quarter_days, seed=st.integers(0, 2**31))
def test_row_order_changes_nothing(new_history, day, drawn, cut, seed):
    events = table(new_history, drawn)
    shuffled = events.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        build_features(events, day(cut)), build_features(shuffled, day(cut))
    )


@SETTINGS
@given(drawn=rows, cut=quarter_days, keep=st.sets(st.sampled_from(USERS)))
def test_a_subscribers_features_do_not_depend_on_others(new_history, day, drawn, cut, keep):
    events = table(new_history, drawn)
    keep = keep | {"anchor"}
    alone = build_features(events[events[s.USER_ID].isin(keep)], day(cut))
    together = build_features(events, day(cut))
    mine = together[together.index.get_level_values(s.USER_ID).isin(keep)]
    pd.testing.assert_frame_equal(alone, mine)


def test_columns_follow_the_registry(history, day):
    h = history.install("u", 0).sub("u", 0, "activation", expires=30, price=9.99)
    f = build_features(h.frame(), day(5))
    assert list(f.columns) == list(feature_names())
    assert f.index.names == list(s.SUBSCRIBER_INDEX)
    for name in f.columns:
        feature = FEATURES[name]
        assert feature.reason in REASON_GROUPS and feature.description
        expected = "str" if feature.kind == "categorical" else "float64"
        assert f[name].dtype == expected, name
        if feature.kind == "boolean":
            assert set(f[name].dropna()) <= {0.0, 1.0}, name
    families = {FEATURES[n].family for n in f.columns}
    assert families == {"state", "history", "engagement", "context"}


def test_nobody_active_gives_an_empty_frame_with_all_columns(history, day):
    h = history.sub("u", 0, "activation", expires=30)
    f = build_features(h.frame(), day(40))
    assert f.empty and list(f.columns) == list(feature_names())
    assert f.index.names == list(s.SUBSCRIBER_INDEX)


def test_naive_timestamps_are_taken_as_utc(history, day):
    events = history.sub("u", 0, "activation", expires=30).sub("u", 2, "cancellation").frame()
    naive = events.assign(**{s.TS: events[s.TS].dt.tz_localize(None)})
    pd.testing.assert_frame_equal(build_features(naive, day(3)), build_features(events, day(3)))


def test_unusable_input_is_reported(history, day):
    events = history.sub("u", 0, "activation", expires=30).frame()
    with pytest.raises(FeatureInputError, match="missing required column"):
        build_features(events.drop(columns=[s.TS]), day(3))
    with pytest.raises(FeatureInputError, match="'expires_at' has type str; expected a UTC"):
        build_features(events.assign(**{s.EXPIRES_AT: "soon"}), day(3))
    with pytest.raises(FeatureInputError, match="as_of"):
        build_features(events, "not a date")
    no_time = events.assign(**{s.TS: pd.Series([pd.NaT] * len(events), dtype=events[s.TS].dtype)})
    with pytest.raises(FeatureInputError, match="column 'ts' has null values"):
        build_features(no_time, day(3))
    with pytest.raises(FeatureInputError, match="column 'ts' has null values"):  # Arrow too
        required = {s.USER_ID: ["u"], s.PLATFORM: ["ios"], s.KIND: ["session"], s.EVENT: ["x"]}
        build_features(pa.table({**required, s.TS: pa.nulls(1, pa.timestamp("us", "UTC"))}), day(3))
    with pytest.raises(FeatureInputError, match="expected a pandas DataFrame or a pyarrow Table"):
        build_features(events.to_dict("records"), day(3))


def test_config_is_validated():
    with pytest.raises(ValueError, match="windows"):
        FeatureConfig(windows=(0, 7))


def test_categorical_and_arrow_inputs_give_the_same_frame(history, day):
    import pyarrow as pa

    h = history.install("u", 0, network="Meta", country="US")
    h.sub("u", 0, "trial_started", expires=7).sub("u", 7, "renewal", expires=37, price=9.99)
    h.sub("v", 1, "activation", expires=31, platform=s.OS_ANDROID).sessions("u", 0, 10, 2)
    events = h.frame()
    expected = build_features(events, day(10))
    texts = [c for c in events.columns if events[c].dtype == "str"]
    compact = events.astype({c: "category" for c in texts})
    pd.testing.assert_frame_equal(build_features(compact, day(10)), expected)
    columns = {}
    for name in events.columns:
        values = events[name].array
        if isinstance(events[name].dtype, pd.DatetimeTZDtype):
            columns[name] = pa.array(values.asi8, pa.timestamp("us", "UTC"), mask=values.isna())
        else:
            columns[name] = pa.array(values)
    pd.testing.assert_frame_equal(build_features(pa.table(columns), day(10)), expected)
