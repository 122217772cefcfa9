"""``build_features``: one row of state, history, engagement and context features per subscriber
active at ``as_of``, computed only from events strictly before it.

DuckDB aggregates the bulk of the table (sessions, in-app events) in one pass where it lies;
polars works through the few lifecycle rows; there is no per-user Python. pandas (or Arrow) is
the interface.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import pandas as pd
import polars as pl

from features import context as ctx
from features import engagement as eng
from features import history as hist
from features import schema as s
from features import state as st
from features.registry import Feature
from features.timeline import (
    DEFAULT_CONFIG,
    SUBSCRIBER,
    Events,
    EventTable,
    FeatureConfig,
    to_micros,
)

AsOf = date | datetime | str | pd.Timestamp
#: Called as progress(stage, done, total), e.g. lapse.console.progress_bars()'s report.
Progress = Callable[[str, int, int], None]


def feature_registry(config: FeatureConfig = DEFAULT_CONFIG) -> dict[str, Feature]:
    """Every column ``build_features`` returns for ``config``, described, in build order.

    A pure function of the config: another window configuration describes its own columns
    without touching anyone else's table.
    """
    described = st.DESCRIPTIONS + hist.DESCRIPTIONS + eng.describe(config) + ctx.DESCRIPTIONS
    return {feature.name: feature for feature in described}


def feature_names(config: FeatureConfig = DEFAULT_CONFIG) -> tuple[str, ...]:
    """The feature columns ``build_features`` returns for ``config``, in order."""
    return tuple(feature_registry(config))


def active_state(table: EventTable, t: int, config: FeatureConfig) -> pl.DataFrame:
    """State (``state.state_at``) of every subscriber active at ``t``, from events before ``t``."""
    subs = table.lifecycle(t).filter(pl.col(s.KIND) == s.KIND_SUBSCRIPTION)
    return st.state_at(subs, t, config).filter(pl.col(st.ACTIVE))


def features_at(
    table: EventTable, t: int, config: FeatureConfig, progress: Progress | None = None
) -> pl.DataFrame:
    """The feature frame (key columns first) at ``t`` from the prepared events."""
    report = progress or (lambda stage, done, total: None)
    key = list(s.SUBSCRIBER_INDEX)
    # the bulk pass first, so DuckDB's working memory is gone before the lifecycle frames exist
    activity = eng.activity_counts(table, t, config)
    # the few attribution and lifecycle rows, ordered once for every "latest value"
    lifecycle = table.lifecycle(t)
    subs = lifecycle.filter(pl.col(s.KIND) == s.KIND_SUBSCRIPTION)
    state = st.state_at(subs, t, config).filter(pl.col(st.ACTIVE))
    active = state.select(SUBSCRIBER)
    report("features", 1, 4)
    history = hist.history(subs.join(active, on=SUBSCRIBER, how="semi"), t)
    report("features", 2, 4)
    context = ctx.context(lifecycle.join(active, on=SUBSCRIBER, how="semi"), t)
    del lifecycle, subs
    report("features", 3, 4)
    engagement = eng.engagement(activity, t, context.select(*key, ctx.FIRST_SEEN), config)
    report("features", 4, 4)
    out = (
        state.select(SUBSCRIBER, *key, *st.FEATURES)
        .join(history, on=SUBSCRIBER, how="left")
        .join(context.select(SUBSCRIBER, *ctx.FEATURES), on=SUBSCRIBER, how="left")
        .join(engagement, on=key, how="left")
    )
    return out.select(*key, *feature_names(config)).sort(key)


def to_pandas(frame: pl.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """The polars feature frame as pandas indexed by SUBSCRIBER_INDEX, registry dtypes applied."""
    out = frame.to_pandas()
    for name, feature in feature_registry(config).items():
        kind = feature.kind
        out[name] = out[name].astype("str" if kind == "categorical" else "float64")
    return out.set_index(list(s.SUBSCRIBER_INDEX))


def build_features(
    events: Events,
    as_of: AsOf,
    config: FeatureConfig = DEFAULT_CONFIG,
    *,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Features of every subscriber active at ``as_of``, indexed by (user_id, platform).

    ``events`` is the canonical event table (features.schema.EVENT_COLUMNS), as a pandas frame
    or an Arrow table; only production rows with ``ts < as_of`` are read. A date ``as_of``
    means midnight UTC. Columns are described by ``feature_registry(config)``: categoricals
    ``str``, booleans 0/1, the rest float, missing NaN. ``progress(stage, done, total)`` is told
    as each feature family is done.
    """
    table = EventTable(events, config)
    return to_pandas(features_at(table, to_micros(as_of), config, progress), config)


def build_feature_records(
    events: Events, as_of: AsOf, config: FeatureConfig = DEFAULT_CONFIG, *, shared: bool = False
) -> list[dict[str, object]]:
    """``build_features`` as plain rows (user_id, platform, then the features; missing is None):
    the same values without the pandas frame, whose per-column conversion costs more than the
    whole build for the few subscribers of one service request. ``shared`` runs DuckDB in the
    process's long-lived database (``features.duck``) instead of opening one."""
    frame = features_at(EventTable(events, config, shared), to_micros(as_of), config)
    return typed(frame, config).to_dicts()


def typed(frame: pl.DataFrame, config: FeatureConfig) -> pl.DataFrame:
    """The registry's types on a polars feature frame: categoricals text, the rest float, and
    missing always null (never NaN). A column already of its type is not cast, and the float
    ones lose their NaNs in one expression (a request's one-row frame: 87 expressions, ~1.5 ms)."""
    schema = frame.schema
    changes, floats = [], []
    for name, feature in feature_registry(config).items():
        dtype = schema[name]
        if feature.kind == "categorical":
            if dtype != pl.String:
                changes.append(pl.col(name).cast(pl.String))
        elif dtype == pl.Float64:
            floats.append(name)
        else:  # only integers, booleans, decimals and nulls cast to no NaN (text "nan" does)
            column = pl.col(name).cast(pl.Float64)
            exact = dtype.is_integer() or dtype.is_decimal() or dtype in (pl.Boolean, pl.Null)
            changes.append(column if exact else column.fill_nan(None))
    if floats:
        changes.append(pl.col(floats).fill_nan(None))
    return frame.with_columns(changes) if changes else frame
