"""The feature registry: every feature's name, family, type, one-line description and reason group.

The docs, the training pipeline (which columns are categorical), the per-user reasons and the
service's ``/metadata`` all read this one table, so a feature is described in exactly one place.
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


FEATURES: dict[str, Feature] = {}


def register(*features: Feature) -> None:
    """Add features to the registry; a name registered twice is a programming error."""
    for feature in features:
        if feature.name in FEATURES:
            raise ValueError(f"feature {feature.name!r} is registered twice")
        FEATURES[feature.name] = feature
