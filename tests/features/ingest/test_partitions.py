"""Subscribers hashed to partitions: stable buckets, ranges that cover every bucket once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from features.ingest.partitions import (
    BUCKETS,
    PartitionError,
    bucket_range,
    partition_count,
    partition_of,
    subscriber_buckets,
)


def test_buckets_are_a_fixed_function_of_the_subscriber() -> None:
    """The same values in every process and run (Python's own hash is salted per process): a
    store written today is read by partition with tomorrow's workers."""
    got = subscriber_buckets(pa.array(["a", "b", "a", None]), pa.array(["ios", "ios", "ios", None]))
    assert got.type == pa.uint16()
    assert got.to_pylist() == [39160, 63193, 39160, 49072]
    # a user on two platforms is two subscribers
    two = subscriber_buckets(pa.array(["a", "a"]), pa.array(["ios", "android"])).to_pylist()
    assert two[0] != two[1]


def test_chunked_and_empty_inputs() -> None:
    chunked = pa.chunked_array([["a", "b"], ["a"]])
    platforms = pa.chunked_array([["ios"], ["ios", "ios"]])
    assert subscriber_buckets(chunked, platforms).to_pylist() == [39160, 63193, 39160]
    assert len(subscriber_buckets(pa.array([], pa.string()), pa.array([], pa.string()))) == 0


@pytest.mark.parametrize("count", [1, 2, 3, 7, 1000, BUCKETS])
def test_partition_ranges_cover_every_bucket_once(count: int) -> None:
    part = partition_of(np.arange(BUCKETS), count)
    seen = np.zeros(BUCKETS, dtype=int)
    for i in (0, count // 2, count - 1):
        lo, hi = bucket_range(i, count)
        assert (part[lo:hi] == i).all()
    for i in range(min(count, 50)):
        lo, hi = bucket_range(i, count)
        seen[lo:hi] += 1
    assert part.min() == 0 and part.max() == count - 1
    assert seen.max() == 1


def test_out_of_range_partitions_are_refused() -> None:
    with pytest.raises(PartitionError, match="partitions: expected 1 to 65536, got 0"):
        bucket_range(0, 0)
    with pytest.raises(PartitionError, match="partition 3: expected 0 to 2"):
        bucket_range(3, 3)


def test_partition_count_follows_the_memory_setting() -> None:
    """About 340 bytes per stored event row: 100M rows in 4 GiB steps is 8 partitions."""
    assert partition_count(100_000_000, 4.0) == 8
    assert partition_count(1_000, 4.0) == 1
    assert partition_count(100_000_000, 4.0, partitions=3) == 3  # a fixed count wins
    assert partition_count(10**12, 0.001) == BUCKETS
