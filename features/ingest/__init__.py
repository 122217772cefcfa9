"""Ingest: Adjust exports in (``adjust``), the Parquet event store out (``store``), one run
of it (``run``): read, normalise, deduplicate, quarantine, commit."""

from features.ingest.run import IngestError, IngestSummary, find_sources, ingest
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
]
