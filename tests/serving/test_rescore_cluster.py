"""Rescoring on a LocalCluster of two worker processes gives the in-process scores file, also
when a worker dies mid-run (the scheduler runs its task again elsewhere)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from features import schema as s
from features.cluster import workplace
from features.settings import DaskSettings, FeatureConfig
from serving.rescore import rescore
from serving.scores import read_scores, write_scores
from tests.features.conftest import day, random_history, write_store
from training.pipeline import ChurnModel

pytestmark = pytest.mark.slow

# workers unpickle KillOnce from its bytes, not by importing this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class KillOnce(ChurnModel):
    """A fitted model whose first use on a dask worker kills that worker's process (once: a
    marker file remembers it), as an out-of-memory kill or a lost machine would."""

    marker: str = ""

    @property
    def feature_definition(self):
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:  # on the client
            pass
        else:
            try:  # created atomically: two workers starting at once must not both die (the
                # model scattered to them would be lost with its last holder)
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super().feature_definition


def _model() -> ChurnModel:
    """A small model on registered feature names (auto-renew off, sessions, country)."""
    rng = np.random.default_rng(1)

    def frame(n: int):
        off = (rng.random(n) < 0.25).astype(float)
        sessions = rng.poisson(6, n).astype(float)
        churned = rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 2.5 * off - 0.3 * (sessions - 6))))
        index = pd.MultiIndex.from_arrays(
            [
                pd.Index([f"x{i}" for i in range(n)], dtype="str"),
                pd.Index(["ios"] * n, dtype="str"),
            ],
            names=list(s.SUBSCRIBER_INDEX),
        )
        X = pd.DataFrame(
            {
                "auto_renew_off": off,
                "sessions_28d": sessions,
                "country": pd.array(rng.choice(["US", "DE"], n), dtype="str"),
            },
            index=index,
        )
        return X, churned

    (X, y), (Xv, yv) = frame(1500), frame(800)
    return ChurnModel({"num_leaves": 7}, seed=3).fit(X, y, X_valid=Xv, y_valid=yv)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(random_history(users=60, seed=9), tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def model() -> ChurnModel:
    return _model()


def _file(result, model, path: Path) -> pd.DataFrame:
    write_scores(result.scores, path, model.bucket_policy_, {"as_of": str(result.as_of)})
    return read_scores(path)


def test_cluster_rescore_equals_in_process(dask_cluster, store, model, tmp_path) -> None:
    split = FeatureConfig(partitions=3)
    here = rescore(store, day(60), model, max_stale_days=30, split=split)
    assert len(here.scores) > 10
    with workplace(DaskSettings(address=dask_cluster.scheduler_address)) as where:
        there = rescore(store, day(60), model, max_stale_days=30, where=where, split=split)
    pd.testing.assert_frame_equal(there.scores, here.scores)
    assert (there.ran_on, there.partitions) == (dask_cluster.scheduler_address, 3)
    a = _file(here, model, tmp_path / "here.parquet")
    b = _file(there, model, tmp_path / "there.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "here.parquet").read_bytes() == (tmp_path / "there.parquet").read_bytes()


def test_a_worker_killed_mid_run_still_gives_the_same_scores(
    dask_cluster, store, model, tmp_path
) -> None:
    from distributed import Client

    here = rescore(store, day(60), model, max_stale_days=30, split=FeatureConfig(partitions=4))
    doomed = KillOnce.__new__(KillOnce)
    doomed.__dict__.update(model.__dict__)
    doomed.marker = str(tmp_path / "killed")
    with Client(dask_cluster) as client:
        # both workers up (an earlier test may have killed one): the model is scattered to both,
        # so the one that dies is not its only holder
        client.wait_for_workers(2, timeout=120)
        before = set(client.scheduler_info()["workers"])
    with workplace(DaskSettings(address=dask_cluster.scheduler_address)) as where:
        there = rescore(
            store, day(60), doomed, max_stale_days=30, where=where,
            split=FeatureConfig(partitions=4),
        )  # fmt: skip
        where.client.wait_for_workers(2, timeout=120)
        after = set(where.client.scheduler_info()["workers"])
    assert (tmp_path / "killed").is_file()  # a worker really died during the run
    assert before != after  # and the nanny replaced it
    pd.testing.assert_frame_equal(there.scores, here.scores)
    pd.testing.assert_frame_equal(
        _file(there, model, tmp_path / "there.parquet"),
        _file(here, model, tmp_path / "here.parquet"),
    )
