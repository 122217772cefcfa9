"""App engagement before ``as_of``: sessions and in-app events per window, trends, recency.

Engagement is the generator's (and a real app's) strongest early sign of a cancellation, and it
is seen only through noisy counts, so the level is taken over several windows and the trend as a
log-rate difference between a recent window and the longest one, and between the longest one
and the window before it. Rates are per observed day, so a subscriber installed last week is
not mistaken for an inactive one.
"""

from __future__ import annotations

import functools
import re

import polars as pl

from features import schema as s
from features.registry import Feature
from features.timeline import MICROS_PER_DAY, EventTable, FeatureConfig, days

_HALF = 0.5  # added to counts before a log, so a zero count has a finite rate


def _name_sessions(w: int) -> str:
    return f"sessions_{w}d"


def _name_events(w: int) -> str:
    return f"in_app_events_{w}d"


def _name_trend(w: int, longest: int) -> str:
    return f"session_trend_{w}d_vs_{longest}d"


def describe(config: FeatureConfig) -> tuple[Feature, ...]:
    """The engagement columns ``config``'s windows give, described, in build order."""
    longest = max(config.windows)
    specs = []
    for w in sorted(config.windows):
        specs.append((_name_sessions(w), f"Sessions in the last {w} days"))
        specs.append((_name_events(w), f"In-app events in the last {w} days"))
    for w in sorted(config.windows):
        if w != longest:
            specs.append(
                (
                    _name_trend(w, longest),
                    f"Log session rate over the last {w} days minus over the last {longest} days",
                )
            )
    specs += [
        (
            f"session_rate_{longest}d",
            f"Sessions per observed day over the last {longest} days",
        ),
        (
            f"session_trend_{longest}d_vs_prior",
            f"Log session rate over the last {longest} days minus the {config.trend_days} days "
            "before (missing if not observed)",
        ),
        (f"active_days_{longest}d", f"Days with at least one session in the last {longest} days"),
        (f"paywall_views_{longest}d", f"Paywall views in the last {longest} days"),
        (f"support_contacts_{longest}d", f"Support contacts in the last {longest} days"),
        ("days_since_last_session", "Days since the last session (missing if none)"),
        ("days_since_last_in_app_event", "Days since the last in-app event (missing if none)"),
    ]
    described = tuple(
        Feature(
            name,
            "engagement",
            "numeric",
            description,
            "billing_trouble" if name.startswith("support_") else "falling_engagement",
        )
        for name, description in specs
    )
    return described + tuple(
        Feature(name, "engagement", "numeric", description, config.app_events_reason)
        for name, description in _app_event_specs(config)
    )


def app_event_slug(name: str) -> str:
    """An event name as a column-name part: lower case, other than letters and digits as ``_``."""
    slug = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return slug or "unnamed"


def _app_event_columns(config: FeatureConfig) -> list[tuple[str, str]]:
    """(event name, column prefix) for each per-event family, prefixes made unique."""
    seen: dict[str, int] = {}
    out = []
    for name in config.app_event_names:
        slug = app_event_slug(name)
        seen[slug] = seen.get(slug, 0) + 1
        out.append((name, f"app_{slug}" if seen[slug] == 1 else f"app_{slug}_{seen[slug]}"))
    return out


def _app_event_specs(config: FeatureConfig) -> list[tuple[str, str]]:
    longest, shortest = max(config.windows), min(config.windows)
    specs = []
    for name, prefix in _app_event_columns(config):
        for w in sorted(config.windows):
            specs.append((f"{prefix}_{w}d", f"'{name}' events in the last {w} days"))
        specs += [
            (f"{prefix}_rate_{longest}d", f"'{name}' events per observed day, last {longest} days"),
            (
                f"{prefix}_trend_{shortest}d_vs_{longest}d",
                f"Log rate of '{name}' over the last {shortest} days minus over {longest} days",
            ),
            (f"{prefix}_days_since_last", f"Days since the last '{name}' event (missing if none)"),
            (
                f"{prefix}_share_{longest}d",
                f"Share of '{name}' among all in-app events of the last {longest} days "
                "(missing without any)",
            ),
        ]
    return specs


def choose_app_events(table: EventTable, t: int, config: FeatureConfig) -> tuple[str, ...]:
    """``config.app_events`` plus the ``app_events_top`` most frequent in-app event names among
    subscribers (anyone with a subscription row) before ``t``, most frequent first."""
    counts = app_event_counts(table, t) if config.app_events_top > 0 else {}
    return top_app_events(counts, config)


