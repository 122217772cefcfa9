"""Suite-wide settings: hypothesis without its wall-clock deadline (a loaded shared machine
would fail an example for being slow, not wrong)."""

import pytest
from hypothesis import settings

settings.register_profile("lapse", deadline=None)
settings.load_profile("lapse")


@pytest.fixture(scope="session")
def dask_cluster():
    """One LocalCluster of two worker processes for the whole session (starting one costs
    seconds): the modules that test work on a cluster share it."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster
