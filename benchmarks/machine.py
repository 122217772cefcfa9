"""What the machine was doing during a benchmark, for the lines its results are read with."""

from __future__ import annotations

from pathlib import Path

AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_warning() -> str | None:
    """A warning when the kernel groups processes by session (``sched_autogroup``): then
    ``nice`` orders processes only within their own session, so a niced job started from
    another shell still takes its full share of the cores and wall times include its load."""
    try:
        enabled = AUTOGROUP.read_text().strip() == "1"
    except OSError:  # not Linux, or no such knob: nice works as documented
        return None
    if not enabled:
        return None
    return (
        "kernel.sched_autogroup_enabled = 1: `nice` does not make other sessions' jobs yield to "
        "this benchmark; wall times include their load (as root: "
        f"echo 0 > {AUTOGROUP})"
    )


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> None:
    """Empty the kernel's page cache (as root), so the next run reads its files from disk, as a
    run on a store written long before it would: without it a store just written (or just
    compacted) is read from memory while a store larger than the free memory never is, and a
    comparison of sizes measures the cache, not the code. Raises PermissionError when not root."""
    import os

    os.sync()  # dirty pages are written first: only clean pages can be dropped
    DROP_CACHES.write_text("3\n")
