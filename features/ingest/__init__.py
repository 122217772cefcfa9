"""Ingest: Adjust exports in (``adjust``), the Parquet event store out (``store``), one run
of it (``run``): read, normalise, deduplicate, quarantine, commit."""

from features.ingest.run import (
    IngestError,
    IngestSummary,
    find_sources,
    ingest,
    reprocess_quarantine,
)
from features.ingest.store import MANIFEST, StoreError, load_events, load_quarantine

__all__ = [
    "MANIFEST",
    "IngestError",
    "IngestSummary",
    "StoreError",
    "find_sources",
    "ingest",
    "load_events",
    "load_quarantine",
    "reprocess_quarantine",
]
