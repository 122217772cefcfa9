"""Device and customer identifiers of the synthetic subscribers, as Adjust would report them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from features.synthetic import catalog
from features.synthetic.population import Population


@dataclass
class Identities:
    """Per-subscriber string columns, as pyarrow arrays indexed like the population."""

    adid: pa.Array
    idfa: pa.Array
    idfv: pa.Array
    gps_adid: pa.Array
    user_id: pa.Array  # the customer user id callback parameter; null when the app never set it
    subscriber_id: pa.Array  # Lapse's identity rule: customer user id, else the adid
    country: pa.Array
    sales_region: pa.Array
    sandbox: np.ndarray


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> list[str]:
    raw = rng.bytes(n * nbytes)
    return [raw[i : i + nbytes].hex() for i in range(0, n * nbytes, nbytes)]


def _uuids(hexes: list[str], upper: bool) -> list[str]:
    out = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" for h in hexes]
    return [u.upper() for u in out] if upper else out


def draw_identities(rng: np.random.Generator, pop: Population, sandbox_users: int) -> Identities:
    """Identifiers for every subscriber, then ``sandbox_users`` QA testers appended at the end."""
    n = pop.n + sandbox_users
    platform = np.concatenate([pop.platform, np.arange(sandbox_users) % 2]).astype(np.int8)
    ios = platform == catalog.IOS
    adid = _hex_ids(rng, n, 16)
    idfv = _uuids(_hex_ids(rng, n, 16), upper=True)
    idfa = _uuids(_hex_ids(rng, n, 16), upper=True)
    gps = _uuids(_hex_ids(rng, n, 16), upper=False)
    att_opt_in = rng.random(n) < 0.25
    limit_ad_tracking = rng.random(n) < 0.05
    zero_gaid = "00000000-0000-0000-0000-000000000000"

    codes = [c.code for c in catalog.COUNTRIES]
    country = [codes[c] for c in pop.country] + ["us"] * sandbox_users
    elsewhere = rng.integers(0, len(codes), n)
    traveler = np.concatenate([pop.traveler, np.zeros(sandbox_users, bool)])
    sales_region = [
        # Apple reports the storefront (upper case here); Google the device location (lower case)
        country[i].upper() if ios[i] else (codes[elsewhere[i]] if traveler[i] else country[i])
        for i in range(n)
    ]
    user_num = np.concatenate([pop.user_num, np.full(sandbox_users, -2)])
    user_id = [
        None if u == -1 else (f"qa-tester-{i - pop.n + 1}" if u == -2 else f"u{u:08d}")
        for i, u in enumerate(user_num)
    ]
    return Identities(
        adid=pa.array(adid),
        idfa=pa.array([idfa[i] if ios[i] and att_opt_in[i] else None for i in range(n)]),
        idfv=pa.array([idfv[i] if ios[i] else None for i in range(n)]),
        gps_adid=pa.array(
            [None if ios[i] else (zero_gaid if limit_ad_tracking[i] else gps[i]) for i in range(n)]
        ),
        user_id=pa.array(user_id, pa.string()),
        subscriber_id=pa.array(
            [u if u is not None else a for u, a in zip(user_id, adid, strict=True)]
        ),
        country=pa.array(country),
        sales_region=pa.array(sales_region),
        sandbox=np.concatenate([np.zeros(pop.n, bool), np.ones(sandbox_users, bool)]),
    )
