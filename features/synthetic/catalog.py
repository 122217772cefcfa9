"""The synthetic app's fixed world: apps, products, prices, markets, networks, store rules."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

IOS: Final = 0
ANDROID: Final = 1
PLATFORM_NAMES: Final = ("ios", "android")

APP_NAME: Final = "Lapse Demo Fitness"
#: Each platform is its own Adjust app with its own token (and its own adid space).
APP_TOKENS: Final = ("a1b2c3d4e5f6", "f6e5d4c3b2a1")
STORES: Final = ("appleappstore", "googleplaystore")

MONTHLY: Final = 0
ANNUAL: Final = 1
PERIOD_DAYS: Final = (30, 365)
TRIAL_DAYS: Final = 7
PRODUCT_IDS: Final = (
    ("com.lapsedemo.premium.monthly", "com.lapsedemo.premium.annual"),  # iOS
    ("premium_monthly", "premium_annual"),  # Android
)

# Store billing-failure rules: days of grace (access kept), then days of retry / account hold.
GRACE_DAYS: Final = (16, 7)
RETRY_WINDOW_DAYS: Final = (45, 37)  # grace included: iOS 16 + 29 retry, Android 7 + 30 hold


@dataclass(frozen=True)
class Country:
    """A market: its share of installs, currency, price points and payment-failure offset."""

    code: str
    share: float
    currency: str
    monthly: float
    monthly_new: float  # after the price increase
    annual: float
    offer: float  # first month of a discounted offer
    payment_risk: float  # added to the logit of the billing-failure probability


COUNTRIES: Final = (
    Country("us", 0.34, "USD", 9.99, 12.99, 59.99, 4.99, 0.0),
    Country("gb", 0.10, "GBP", 8.99, 10.99, 54.99, 3.99, 0.0),
    Country("de", 0.12, "EUR", 9.99, 12.99, 59.99, 4.99, -0.2),
    Country("fr", 0.08, "EUR", 9.99, 12.99, 59.99, 4.99, 0.0),
    Country("br", 0.14, "BRL", 27.90, 34.90, 169.90, 14.90, 0.9),
    Country("in", 0.12, "INR", 399.0, 499.0, 2499.0, 199.0, 1.1),
    Country("jp", 0.10, "JPY", 1500.0, 1900.0, 9000.0, 750.0, -0.3),
)

#: Acquisition networks with their effect on hidden intent (organic users are more committed).
NETWORKS: Final = (
    ("Organic", 0.40, 0.35),
    ("Apple Search Ads", 0.12, 0.15),
    ("Google Ads", 0.18, -0.05),
    ("Meta", 0.18, -0.25),
    ("TikTok", 0.12, -0.45),
)

#: In-app events: (name, Adjust event token, share of engagement-driven events).
IN_APP_EVENTS: Final = (
    ("workout_completed", "wk7d2x", 0.55),
    ("plan_viewed", "pl4n9v", 0.25),
    ("workout_shared", "sh8r3q", 0.10),
    ("paywall_viewed", "pw2l1v", 0.05),
    ("support_contacted", "sp9t6c", 0.05),
)


def event_token(name: str) -> str:
    """A stable 6-character Adjust event token for an app event name."""
    return hashlib.sha1(name.encode()).hexdigest()[:6]


def in_app_events(app_events: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
    """(name, token) by event code: the app's own event kinds, then paywall views and support
    contacts; without any, the fitness app's ``IN_APP_EVENTS``."""
    names = list(app_events)
    if not names:
        return tuple((name, token) for name, token, _ in IN_APP_EVENTS)
    kept = [(name, token) for name, token, _ in IN_APP_EVENTS[3:]]
    return (*((name, event_token(name)) for name in names), *kept)


# Sandbox testers: Apple's sandbox renews a monthly subscription every 5 minutes, at most 12 times.
SANDBOX_RENEW_SECONDS: Final = 300
SANDBOX_RENEW_SECONDS_ANNUAL: Final = 3600  # and a year every hour
SANDBOX_MAX_RENEWALS: Final = 12
