"""build_features on a dask.distributed cluster gives the local frame, whatever the input form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from features import FeatureInputError, build_features, build_features_distributed
from features import schema as s
from features.distributed import subscriber_partition


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def events(new_history):
    """60 subscribers with random lifecycles and activity (seeded)."""
    rng = np.random.default_rng(5)
    h = new_history()
    lifecycle = ["renewal", "cancellation", "grace_period", "expiration", "reactivation"]
    for i in range(60):
        user, platform = f"u{i:02d}", (s.OS_IOS, s.OS_ANDROID)[i % 2]
        start = float(rng.uniform(0, 30))
        h.install(user, start, platform=platform, network="Meta", country="US")
        h.sub(user, start, "activation", expires=start + 30, platform=platform, price=9.99)
        for when in np.sort(rng.uniform(start, 90, 3)):
            h.sub(
                user,
                float(when),
                str(rng.choice(lifecycle)),
                expires=float(when) + 30,
                platform=platform,
            )
        h.sessions(user, start, 90, float(rng.uniform(0.1, 2)), platform=platform)
    return h.frame()


def test_pandas_input_matches_local(client, events, day):
    local = build_features(events, day(60))
    assert len(local) > 10
    pd.testing.assert_frame_equal(build_features_distributed(events, day(60), client), local)


def test_dask_frame_and_parquet_folder_match_local(client, events, day, tmp_path):
    import dask.dataframe as dd

    local = build_features(events, day(45))
    from_dask = build_features_distributed(dd.from_pandas(events, npartitions=3), day(45), client)
    pd.testing.assert_frame_equal(from_dask, local)
    events.to_parquet(tmp_path / "part-0.parquet")
    from_files = build_features_distributed(tmp_path, day(45), client, partitions=3)
    pd.testing.assert_frame_equal(from_files, local)


def test_scheduler_address_and_empty_partitions(client, events, day):
    local = build_features(events, day(60))
    address = client.scheduler.address
    many = build_features_distributed(events, day(60), address, partitions=200)
    pd.testing.assert_frame_equal(many, local)


def test_partitions_keep_each_subscriber_whole(events):
    part = subscriber_partition(events, 7)
    per_subscriber = part.groupby([events[s.USER_ID], events[s.PLATFORM]]).nunique()
    assert (per_subscriber == 1).all() and part.between(0, 6).all()


def test_missing_subscriber_columns_are_named_before_any_work(client, events, day, tmp_path):
    import dask.dataframe as dd

    no_platform = events.drop(columns=[s.PLATFORM])
    no_platform.to_parquet(tmp_path / "part-0.parquet")
    for given in (no_platform, dd.from_pandas(no_platform, npartitions=2), tmp_path):
        with pytest.raises(
            FeatureInputError, match=r"missing subscriber column\(s\) \['platform'\]"
        ):
            build_features_distributed(given, day(45), client)
