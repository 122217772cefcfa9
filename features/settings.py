"""The settings sections the features package reads: ``[store]``, ``[ingest]``, ``[labels]``.

Each is a ``base.Section`` with its defaults written here once; ``lapse.settings.Settings``
composes them with the other packages' sections into the one settings object.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import Field

from base import Section


class StoreSettings(Section):
    """Where the Parquet event store (and its quarantine) lives."""

    path: Path = Path("data")


class IngestSettings(Section):
    """How Adjust exports are read into canonical events."""

    keep_unknown_columns: bool = True
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


class LabelSettings(Section):
    """The churn label's horizon."""

    horizon_days: int = Field(30, ge=1)
