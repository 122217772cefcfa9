"""Training snapshots: the features and the churn label of every active subscriber at many cut-offs.

One row per (as_of, user_id, platform). Every subscriber active at a cut-off has a row; CHURNED
is NA where that cut-off's horizon is not yet over (training drops those rows; scoring can use
them). The event table is prepared once and cut at each cut-off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from features import schema as s
from features.build import AsOf, features_at, to_pandas
from features.labels import labels_at, observed_end
from features.timeline import (
    DEFAULT_CONFIG,
    Events,
    EventTable,
    FeatureConfig,
    to_micros,
    to_timestamp,
)


def snapshots(
    events: Events,
    cutoffs: Iterable[AsOf],
    horizon_days: int = 30,
    config: FeatureConfig = DEFAULT_CONFIG,
    observed_until: AsOf | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> pd.DataFrame:
    """Features + CHURNED at each cut-off, indexed by (as_of, user_id, platform).

    ``observed_until`` is as in ``churn_labels`` (default: the latest event in ``events``).
    ``progress(stage, done, total)`` is called after each cut-off.
    """
    times = sorted({to_timestamp(c) for c in cutoffs})
    table = EventTable(events, config)
    end = observed_end(table, observed_until)
    key = list(s.SUBSCRIBER_INDEX)
    parts = []
    for i, when in enumerate(times):
        t = to_micros(when)
        features = features_at(table, t, config)
        labels = labels_at(table, t, horizon_days, config, end)
        part = to_pandas(features.join(labels, on=key, how="left"), config)
        part[s.CHURNED] = part[s.CHURNED].astype("boolean")
        parts.append(pd.concat({when: part}, names=[s.AS_OF]))
        if progress is not None:
            progress("snapshots", i + 1, len(times))
    if not parts:
        empty = to_pandas(features_at(table, -(2**62), config), config)
        empty[s.CHURNED] = pd.Series(dtype="boolean")
        return pd.concat({pd.Timestamp(0, tz="UTC"): empty}, names=[s.AS_OF]).head(0)
    return pd.concat(parts)
