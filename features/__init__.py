"""features package."""

from features.store import load_events, load_quarantine

__all__ = [
    "load_events",
    "load_quarantine",
]
