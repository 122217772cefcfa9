"""The settings sections the features package reads: ``[store]``, ``[ingest]``, ``[labels]``,
``[features]``.

Each is a ``base.Section`` with its defaults written here once; ``lapse.settings.Settings``
composes them with the other packages' sections into the one settings object.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import Field, model_validator

from base import Section


class StoreSettings(Section):
    """Where the Parquet event store (and its quarantine) lives."""

    path: Path = Field(
        Path("data"),
        description="Root of the Parquet event store (quarantine in <path>/quarantine/, rescore "
        "scores in <path>/scores/); a folder or an object-store path.",
    )
    compact_files: int = Field(
        8,
        ge=0,
        description="After an ingest, a month holding more than this many event files is "
        "rewritten as one (0: never): each commit adds a file a month, and every partitioned "
        "read (rescore, features) opens every file of a month, so many small files cost time.",
    )


#: Above this a revenue_float is implausible (IngestSettings.max_price says why).
DEFAULT_MAX_PRICE = 1e9


class IngestSettings(Section):
    """How Adjust exports are read into canonical events."""

    keep_unknown_columns: bool = Field(
        True, description="Keep columns the Adjust export has but Lapse does not know (extra)."
    )
    user_id_column: str = Field(
        "user_id",
        description="Adjust callback parameter carrying the app's customer user id; rows where it "
        "is empty fall back to the Adjust device id (adid).",
    )
    earliest: date = Field(
        date(2008, 1, 1),
        description="Event, install and purchase times before this day (UTC) are implausible and "
        "quarantined (implausible_time): epoch 0 or year 1 is a broken clock, not history.",
    )
    max_future_days: float = Field(
        1.0,
        ge=0,
        description="Event, install and purchase times more than this many days after the ingest "
        "run started are implausible and quarantined; expiry times may lie further ahead.",
    )
    max_price: float = Field(
        DEFAULT_MAX_PRICE,
        gt=0,
        description="revenue_float above this is implausible and quarantined (implausible_price): "
        "no store sells a subscription for more in any currency (annual plans in IDR or VND reach "
        "millions), and larger values would overflow revenue sums to infinity.",
    )


#: Hours after an expiry within which a renewal, recovery or reactivation still counts as
#: continuous entitlement (DESIGN.md "The churn label").
DEFAULT_RENEWAL_LEEWAY_HOURS = 24.0


class DaskSettings(Section):
    """Where feature builds, rescoring and training snapshots run (the ``[dask]`` section).

    ``address`` empty: in this process, one subscriber partition after another; ``local:N``: a
    ``distributed.LocalCluster`` of N worker processes started for the run and stopped after;
    ``tcp://host:8786`` (or the path of a scheduler file): an existing cluster, whose workers
    must see the event store at the same path.
    """

    address: str = Field(
        "", description="'' (in-process), 'local:N', 'tcp://host:8786' or a scheduler file path."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, le=600, description="Seconds to wait for an existing cluster's scheduler."
    )
    threads_per_worker: int = Field(
        1, ge=1, description="local:N only: threads of each worker process."
    )
    library_threads: int = Field(
        0,
        ge=0,
        description="local:N only: threads of each worker's polars and DuckDB pools "
        "(0 = the libraries' own default, one per core).",
    )
    malloc_trim: bool = Field(
        True,
        description="local:N only: keep dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers "
        "(false = glibc's default threshold).",
    )


class LabelSettings(Section):
    """The churn label: its horizon, and the leeway a late-delivered renewal gets.

    Stores and Adjust deliver a renewal minutes to hours after the expiry it continues (Apple
    retries a charge for up to a day before the period is lost; server notifications and
    Adjust's callbacks add their own delays). Without a leeway a subscriber whose period ends at
    cut-off + horizon and renews 30 minutes later is a false churner, and one whose period ended
    the hour before a midnight cut-off is missing from the active set. 24 hours covers the
    delays seen (0-90 minutes in the foreign app of issue 12) with room, while a real lapse still
    shows within a day.
    """

    horizon_days: int = Field(
        30,
        ge=1,
        description="A subscriber churns when not entitled this many days after the cut-off.",
    )
    renewal_leeway_hours: float = Field(
        DEFAULT_RENEWAL_LEEWAY_HOURS,
        ge=0,
        le=24 * 7,
        description="A renewal, recovery or reactivation arriving up to this many hours after "
        "the previous expiry keeps entitlement continuous (active set, label and state "
        "features alike).",
    )


#: The longest engagement window: ten years.
MAX_WINDOW_DAYS = 3650


class FeatureConfig(Section):
    """How features and labels are computed (the ``[features]`` section); a trained model keeps
    the one it was trained with, and every scoring path builds features with that one.

    ``windows`` are the engagement look-backs in days (trends compare each with the longest);
    ``trend_days`` is the earlier window the longest one is compared with. A subscriber whose
    last subscription event is a billing failure counts as active for at most ``max_retry_days``
    after it (Apple retries for up to 60 days), so a lost expiration row cannot keep them active.
    """

    windows: tuple[int, ...] = Field(
        (7, 14, 28), description="Engagement look-back windows in days (positive)."
    )
    trend_days: int = Field(
        28, ge=1, description="Days before the longest window that its trend compares with."
    )
    max_retry_days: int = Field(
        60, ge=1, description="Days a billing failure keeps a subscriber active at most."
    )
    include_sandbox: bool = Field(
        False, description="Count sandbox (test purchase) rows in features and labels."
    )
    paywall_events: tuple[str, ...] = Field(
        ("paywall_viewed",), description="The app's event names that mean a paywall view."
    )
    support_events: tuple[str, ...] = Field(
        ("support_contacted",), description="The app's event names that mean a support contact."
    )
    app_events_top: int = Field(
        20,
        ge=0,
        description="At training, the most frequent in-app event names among subscribers each "
        "get their own features (counts, rate, trend, recency, share); 0 = none.",
    )
    app_events: tuple[str, ...] = Field(
        (), description="In-app event names that always get their own features."
    )
    app_events_reason: str = Field(
        "falling_engagement", description="Reason group the per-event features count toward."
    )
    app_events_chosen: tuple[str, ...] | None = Field(
        None,
        description="Not a [features] key: the event names chosen at training (app_events plus "
        "the top app_events_top); the model keeps them so scoring builds the same columns. "
        "Unset: only app_events.",
    )
    max_memory_gib: float = Field(
        4.0,
        gt=0,
        description="Memory one build step may take: the store's event rows are split into "
        "subscriber partitions of at most this much work each (about 340 bytes per stored "
        "event row, features.ingest.partitions.BYTES_PER_ROW), built one after another "
        "in-process or "
        "side by side on a dask cluster. How the build is split, not what it computes.",
    )
    partitions: int = Field(
        0,
        ge=0,
        le=65536,
        description="Subscriber partitions of a build; 0 = derived from max_memory_gib. "
        "Results are identical for every count.",
    )
    renewal_leeway_hours: float = Field(
        DEFAULT_RENEWAL_LEEWAY_HOURS,
        ge=0,
        le=24 * 7,
        description="Not a [features] key: copied from labels.renewal_leeway_hours by "
        "feature_definition(), so the model carries the rule its state features and labels used.",
    )

    @model_validator(mode="after")
    def _windows(self) -> FeatureConfig:
        from features.registry import REASON_GROUPS

        if not self.windows or any(w < 1 for w in self.windows):
            raise ValueError(f"windows: expected positive days, got {list(self.windows)}")
        repeated = sorted({w for w in self.windows if self.windows.count(w) > 1})
        if repeated:
            raise ValueError(f"windows: {repeated[0]} given twice in {list(self.windows)}")
        if max(self.windows) > MAX_WINDOW_DAYS:
            raise ValueError(
                f"windows: {max(self.windows)} days is longer than any subscription history "
                f"(at most {MAX_WINDOW_DAYS})"
            )
        if self.app_events_reason not in REASON_GROUPS:
            raise ValueError(
                f"app_events_reason: expected one of {sorted(REASON_GROUPS)}, "
                f"got {self.app_events_reason!r}"
            )
        return self

    @property
    def app_event_names(self) -> tuple[str, ...]:
        """The in-app event names that get their own features under this definition."""
        if self.app_events_chosen is not None:
            return self.app_events_chosen
        return tuple(dict.fromkeys(self.app_events))


#: FeatureConfig fields a run resolves from other sections or from the data (a trained model
#: keeps them); lapse.toml does not list them under [features].
RESOLVED_FIELDS = ("renewal_leeway_hours", "app_events_chosen")


def feature_definition(features: FeatureConfig, labels: LabelSettings) -> FeatureConfig:
    """The feature definition features and labels are built with: ``[features]`` plus the
    label rule the state features share (``labels.renewal_leeway_hours``)."""
    return features.model_copy(update={"renewal_leeway_hours": labels.renewal_leeway_hours})
