"""The ``[monitoring]`` settings section: how Lapse checks its own scores after the fact
(``lapse backtest``); ``lapse.settings.Settings`` composes it with the other sections."""

from __future__ import annotations

from pydantic import Field

from base import Section

__all__ = ["MonitoringSettings"]


class MonitoringSettings(Section):
    """Backtests of past scores against realised churn, logged to their own MLflow experiment."""

    experiment: str = Field(
        "lapse-monitoring",
        min_length=1,
        description="MLflow experiment of the monitoring runs (one run per `lapse backtest`, "
        "tagged lapse.kind=backtest), kept apart from the training runs.",
    )
