"""The ``[synthetic]`` settings section: what the generator makes, each default written once here.

``SyntheticSettings`` is the section ``lapse.settings.Settings`` composes; ``SHAPES`` are named
presets of its shape options (``lapse generate --shape NAME``, or ``shape = "social"`` in the
section): a preset fills in the options the section does not set itself, so
``SyntheticSettings(shape="social", users=500)`` is the social app with 500 users.

Imports nothing heavy, so loading the settings stays cheap.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from base import Section

#: In-app events every shape keeps: they follow the subscription state, not the engagement level.
STATE_EVENTS: Final = ("paywall_viewed", "support_contacted")
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.: -]{0,63}$")


class AppEvent(Section):
    """One named in-app event kind whose daily rate follows the hidden engagement level."""

    rate: float = Field(
        gt=0,
        le=50,
        allow_inf_nan=False,
        description="Mean events per day of a subscriber at the reference engagement level.",
    )
    drive: float = Field(
        ge=-3,
        le=3,
        allow_inf_nan=False,
        description="Elasticity of the rate to the hidden engagement level: positive falls "
        "before churn (likes, posts), negative rises before churn (unfriends, blocks).",
    )


#: A social app's events: most fall with engagement ahead of churn, two rise.
SOCIAL_EVENTS: Final[dict[str, dict[str, float]]] = {
    "like": {"rate": 0.6, "drive": 1.0},
    "message": {"rate": 0.35, "drive": 0.7},
    "comment": {"rate": 0.25, "drive": 0.9},
    "post": {"rate": 0.12, "drive": 1.3},
    "unfriend": {"rate": 0.04, "drive": -1.0},
    "block": {"rate": 0.015, "drive": -1.5},
}

#: Named presets of the shape options; "default" is today's app, byte for byte.
SHAPES: Final[dict[str, dict[str, Any]]] = {
    "default": {},
    "no-trials": {"trials": False, "offers": False},
    "monthly": {"plans": "monthly"},
    "annual": {"plans": "annual"},
    "late-renewals": {"renewal_delay_minutes": 90.0},
    "social": {"app_events": SOCIAL_EVENTS},
    # the shape of the foreign app of issue 12: monthly plans, no trials or offers, renewals
    # delivered after the expiry, and the app's own social events carrying the engagement signal
    "foreign": {
        "trials": False,
        "offers": False,
        "plans": "monthly",
        "renewal_delay_minutes": 90.0,
        "app_events": SOCIAL_EVENTS,
    },
}
#: The options a shape sets (recorded in manifest.json only where they differ from the default).
SHAPE_OPTIONS: Final = ("shape", "trials", "offers", "plans", "renewal_delay_minutes", "app_events")


class SyntheticSettings(Section):
    """The synthetic Adjust data generator: size, calendar, and the shape of the app."""

    users: int = Field(5000, ge=1, description="App users to simulate (about 85% subscribe).")
    seed: int = Field(7, ge=0, description="Random seed: the same seed writes the same bytes.")
    start: date = Field(date(2026, 1, 5), description="First day of the export (UTC).")
    days: int = Field(120, ge=8, description="Days of generated data (a week at least).")
    legacy_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of days, from the start, in Adjust's legacy subscription vocabulary.",
    )
    shape: str = Field(
        "default",
        description="A preset of the options below (features.synthetic.SHAPES); keys set "
        "explicitly win over the preset.",
    )
    trials: bool = Field(True, description="Whether the app offers 7-day free trials.")
    offers: bool = Field(True, description="Whether the app offers a discounted first month.")
    plans: Literal["monthly+annual", "monthly", "annual"] = Field(
        "monthly+annual", description="The subscription products on sale."
    )
    renewal_delay_minutes: float = Field(
        0.0,
        ge=0,
        le=1440,
        allow_inf_nan=False,
        description="Renewals are delivered uniformly 0..this many minutes after the expiry they "
        "continue (0: exactly at the expiry).",
    )
    app_events: dict[str, AppEvent] = Field(
        default_factory=dict,
        description="The app's own in-app event kinds, name -> {rate, drive}; empty: the fitness "
        "app's workout events.",
    )
    drift: Literal["none", "acquisition"] = Field(
        "none",
        description="A change in the app's population half-way through the period, for "
        "monitoring to catch: 'acquisition' = from then on most installs come from paid social "
        "networks (Meta, TikTok), with their lower intent; 'none' = a stable app.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_shape(cls, data: Any) -> Any:
        """Fill the options the data leaves out from the named preset."""
        if isinstance(data, dict) and isinstance(data.get("shape"), str):
            preset = SHAPES.get(data["shape"])
            if preset is not None:
                return {**preset, **data}
        return data

    @field_validator("shape")
    @classmethod
    def _known_shape(cls, value: str) -> str:
        if value not in SHAPES:
            raise ValueError(f"unknown shape {value!r}; choose one of {', '.join(SHAPES)}")
        return value

    @field_validator("app_events")
    @classmethod
    def _event_names(cls, value: dict[str, AppEvent]) -> dict[str, AppEvent]:
        if len(value) > 40:
            raise ValueError(f"at most 40 app events (got {len(value)})")
        for name in value:
            if not _EVENT_NAME.match(name):
                raise ValueError(
                    f"app event name {name!r} must be 1-64 letters, digits, '_', '.', ':', '-' "
                    "or spaces, not starting with a punctuation mark"
                )
            if name in STATE_EVENTS:
                raise ValueError(
                    f"app event name {name!r} is taken: every app keeps "
                    f"{' and '.join(STATE_EVENTS)}"
                )
        return value
