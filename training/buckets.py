"""Bucket policy: churn probabilities -> the bucket words marketers see, with hysteresis.

Buckets are ordered riskiest first. Each has a lower bound on the churn probability, either given
(`mode="probability"`) or taken from this run's population so that each bucket holds a share of
the users (`mode="share"`); everyone below the last bound gets the `rest` bucket. (`mode="given"`
takes the bucket a scores file already carries; the sync applies it as is.) Hysteresis: a
user keeps the bucket Braze acknowledged last time until their probability leaves that bucket's
range by more than `hysteresis`, so a score jittering around a bound does not flip (and bill) daily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from base import LapseError
from features.schema import BUCKET

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["BucketPolicy", "BucketPolicyError", "assign_buckets", "bucket_bounds"]

Mode = Literal["probability", "share", "given"]


class BucketPolicyError(LapseError, ValueError):
    """A bucket policy that cannot order users (bad bounds, shares or names)."""


@dataclass(frozen=True)
class BucketPolicy:
    """`cuts` are (bucket, probability lower bound or population share), riskiest first."""

    mode: Mode
    cuts: tuple[tuple[str, float], ...]
    rest: str
    hysteresis: float = 0.0

    @classmethod
    def of(
        cls, mode: Mode, cuts: Mapping[str, float], rest: str, hysteresis: float = 0.0
    ) -> BucketPolicy:
        """Build and check a policy from a {bucket: value} mapping kept in its written order."""
        policy = cls(mode, tuple((str(k), float(v)) for k, v in cuts.items()), rest, hysteresis)
        policy.check()
        return policy

    def to_json(self) -> str:
        """The policy as JSON, e.g. to travel with a scores file (see `from_json`)."""
        return json.dumps(
            {"mode": self.mode, "cuts": self.cuts, "rest": self.rest, "hysteresis": self.hysteresis}
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> BucketPolicy:
        """The policy `to_json` wrote; raises BucketPolicyError if it is not one."""
        try:
            d = json.loads(text)
            cuts = tuple((str(name), float(value)) for name, value in d["cuts"])
            policy = cls(d["mode"], cuts, d["rest"], float(d.get("hysteresis", 0.0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise BucketPolicyError(f"not a bucket policy ({exc}): {text!r:.200}") from None
        policy.check()
        return policy

    @property
    def names(self) -> tuple[str, ...]:
        """Every bucket, riskiest first, ending with `rest`."""
        return (*(name for name, _ in self.cuts), self.rest)

    def check(self) -> None:
        """Raise BucketPolicyError naming the offending bucket or value."""
        if self.mode not in ("probability", "share", "given"):
            raise BucketPolicyError(
                f"bucket mode {self.mode!r}: expected 'probability', 'share' or 'given'"
            )
        names = self.names
        if len(set(names)) != len(names) or any(not n.strip() for n in names):
            raise BucketPolicyError(f"bucket names must be distinct and non-empty: {names}")
        if not 0 <= self.hysteresis < 0.5:
            raise BucketPolicyError(f"hysteresis {self.hysteresis}: expected 0 <= value < 0.5")
        values = [v for _, v in self.cuts]
        if self.mode == "given":
            return
        if self.mode == "probability":
            for (name, v), nxt in zip(self.cuts, [*values[1:], None], strict=True):
                if not 0 < v <= 1:
                    raise BucketPolicyError(f"bucket {name!r}: bound {v} is not in (0, 1]")
                if nxt is not None and not v > nxt:
                    raise BucketPolicyError(
                        f"bucket {name!r}: bound {v} must be above the next bucket's {nxt} "
                        "(riskiest first)"
                    )
        else:
            for name, v in self.cuts:
                if not 0 < v < 1:
                    raise BucketPolicyError(f"bucket {name!r}: share {v} is not in (0, 1)")
            if sum(values) >= 1:
                raise BucketPolicyError(
                    f"bucket shares add up to {sum(values):g}; they must leave some users "
                    f"for {self.rest!r}"
                )


def bucket_bounds(policy: BucketPolicy, probabilities: np.ndarray) -> np.ndarray:
    """Probability lower bounds of the non-rest buckets, riskiest first, for this population."""
    import numpy as np  # here, not above: the settings load BucketPolicy, and stay light

    values = np.array([v for _, v in policy.cuts], dtype=float)
    if policy.mode == "probability":
        return values
    p = np.sort(np.asarray(probabilities, dtype=float))[::-1]  # riskiest first
    n = len(p)
    bounds = []
    for share in np.cumsum(values):
        # at most `share` of the users at or above the bound: the k-th highest score, or just
        # above it when users tied with it would push the bucket past its share (a flat model
        # puts nobody in the top bucket rather than everybody)
        k = int(np.floor(share * n + 1e-9))
        if k == 0:
            bounds.append(np.inf)
        elif k < n and p[k] == p[k - 1]:
            bounds.append(np.nextafter(p[k - 1], np.inf))
        else:
            bounds.append(p[k - 1])
    return np.array(bounds, dtype=float)


def bucket_names(probabilities: np.ndarray, policy: BucketPolicy) -> np.ndarray:
    """``assign_buckets`` without history, on a bare array (no pandas: the service's path)."""
    import numpy as np

    p = np.asarray(probabilities, dtype=float)
    index = _bucket_index(p, bucket_bounds(policy, p))
    return np.array(policy.names, dtype=object)[index]


def _bucket_index(p: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Index of the first bound p reaches; len(bounds) (= rest) when it reaches none."""
    return (p[:, None] < bounds[None, :]).sum(axis=1)


def assign_buckets(
    probabilities: pd.Series, policy: BucketPolicy, previous: pd.Series | None = None
) -> pd.Series:
    """Each user's bucket; `previous` (same index, None where unknown) enables hysteresis."""
    import numpy as np  # here, not above: see bucket_bounds
    import pandas as pd

    p = probabilities.to_numpy(dtype=float)
    bounds = bucket_bounds(policy, p)
    names = np.array(policy.names, dtype=object)
    raw = _bucket_index(p, bounds)
    result = raw.copy()
    if previous is not None and policy.hysteresis > 0 and len(p):
        position = {name: i for i, name in enumerate(policy.names)}
        prev = previous.reindex(probabilities.index).map(position).to_numpy(dtype=float)
        known = ~np.isnan(prev)
        upper = np.concatenate([[np.inf], bounds])  # bucket i covers [lower[i], upper[i])
        lower = np.concatenate([bounds, [-np.inf]])
        i = np.where(known, prev, 0).astype(int)
        m = policy.hysteresis
        keep = known & (p >= lower[i] - m) & (p < upper[i] + m)
        result = np.where(keep, i, raw)
    return pd.Series(names[result], index=probabilities.index, dtype=object, name=BUCKET)
