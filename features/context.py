"""Who the subscriber is: country, platform, acquisition network and install-cohort age.

Read from the subscriber's install and subscription rows (the few rows that carry attribution),
so this family never scans the app-activity bulk of the store.
"""

from __future__ import annotations

import polars as pl

from features import schema as s
from features.registry import Feature
from features.timeline import SUBSCRIBER, days

_DESCRIBED: list[Feature] = []


def _feature(name: str, kind: str, description: str) -> str:
    _DESCRIBED.append(Feature(name, "context", kind, description, "context"))
    return name


COUNTRY = _feature("country", "categorical", "Country of the device (upper-case ISO code)")
APP_PLATFORM = _feature("app_platform", "categorical", "ios or android (a subscriber's platform)")
NETWORK = _feature("network", "categorical", "Acquisition network (Organic, Meta, ...)")
INSTALL_AGE = _feature(
    "install_age_days", "numeric", "Days since the app was installed (the install cohort's age)"
)
FIRST_SEEN = "_first_seen"


def context(rows: pl.DataFrame, t: int) -> pl.DataFrame:
    """Per subscriber: context features, plus ``_first_seen`` (first install or event time).

    ``rows`` are the subscriber's install and subscription rows before ``t``, ordered by
    subscriber and time (timeline order), so "latest known value" is deterministic.
    """
    first = pl.min_horizontal(pl.col(s.INSTALLED_AT_COL).min(), pl.col(s.TS).min())
    return rows.group_by(SUBSCRIBER).agg(
        pl.col(s.USER_ID).first(),
        pl.col(s.PLATFORM).first(),
        pl.col(s.COUNTRY).drop_nulls().str.to_uppercase().last().alias(COUNTRY),
        pl.col(s.PLATFORM).first().alias(APP_PLATFORM),
        pl.col(s.NETWORK).drop_nulls().last().alias(NETWORK),
        days(pl.lit(t) - first).alias(INSTALL_AGE),
        first.alias(FIRST_SEEN),
    )


FEATURES = (COUNTRY, APP_PLATFORM, NETWORK, INSTALL_AGE)
#: Each column of FEATURES described, in the same order (what the registry reads).
DESCRIPTIONS: tuple[Feature, ...] = tuple({f.name: f for f in _DESCRIBED}[n] for n in FEATURES)
