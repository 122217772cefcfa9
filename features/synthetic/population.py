"""Draw the synthetic subscribers: who they are (observable) and what drives them (hidden)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic import catalog

#: Share of installers who never start a trial or subscription (they still open the app).
NEVER_SUBSCRIBE = 0.15
#: Share of users whose app never sets the customer user id: identity falls back to the adid.
ANONYMOUS = 0.02
#: Share of identified users who may later resubscribe on the other platform (a new subscriber).
SWITCH_CAPABLE = 0.05
FIRST_KIND_SHARES = {  # (first period kind, product): share of subscribers
    ("trial", catalog.MONTHLY): 0.45,
    ("trial", catalog.ANNUAL): 0.15,
    ("offer", catalog.MONTHLY): 0.10,
    ("paid", catalog.MONTHLY): 0.20,
    ("paid", catalog.ANNUAL): 0.10,
}
KIND_CODES = {"trial": 0, "offer": 1, "paid": 2}
NOT_SUBSCRIBED = np.iinfo(np.int32).max
#: The acquisition mix after an ``acquisition`` drift (``synthetic.drift``): paid social takes
#: over from organic installs (network name -> share; the names of catalog.NETWORKS).
SHIFTED_NETWORKS = {
    "Organic": 0.02,
    "Apple Search Ads": 0.05,
    "Google Ads": 0.08,
    "Meta": 0.30,
    "TikTok": 0.55,
}


@dataclass
class Population:
    """Per-subscriber arrays; index i is one subscriber (a user on one platform)."""

    platform: np.ndarray  # int8, catalog.IOS / ANDROID
    country: np.ndarray  # int16 index into catalog.COUNTRIES
    network: np.ndarray  # int16 index into catalog.NETWORKS
    user_num: np.ndarray  # int64 customer user number, shared by a user's twin; -1 = anonymous
    twin: np.ndarray  # int64 index of the other-platform twin, -1 if none
    is_twin: np.ndarray  # bool: exists only if the user switches platform
    traveler: np.ndarray  # bool: Android device location differs from the storefront country
    install_day: np.ndarray  # int32 days from the export start (negative = burn-in)
    install_ts: np.ndarray  # float64 seconds from the export start
    start_day: np.ndarray  # int32 day the first period starts (NOT_SUBSCRIBED if never)
    start_ts: np.ndarray  # float64
    first_kind: np.ndarray  # int8 KIND_CODES
    product: np.ndarray  # int8 catalog.MONTHLY / ANNUAL
    # hidden drivers
    intent: np.ndarray  # commitment; lowers voluntary cancellation, raises win-back
    price_sensitivity: np.ndarray  # in [0, 1]; reacts to offers ending and price increases
    pay_logit: np.ndarray  # logit of the billing-failure probability at a charge
    recovery_rate: np.ndarray  # daily probability of fixing a failed payment
    engagement0: np.ndarray  # log sessions/day at install
    engagement_trend: np.ndarray  # change of log sessions/day per 30 days

    @property
    def n(self) -> int:
        return len(self.platform)


def draw_population(
    rng: np.random.Generator,
    users: int,
    first_day: int,
    last_day: int,
    trials: bool = True,
    offers: bool = True,
    plans: str = "monthly+annual",
    shift_day: int | None = None,
    rng_shift: np.random.Generator | None = None,
) -> Population:
    """Draw ``users`` app users installing between ``first_day`` and ``last_day``, plus twins.

    An app without trials (or offers) sells the first period at full price to those who would
    have started one; a single-plan app sells its plan to everyone. Every other draw is the same
    as the default app's, so one seed gives the same users in every shape.

    ``shift_day`` (with its own ``rng_shift``) changes the acquisition mix for installs from that
    day on (``SHIFTED_NETWORKS``); their intent follows the new networks, every other draw is
    unchanged.
    """
    n = users
    platform = (rng.random(n) < 0.45).astype(np.int8)  # 55% iOS
    country = rng.choice(len(catalog.COUNTRIES), n, p=[c.share for c in catalog.COUNTRIES])
    network = rng.choice(len(catalog.NETWORKS), n, p=[nw[1] for nw in catalog.NETWORKS])
    # Apple Search Ads acquires iOS users only; on Android those installs come from Google Ads
    names = [nw[0] for nw in catalog.NETWORKS]

    def no_asa_on_android() -> None:
        asa_on_android = (network == names.index("Apple Search Ads")) & (
            platform == catalog.ANDROID
        )
        network[asa_on_android] = names.index("Google Ads")

    no_asa_on_android()
    anonymous = rng.random(n) < ANONYMOUS
    user_num = np.where(anonymous, -1, rng.permutation(n).astype(np.int64) + 1)
    traveler = rng.random(n) < 0.03

    install_day = rng.integers(first_day, last_day, n).astype(np.int32)
    install_ts = install_day * 86400.0 + rng.random(n) * 86400.0
    if shift_day is not None:
        shifted = install_day >= shift_day
        mix = [SHIFTED_NETWORKS[name] for name in names]
        network[shifted] = (rng_shift or np.random.default_rng()).choice(
            len(names), int(shifted.sum()), p=mix
        )
        no_asa_on_android()
    subscribes = rng.random(n) >= NEVER_SUBSCRIBE
    lag_days = np.where(rng.random(n) < 0.7, 0, rng.geometric(0.3, n))
    start_ts = install_ts + lag_days * 86400.0 + rng.random(n) * 3600.0
    start_day = np.where(subscribes, np.floor(start_ts / 86400.0), NOT_SUBSCRIBED).astype(np.int32)

    combos = list(FIRST_KIND_SHARES)
    pick = rng.choice(len(combos), n, p=list(FIRST_KIND_SHARES.values()))
    first_kind = np.array([KIND_CODES[combos[k][0]] for k in range(len(combos))], np.int8)[pick]
    product = np.array([combos[k][1] for k in range(len(combos))], np.int8)[pick]
    if not trials:
        first_kind[first_kind == KIND_CODES["trial"]] = KIND_CODES["paid"]
    if not offers:
        first_kind[first_kind == KIND_CODES["offer"]] = KIND_CODES["paid"]
    if plans != "monthly+annual":
        product[:] = catalog.MONTHLY if plans == "monthly" else catalog.ANNUAL

    network_intent = np.array([nw[2] for nw in catalog.NETWORKS])[network]
    intent = rng.normal(0.0, 1.0, n) + network_intent + 0.4 * (product == catalog.ANNUAL)
    price_sensitivity = rng.beta(2.0, 4.0, n)
    country_risk = np.array([c.payment_risk for c in catalog.COUNTRIES])[country]
    pay_logit = rng.normal(-3.4, 0.9, n) + country_risk + 0.35 * (platform == catalog.ANDROID)
    recovery_rate = rng.beta(0.8, 25.0, n)
    engagement0 = rng.normal(-0.9 + 0.35 * intent, 0.6)
    engagement_trend = rng.normal(-0.05, 0.25, n)

    # Users who may switch platform get a twin on the other platform, dormant until they switch.
    capable = np.flatnonzero(~anonymous & subscribes & (rng.random(n) < SWITCH_CAPABLE))
    m = len(capable)
    twin = np.full(n + m, -1, np.int64)
    twin[capable] = n + np.arange(m)

    def extend(a: np.ndarray, tail: np.ndarray) -> np.ndarray:
        return np.concatenate([a, tail.astype(a.dtype)])

    twin_platform = 1 - platform[capable]
    twin_pay = pay_logit[capable] + np.where(twin_platform == catalog.ANDROID, 0.35, -0.35)
    return Population(
        platform=extend(platform, twin_platform),
        country=extend(country.astype(np.int16), country[capable]),
        network=extend(network.astype(np.int16), np.zeros(m)),  # a switch is an organic install
        user_num=extend(user_num, user_num[capable]),
        twin=twin,
        is_twin=np.concatenate([np.zeros(n, bool), np.ones(m, bool)]),
        traveler=extend(traveler, traveler[capable]),
        # a twin installs and starts when its user switches; the simulator sets these
        install_day=extend(install_day, np.full(m, NOT_SUBSCRIBED)),
        install_ts=extend(install_ts, np.full(m, np.inf)),
        start_day=extend(start_day, np.full(m, NOT_SUBSCRIBED)),
        start_ts=extend(start_ts, np.full(m, np.inf)),
        first_kind=extend(first_kind, np.full(m, KIND_CODES["paid"])),
        product=extend(product, product[capable]),
        intent=extend(intent, intent[capable]),
        price_sensitivity=extend(price_sensitivity, price_sensitivity[capable]),
        pay_logit=extend(pay_logit, twin_pay),
        recovery_rate=extend(recovery_rate, recovery_rate[capable]),
        engagement0=extend(engagement0, engagement0[capable]),
        engagement_trend=extend(engagement_trend, engagement_trend[capable]),
    )
