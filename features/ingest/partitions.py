"""Subscribers hashed to partitions: the one rule every split of the event store follows.

A subscriber's *bucket* is the top 16 bits of a stable 64-bit hash (SipHash-2-4 with pandas'
fixed key, the same in every process, machine and run, unlike Python's salted ``hash``) of
``user_id`` and ``platform``. Partition ``i`` of ``n`` is the contiguous bucket range
``[i * BUCKETS // n, (i + 1) * BUCKETS // n)``, so any partition count is a range filter on the
stored ``bucket`` column (see ``features.ingest.store``), and a subscriber's events always land
in one partition whole. Every feature reads one subscriber's events only, so building each
partition on its own gives exactly the rows of the whole build.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from base import LapseError
from features import schema as s

#: Buckets a subscriber hashes to (the stored column is uint16); partitions are ranges of them.
BUCKETS: Final = 1 << 16
#: Peak bytes a rescore takes per stored event row of a partition (measured: 6.09 GiB for four
#: partitions of a 75M-row store, ~350 B/row: the Arrow read, its pandas copy, the build and the
#: scoring; docs/benchmarks.md). ``partition_count`` divides the store by it.
BYTES_PER_ROW: Final = 340
_SEP: Final = "\x1f"  # between user_id and platform: neither holds a unit separator


class PartitionError(LapseError, ValueError):
    """A partition count or number outside what the buckets allow."""


def subscriber_buckets(user_id: pa.Array | pa.ChunkedArray, platform) -> pa.Array:
    """The bucket (uint16) of each row's subscriber; nulls hash as empty text.

    The distinct subscribers are hashed once (dictionary encoding), so a table of many events
    per subscriber costs one hash per subscriber.
    """
    uid = pc.fill_null(pc.cast(user_id, pa.string()), "")
    plat = pc.fill_null(pc.cast(platform, pa.string()), "")
    keys = pc.binary_join_element_wise(uid, plat, _SEP)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if len(keys) == 0:
        return pa.array([], pa.uint16())
    encoded = pc.dictionary_encode(keys)
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    hashed = pd.util.hash_array(distinct, categorize=False)  # uint64, stable across processes
    top = (hashed >> np.uint64(48)).astype(np.uint16)
    return pa.array(top).take(encoded.indices)


def bucket_range(index: int, count: int) -> tuple[int, int]:
    """The buckets ``[lo, hi)`` of partition ``index`` of ``count``."""
    if not 1 <= count <= BUCKETS:
        raise PartitionError(f"partitions: expected 1 to {BUCKETS}, got {count}")
    if not 0 <= index < count:
        raise PartitionError(f"partition {index}: expected 0 to {count - 1}")
    return index * BUCKETS // count, (index + 1) * BUCKETS // count


def partition_of(buckets: pa.Array | np.ndarray, count: int) -> np.ndarray:
    """The partition number of each bucket when the buckets are split into ``count`` ranges."""
    b = np.asarray(buckets, dtype=np.int64)
    # the inverse of bucket_range: the largest i with i * BUCKETS // count <= b
    return ((b + 1) * count - 1) // BUCKETS


def subscriber_partition(events: pd.DataFrame, count: int) -> pd.Series:
    """Partition number (0..count-1) of each row of a pandas event frame."""
    buckets = subscriber_buckets(
        pa.array(events[s.USER_ID].astype("str"), pa.string()),
        pa.array(events[s.PLATFORM].astype("str"), pa.string()),
    )
    return pd.Series(partition_of(buckets, count), index=events.index, dtype="int64")


def partition_count(rows: int, max_memory_gib: float, partitions: int = 0) -> int:
    """Partitions for a build over ``rows`` stored events: ``partitions`` when given (> 0), else
    enough that one partition's rows times ``BYTES_PER_ROW`` fit ``max_memory_gib``."""
    if partitions > 0:
        return min(partitions, BUCKETS)
    need = rows * BYTES_PER_ROW / (max_memory_gib * 2**30)
    return int(min(max(1, math.ceil(need)), BUCKETS))