def app_event_counts(table: EventTable, t: int) -> dict[str, int]:
    """In-app events per name among subscribers before ``t``: counts of subscriber partitions
    add up to the whole table's (see ``top_app_events``)."""
    found = table.query(
        f"SELECT {s.EVENT}::VARCHAR AS name, count(*) AS n FROM events "
        f"WHERE {s.KIND} = '{s.KIND_EVENT}' AND {s.TS} < {t} AND {s.EVENT} IS NOT NULL "
        f"AND ({s.USER_ID}, {s.PLATFORM}) IN (SELECT ({s.USER_ID}, {s.PLATFORM}) FROM events "
        f"WHERE {s.KIND} = '{s.KIND_SUBSCRIPTION}') "
        "GROUP BY 1"
    )
    return dict(zip(found["name"].to_list(), found["n"].to_list(), strict=True))


def top_app_events(counts: dict[str, int], config: FeatureConfig) -> tuple[str, ...]:
    """``config.app_events`` plus the ``app_events_top`` names of ``counts`` (most frequent
    first, ties by name)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = tuple(name for name, _ in ranked[: max(0, int(config.app_events_top))])
    return tuple(dict.fromkeys((*config.app_events, *top)))


def feature_names(config: FeatureConfig) -> tuple[str, ...]:
    """The engagement column names for ``config``, in build order."""
    return tuple(f.name for f in describe(config))


def _sql_list(values: tuple[str, ...]) -> str:
    """Strings as an SQL list literal, quotes escaped (``('a', 'b''s')``); never empty."""
    quoted = ["'" + v.replace("'", "''") + "'" for v in values]
    return "(" + ", ".join(quoted or ["NULL"]) + ")"


def _active_days(session: str, t: int, w: int, name: str) -> str:
    """Days with a session in the last ``w`` days: a bit per day OR-ed together (one pass)."""
    start = t - w * MICROS_PER_DAY
    if w > 64:  # more days than bits in the mask
        return (
            f"count(DISTINCT {s.TS} // {MICROS_PER_DAY}) FILTER (WHERE {session} AND "
            f"{s.TS} >= {start}) AS {name}"
        )
    bit = f"1::UBIGINT << (({s.TS} - {start}) // {MICROS_PER_DAY})::INTEGER"
    return (
        f"bit_count(bit_or(CASE WHEN {session} AND {s.TS} >= {start} THEN {bit} "
        f"ELSE 0::UBIGINT END)) AS {name}"
    )


def activity_counts(table: EventTable, t: int, config: FeatureConfig) -> pl.DataFrame:
    """Per subscriber with app activity before ``t``: window counts and last times (one DuckDB
    pass over the bulk of the table, where the events lie).

    The pass groups the rows by subscriber and activity (sessions; each in-app event name) with
    a few aggregates, then spreads those groups into the per-subscriber columns: a row meets
    only the few window conditions, not every event name's (with 20 names, 3x faster than one
    filtered aggregate per column over every row).
    """
    longest = max(config.windows)
    windows = sorted(config.windows)
    recent = t - longest * MICROS_PER_DAY
    prior_start = recent - config.trend_days * MICROS_PER_DAY
    session, in_app = f"{s.KIND} = '{s.KIND_SESSION}'", f"{s.KIND} = '{s.KIND_EVENT}'"
    # per subscriber and activity: _session, _name (an in-app event's name, null for sessions).
    # Without per-name features only the paywall and support names are told apart (grouping by
    # every name would multiply the groups for nothing); with them, every name is (testing
    # each row's name against the list cost more than the groups of names not chosen)
    named = in_app
    if not config.app_event_names:
        kept = (*config.paywall_events, *config.support_events)
        named = f"{in_app} AND {s.EVENT} IN {_sql_list(kept)}"
    by_activity = [
        *(f"count(*) FILTER (WHERE {s.TS} >= {t - w * MICROS_PER_DAY}) AS _n{w}" for w in windows),
        f"count(*) FILTER (WHERE {s.TS} < {recent} AND {s.TS} >= {prior_start}) AS _n_prior",
        _active_days(session, t, longest, "_active_days"),
        f"max({s.TS}) AS _last",
    ]

    def total(value: str, where: str, name: str) -> str:
        return f"coalesce(sum({value}) FILTER (WHERE {where}), 0)::DOUBLE AS {name}"

    events = "NOT _session"
    columns = [
        *(total(f"_n{w}", "_session", _name_sessions(w)) for w in windows),
        *(total(f"_n{w}", events, _name_events(w)) for w in windows),
        total("_n_prior", "_session", "_prior"),
        total("_active_days", "_session", f"active_days_{longest}d"),
        total(
            f"_n{longest}",
            f"{events} AND _name IN {_sql_list(config.paywall_events)}",
            f"paywall_views_{longest}d",
        ),
        total(
            f"_n{longest}",
            f"{events} AND _name IN {_sql_list(config.support_events)}",
            f"support_contacts_{longest}d",
        ),
        "max(_last) FILTER (WHERE _session) AS _last_session",
        f"max(_last) FILTER (WHERE {events}) AS _last_event",
    ]
    for name, prefix in _app_event_columns(config):
        this = f"{events} AND _name = {_sql_list((name,))[1:-1]}"
        columns += [total(f"_n{w}", this, f"{prefix}_{w}d") for w in windows]
        columns.append(f"max(_last) FILTER (WHERE {this}) AS _last_{prefix}")
    return table.query(
        f"WITH activity AS (SELECT {s.USER_ID}, {s.PLATFORM}, {session} AS _session, "
        f"CASE WHEN {named} THEN {s.EVENT} END AS _name, {', '.join(by_activity)} "
        f"FROM events WHERE ({session} OR {in_app}) AND {s.TS} < {t} "
        f"GROUP BY {s.USER_ID}, {s.PLATFORM}, _session, _name) "
        f"SELECT {s.USER_ID}::VARCHAR AS {s.USER_ID}, {s.PLATFORM}::VARCHAR AS {s.PLATFORM}, "
        f"{', '.join(columns)} FROM activity GROUP BY {s.USER_ID}, {s.PLATFORM}"
    )


def engagement(
    aggregates: pl.DataFrame, t: int, first_seen: pl.DataFrame, config: FeatureConfig
) -> pl.DataFrame:
    """The engagement features of ``config`` for each subscriber in ``first_seen``.

    ``aggregates`` come from ``activity_counts`` at ``t``; ``first_seen`` (user_id, platform,
    _first_seen) gives each subscriber's first known time (install or first subscription
    event), which bounds how many days of each window were observable. No activity means zero
    counts, missing recency.
    """
    key = list(s.SUBSCRIBER_INDEX)
    longest = max(config.windows)
    windows = sorted(config.windows)
    recent = t - longest * MICROS_PER_DAY
    prior_start = recent - config.trend_days * MICROS_PER_DAY
    counts = [
        *(_name_sessions(w) for w in windows),
        *(_name_events(w) for w in windows),
        "_prior",
        f"active_days_{longest}d",
        f"paywall_views_{longest}d",
        f"support_contacts_{longest}d",
    ]
    app = _app_event_columns(config)
    counts += [f"{prefix}_{w}d" for _, prefix in app for w in windows]
    per_sub = first_seen.join(aggregates, on=key, how="left").with_columns(
        pl.col(counts).fill_null(0.0)
    )
    start = pl.col("_first_seen")

    @functools.cache  # one expression per window, however many columns divide by it
    def observed(w: int) -> pl.Expr:
        return days(pl.lit(t) - start).clip(1.0 / 24, float(w))

    def log_rate(count: pl.Expr, obs: pl.Expr) -> pl.Expr:
        return ((count + _HALF) / obs).log()

    prior_obs = days(pl.lit(recent) - pl.max_horizontal(start, pl.lit(prior_start)))
    rate_longest = log_rate(pl.col(_name_sessions(longest)), observed(longest))
    out = per_sub.with_columns(
        *(
            (log_rate(pl.col(_name_sessions(w)), observed(w)) - rate_longest).alias(
                _name_trend(w, longest)
            )
            for w in windows
            if w != longest
        ),
        (pl.col(_name_sessions(longest)) / observed(longest)).alias(f"session_rate_{longest}d"),
        pl.when(prior_obs >= 1.0)
        .then(rate_longest - log_rate(pl.col("_prior"), prior_obs))
        .alias(f"session_trend_{longest}d_vs_prior"),
        days(pl.lit(t) - pl.col("_last_session")).alias("days_since_last_session"),
        days(pl.lit(t) - pl.col("_last_event")).alias("days_since_last_in_app_event"),
    )
    shortest = windows[0]
    all_events = pl.col(_name_events(longest))
    per_event = []
    for _, prefix in app:
        n_long, n_short = pl.col(f"{prefix}_{longest}d"), pl.col(f"{prefix}_{shortest}d")
        per_event += [
            (n_long / observed(longest)).alias(f"{prefix}_rate_{longest}d"),
            (log_rate(n_short, observed(shortest)) - log_rate(n_long, observed(longest))).alias(
                f"{prefix}_trend_{shortest}d_vs_{longest}d"
            ),
            days(pl.lit(t) - pl.col(f"_last_{prefix}")).alias(f"{prefix}_days_since_last"),
            pl.when(all_events > 0)
            .then(n_long / all_events)
            .otherwise(None)
            .alias(f"{prefix}_share_{longest}d"),
        ]
    if per_event:
        out = out.with_columns(per_event)
    return out.select(*key, *feature_names(config))
