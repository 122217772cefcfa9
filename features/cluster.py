"""Where partitioned work runs: this process, a local cluster started for the run, or an existing
dask.distributed cluster (``[dask] address``). This module owns the cluster's lifetime.

``with workplace(settings.dask) as where:`` gives a ``Workplace`` whose ``map(fn, items)``
yields ``fn(item)`` for every item in order: in-process one after another (only one result
being built at a time), on a cluster as tasks the scheduler retries on another worker when
one dies. A ``local:N`` cluster is stopped when the block ends, whatever happened in it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from base import LapseError
from features.duck import DUCKDB_THREADS
from features.settings import DaskSettings

_LOCAL = re.compile(r"^local:(\d+)$")
_PLAIN = (str, int, float, bool, type(None), datetime, date)


class ClusterError(LapseError, RuntimeError):
    """``dask.address`` names no cluster that can be reached or started."""


@dataclass
class Workplace:
    """Where a run's partitions are built: ``label`` says where (``in-process``, ``local:N`` or
    the scheduler's address), ``dashboard`` links the cluster's dashboard when there is one."""

    label: str
    dashboard: str | None = None
    client: Any = None  # a distributed.Client, or None in-process
    workers: int = 1

    @classmethod
    def of(cls, client: Any) -> Workplace:
        """The workplace of a ``distributed.Client`` the caller already holds."""
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        return cls(client.scheduler.address, client.dashboard_link, client, workers)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], **shared: Any) -> Iterator[Any]:
        """``fn(item, **shared)`` for every item, in the items' order.

        On a cluster, ``shared`` values (a model, a config) are sent to the workers once, and
        every item is a task; a task whose worker dies is run again elsewhere.
        """
        items = list(items)
        if self.client is None:
            for item in items:
                yield fn(item, **shared)
            return
        sent = {
            # hash=False: a fresh key per map; re-scattering an identical value (same content key)
            # while the previous map's copy is being released hung the workers in a transfer loop
            k: v if isinstance(v, _PLAIN) else self.client.scatter(v, broadcast=True, hash=False)
            for k, v in shared.items()
        }
        futures = self.client.map(fn, items, pure=False, **sent)
        try:
            for future in futures:
                result = future.result()
                future.release()
                yield result
        finally:
            for future in futures:
                future.cancel()


def local_worker_env(settings: DaskSettings) -> dict[str, str]:
    """Environment of a ``local:N`` cluster's workers: their polars and DuckDB pools sized to
    ``settings.library_threads`` (N workers share this machine's cores; pools of one thread per
    core in each worker contend for them). Empty when the libraries keep their defaults."""
    if not settings.library_threads:
        return {}
    threads = str(settings.library_threads)
    return {"POLARS_MAX_THREADS": threads, DUCKDB_THREADS: threads}


#: Set by dask's nannies in the process that starts them (``pre-spawn-environ``), and from there
#: inherited by every process it starts later, a later ``local:N`` cluster's workers included.
_TRIM = "MALLOC_TRIM_THRESHOLD_"


@contextmanager
def _environ_kept(name: str, drop: bool = False) -> Iterator[None]:
    """``os.environ[name]`` as it was before the block, whatever the block set; ``drop``: unset
    during the block (processes started in it do not inherit it)."""
    before = os.environ.get(name)
    if drop:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _local_config(settings: DaskSettings) -> dict[str, Any]:
    """Dask config for starting a ``local:N`` cluster (never applied to an existing one):
    without ``malloc_trim`` the workers start without dask's ``MALLOC_TRIM_THRESHOLD_`` (nor
    one this process holds: set by the user, or by an earlier cluster's nannies)."""
    if settings.malloc_trim:
        return {}
    return {f"distributed.nanny.pre-spawn-environ.{_TRIM}": None}


def _is_scheduler_file(address: str) -> bool:
    return address.endswith(".json") or Path(address).is_file()


@contextmanager
def workplace(settings: DaskSettings) -> Iterator[Workplace]:
    """The workplace ``settings.address`` names, for the duration of the block (see module)."""
    address = settings.address.strip()
    if not address:
        yield Workplace("in-process")
        return
    from distributed import Client, LocalCluster

    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    local = _LOCAL.match(address)
    if local:
        n = int(local.group(1))
        if n < 1:
            raise ClusterError(f"dask.address {address!r}: expected local:N with N >= 1")
        import dask

        with (
            _environ_kept(_TRIM, drop=not settings.malloc_trim),
            dask.config.set(_local_config(settings)),
            LocalCluster(
                n_workers=n,
                threads_per_worker=settings.threads_per_worker,
                processes=True,
                dashboard_address=":0",
                env=local_worker_env(settings),
            ) as cluster,
            Client(cluster) as client,
        ):
            yield Workplace(address, client.dashboard_link, client, n)
        return
    if not (address.startswith(("tcp://", "tls://", "inproc://")) or _is_scheduler_file(address)):
        raise ClusterError(
            f"dask.address {address!r}: expected '' (in-process), 'local:N', "
            "'tcp://host:8786' or the path of a scheduler file"
        )
    timeout = settings.connect_timeout_s
    try:
        if _is_scheduler_file(address) and not address.startswith(("tcp://", "tls://")):
            if not Path(address).is_file():
                raise OSError(f"no scheduler file at {address}")
            client = Client(scheduler_file=address, timeout=timeout)
        else:
            client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(
            f"dask.address {address!r}: no dask scheduler answered within {timeout:g} s "
            f"({reason[:160]}); start the cluster, fix the address, or set it to '' to run "
            "in-process"
        ) from None
    with client:
        yield Workplace.of(client)
