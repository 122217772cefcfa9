"""Lapse: churn prediction and re-engagement for subscription apps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lapse")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
