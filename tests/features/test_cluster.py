"""Where partitioned work runs: in-process, an existing cluster, or a clear one-line refusal."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from features.cluster import ClusterError, workplace
from features.from_store import store_features
from features.settings import DaskSettings, FeatureConfig
from tests.features.conftest import day, random_history, write_store


def test_empty_address_runs_in_process() -> None:
    with workplace(DaskSettings()) as where:
        assert (where.label, where.client, where.dashboard) == ("in-process", None, None)
        assert list(where.map(lambda x, k: x * k, [1, 2, 3], k=2)) == [2, 4, 6]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("tcp://127.0.0.1:9", "no dask scheduler answered within 1 s"),
        ("/no/such/scheduler.json", "no dask scheduler answered within 1 s .no scheduler file"),
        ("somewhere", "expected '' .in-process., 'local:N', 'tcp://host:8786'"),
        ("local:0", "expected local:N with N >= 1"),
    ],
)
def test_an_unusable_address_is_one_line_naming_it(address: str, reason: str) -> None:
    started = time.monotonic()
    with (
        pytest.raises(ClusterError, match=reason) as raised,
        workplace(DaskSettings(address=address, connect_timeout_s=1)),
    ):
        pass
    message = str(raised.value)
    assert repr(address) in message and "\n" not in message
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_an_existing_cluster_builds_what_the_process_builds(dask_cluster, tmp_path) -> None:
    """Workers read their own partitions of the store: the frame equals the in-process one."""
    store = write_store(random_history(users=50, seed=8), tmp_path)
    config = FeatureConfig()
    here = store_features(store, day(60), config, partitions=3)
    with workplace(DaskSettings(address=dask_cluster.scheduler_address)) as where:
        assert where.label == dask_cluster.scheduler_address and where.workers == 2
        there = store_features(store, day(60), config, where=where, partitions=3)
        auto = store_features(store, day(60), config, where=where)
    pd.testing.assert_frame_equal(there.frame, here.frame)
    pd.testing.assert_frame_equal(auto.frame, here.frame)
    assert there.ran_on == dask_cluster.scheduler_address
    assert auto.partitions == 4  # two per worker when the memory setting needs fewer


def _worker_threads() -> tuple[int, int, str | None]:
    """A worker's polars pool size, the threads of a DuckDB database it opens, its trim env."""
    import os

    import polars as pl

    from features import duck

    with duck.connection() as con:
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    return pl.thread_pool_size(), int(threads), os.environ.get("MALLOC_TRIM_THRESHOLD_")


@pytest.mark.slow
def test_a_local_cluster_sizes_its_workers_library_pools(monkeypatch) -> None:
    """local:N workers get `library_threads` polars and DuckDB threads each, and dask's malloc
    trim only when `malloc_trim` keeps it, even when this process holds the variable (as an
    earlier cluster's nannies leave it); this process's environment is left as it was."""
    import os

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    with workplace(DaskSettings(address="local:2", library_threads=1)) as where:
        seen = where.client.run(_worker_threads)
        assert sorted(seen.values()) == [(1, 1, "131072")] * 2
    with workplace(DaskSettings(address="local:1", library_threads=2, malloc_trim=False)) as w:
        assert list(w.client.run(_worker_threads).values()) == [(2, 2, None)]
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == "131072"


@pytest.mark.slow
def test_an_existing_clusters_workers_keep_their_libraries_defaults(dask_cluster) -> None:
    """The pool settings are for clusters Lapse starts: an existing cluster's workers get none."""

    def env() -> tuple[str | None, str | None]:
        import os

        return os.environ.get("POLARS_MAX_THREADS"), os.environ.get("LAPSE_DUCKDB_THREADS")

    settings = DaskSettings(address=dask_cluster.scheduler_address, library_threads=1)
    with workplace(settings) as where:
        assert list(where.client.run(env).values()) == [(None, None)] * 2
