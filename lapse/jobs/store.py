"""The jobs that make and read the event store: ``generate``, ``ingest`` (and the quarantine's
retry) and ``features``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from features.cluster import workplace
from features.from_store import StoreFeatures, store_features
from features.ingest import IngestSummary, StoreError
from features.ingest import ingest as ingest_files
from features.ingest import reprocess_quarantine as retry_quarantine
from features.ingest.store import Compaction
from features.ingest.store import compact as compact_store
from features.settings import feature_definition
from features.synthetic import GenerationSummary, SyntheticConfig
from features.synthetic import generate as generate_app
from lapse.jobs import Progress
from lapse.settings import Settings

# --- generate ------------------------------------------------------------------------------------


def synthetic_config(settings: Settings, cutoffs: Sequence[date] | None = None) -> SyntheticConfig:
    """The generator's parameters: ``[synthetic]`` and the label horizon of ``[labels]``."""
    return SyntheticConfig(
        **settings.synthetic.model_dump(),
        horizon_days=settings.labels.horizon_days,
        cutoffs=tuple(cutoffs) if cutoffs else None,
    )


def generate(
    settings: Settings,
    out: Path,
    cutoffs: Sequence[date] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> GenerationSummary:
    """Write a synthetic app's Adjust raw export and its true churn probabilities under ``out``."""
    return generate_app(synthetic_config(settings, cutoffs), out, overwrite, progress)


# --- ingest --------------------------------------------------------------------------------------


def ingest(
    settings: Settings,
    sources: Sequence[Path],
    now: datetime | None = None,
    progress: Progress | None = None,
    compact: bool = False,
) -> IngestSummary:
    """Add Adjust exports to the event store (``store.path``) under the ``[ingest]`` rules; bad
    files are listed in the summary's ``bad_files`` (everything readable is stored). Times more
    than ``ingest.max_future_days`` after ``now`` (default: the clock) are implausible. Months
    with more than ``store.compact_files`` files are compacted after (``compact``: any month
    with more than one)."""
    now = now or datetime.now(UTC)  # the application's edge reads the clock, once
    return ingest_files(
        sources,
        settings.store.path,
        settings.ingest,
        progress=progress,
        now=now,
        compact_files=1 if compact else settings.store.compact_files,
    )


def compact(settings: Settings, progress: Progress | None = None) -> Compaction:
    """Rewrite each month of the event store (``store.path``) that holds more than one event
    file as one, so partitioned reads open one file a month."""
    return compact_store(settings.store.path, 1, progress=progress)


def reprocess_quarantine(settings: Settings, now: datetime | None = None) -> IngestSummary:
    """Run the quarantined rows of the store through today's ``[ingest]`` rules, once each:
    those that pass now are stored and leave the quarantine."""
    return retry_quarantine(settings.store.path, settings.ingest, now=now or datetime.now(UTC))


# --- features ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeaturesResult:
    """The features written, where, and what they were built from."""

    built: StoreFeatures
    path: Path
    seconds: float


def features(
    settings: Settings, as_of: date, out: Path, progress: Progress | None = None
) -> FeaturesResult:
    """Build the features of every subscriber active at ``as_of`` (``[features]``) and write
    them to ``out`` (Parquet); an unwritable ``out`` is refused before the work."""
    import time

    started = time.perf_counter()
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise StoreError(f"--out {out}: expected a .parquet file name (features are Parquet)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"--out {out}: cannot create {out.parent} ({exc.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise StoreError(f"--out {out}: cannot write in {out.parent}")
    definition = feature_definition(settings.features, settings.labels)
    with workplace(settings.dask) as where:
        built = store_features(settings.store.path, as_of, definition, progress, where=where)
    try:
        built.frame.to_parquet(out)
    except OSError as exc:
        raise StoreError(f"--out {out}: cannot write ({exc})") from None
    return FeaturesResult(built, out, time.perf_counter() - started)
