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


def _plain(value):
    """A frame cell as build_feature_records gives it: missing is None."""
    return None if pd.isna(value) else value


@settings(SETTINGS, max_examples=10)
@given(drawn=rows, cut=quarter_days)
def test_records_are_the_frames_rows(new_history, day, drawn, cut):
    """build_feature_records (the service's path, no pandas) gives build_features' rows."""
    from features.build import build_feature_records

    events = table(new_history, drawn)
    frame = build_features(events, day(cut)).reset_index()
    expected = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    assert build_feature_records(events, day(cut)) == expected
    # the service's: the process's DuckDB, its aggregates read row by row
    assert build_feature_records(events, day(cut), shared=True) == expected


@pytest.mark.slow
def test_records_are_the_frames_rows_on_a_generated_app(tmp_path):
    """The same on 300 generated subscribers of a non-default shape, every feature family."""
    from datetime import date

    from features import load_events
    from features.build import build_feature_records
    from features.ingest import ingest
    from features.synthetic import SyntheticConfig, generate

    config = SyntheticConfig(shape="foreign", users=300, seed=5, start=date(2026, 1, 5), days=60)
    generate(config, tmp_path)
    ingest([tmp_path / "raw"], tmp_path / "store")
    events = load_events(tmp_path / "store")
    frame = build_features(events, "2026-02-20").reset_index()
    assert len(frame) > 50
    expected = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    got = build_feature_records(events, "2026-02-20")
    assert got == expected
    assert build_feature_records(events, "2026-02-20", shared=True) == expected
    assert {type(v) for row in got for v in row.values()} <= {str, float, type(None)}


def test_builds_on_threads_at_once_see_only_their_own_events(history, day):
    """One shared DuckDB, a connection per build: concurrent builds do not mix inputs."""
    from concurrent.futures import ThreadPoolExecutor

    from features.build import build_feature_records

    tables = []
    for i in range(6):
        h = history.__class__()
        h.sub(f"u{i}", 0, "activation", expires=30, price=9.99).sessions(f"u{i}", 0, 10, i + 1)
        tables.append(h.frame())
    alone = [build_feature_records(t, day(10)) for t in tables]
    with ThreadPoolExecutor(6) as pool:
        together = list(
            pool.map(lambda t: build_feature_records(t, day(10), shared=True), tables * 3)
        )
    for i, rows in enumerate(together):
        assert rows == alone[i % 6]


def test_a_subprocess_starts_after_a_shared_build(history, day):
    """A fork after a shared build (subprocess with a preexec_fn, as `lapse serve` starts
    BentoML) leaves the inherited database alone: closing it in the child killed the child."""
    import subprocess

    from features.build import build_feature_records

    h = history.sub("u", 0, "activation", expires=30, price=9.99).sessions("u", 0, 10, 2)
    assert build_feature_records(h.frame(), day(10), shared=True)
    done = subprocess.run(["true"], preexec_fn=lambda: None, timeout=60)
    assert done.returncode == 0


def test_records_equal_the_frames_rows_on_odd_subscribers(history, day):
    """The service's rows (``typed``: only mistyped columns cast, NaN made null in one pass)
    equal build_features' on subscribers the generator never makes: app events named unlike
    its own (punctuation, non-ASCII, a chosen name nobody sends), one subscriber with sessions
    but no in-app event, one with no activity at all and no country."""
    from features.build import build_feature_records

    h = history
    h.sub("a", 0, "activation", expires=60, price=9.99, country="DE").sessions("a", 0, 40, 2)
    for d in range(30, 40):
        h.add("a", d + 0.25, s.KIND_EVENT, "Post Created!").add("a", d + 0.5, s.KIND_EVENT, "ünï")
    h.sub("b", 1, "activation", expires=60, price=4.99, country="US").sessions("b", 1, 39, 1)
    h.sub("c", 2, "trial_started", expires=60)
    config = FeatureConfig(app_events_chosen=("Post Created!", "ünï", "never sent"))
    events = h.frame()
    frame = build_features(events, day(40), config).reset_index()
    expected = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    got = build_feature_records(events, day(40), config, shared=True)
    assert got == expected
    assert got == build_feature_records(events, day(40), config)
    a, b, c = got
    assert (a[s.USER_ID], b[s.USER_ID], c[s.USER_ID]) == ("a", "b", "c")
    assert a["app_post_created_7d"] == 7.0 and a["app_n_7d"] == 7.0
    assert a["app_never_sent_28d"] == 0.0 and a["app_never_sent_days_since_last"] is None
    assert b["in_app_events_28d"] == 0.0 and b["app_post_created_share_28d"] is None
    assert c["days_since_last_session"] is None and c["sessions_28d"] == 0.0
    assert {type(v) for row in got for v in row.values()} <= {str, float, type(None)}


def test_typed_makes_every_nan_null_whatever_the_columns_type() -> None:
    """Regression (hostile review): ``typed`` cast a numeric column held as text to float
    without dropping NaN ("only a float column can hold one"), so "nan" came back as NaN where
    the contract is null; integers, booleans and all-null columns still cast exactly."""
    import polars as pl

    from features.build import typed

    config = FeatureConfig()
    kinds = {name: f.kind for name, f in feature_registry(config).items()}
    numeric = [n for n, k in kinds.items() if k != "categorical"]
    text, whole, flags, empty, single = numeric[:5]
    frame = pl.DataFrame(
        {n: pl.Series(n, [None, None, None], dtype=pl.Float64) for n in numeric}
        | {n: pl.Series(n, ["x", None, "y"]) for n, k in kinds.items() if k == "categorical"}
        | {
            text: pl.Series(text, ["1.5", "nan", "NaN"]),
            whole: pl.Series(whole, [2**40, None, -3]),
            flags: pl.Series(flags, [True, False, None]),
            empty: pl.Series(empty, [None, None, None], dtype=pl.Null),
            single: pl.Series(single, [float("nan"), 0.5, None], dtype=pl.Float32),
        }
    )
    got = typed(frame, config)
    assert got[text].to_list() == [1.5, None, None]
    assert got[whole].to_list() == [float(2**40), None, -3.0]
    assert got[flags].to_list() == [1.0, 0.0, None]
    assert got[empty].to_list() == [None, None, None]
    assert got[single].to_list() == [None, 0.5, None]
    assert all(got[n].dtype == pl.Float64 for n in numeric)
