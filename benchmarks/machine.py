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
