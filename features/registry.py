"""What a feature is: its name, family, type, one-line description and reason group.

Each feature family describes its own columns (``DESCRIPTIONS`` in state, history, context;
``engagement.describe(config)`` for the windows a config asks for), and
``features.build.feature_registry(config)`` joins them: the docs, the training pipeline (which
columns are categorical), the per-user reasons and the service's ``/metadata`` read that one
table, so a feature is described in exactly one place, and the table is a function of the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Family = Literal["state", "history", "engagement", "context"]
Kind = Literal["numeric", "categorical", "boolean"]

#: Marketer-readable reason groups that per-user contributions are summed into.
REASON_GROUPS: Final = {
    "billing_trouble": "Payment failing: grace period, billing retry or account hold",
    "trial_ending": "Trial or discounted offer about to end",
    "auto_renew_off": "Auto-renew turned off: will not renew unless they act",
    "falling_engagement": "Using the app less than before",
    "price_change": "Price increase or a declined price change",
    "subscription_history": "Past cancellations, refunds or failed payments",
    "plan_and_tenure": "Plan, price paid and time as a subscriber",
    "context": "Platform, country and acquisition channel",
}


@dataclass(frozen=True)
class Feature:
    """One feature column: what it means and which reason group its contribution counts toward."""

    name: str
    family: Family
    kind: Kind
    description: str
    reason: str

    def __post_init__(self) -> None:
        if self.reason not in REASON_GROUPS:
            raise ValueError(
                f"feature {self.name!r}: reason {self.reason!r} is not one of "
                f"{sorted(REASON_GROUPS)}"
            )
