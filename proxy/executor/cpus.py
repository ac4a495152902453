"""How many CPUs this process may use: the default number of executor worker processes.

Strategy: the smallest of what limits the process. `os.sched_getaffinity` is the set of CPUs
the scheduler will run it on (taskset, a cpuset cgroup, Kubernetes' static CPU manager), a
subset of `os.cpu_count()`; a CFS quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`: a
container's CPU limit) caps the time it gets, rounded up to whole CPUs. More worker processes
than that only add isolates and memory: handlers that run JS compete for the same CPUs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on, bounded by its cgroup's CPU quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU limit in CPUs (quota / period), or None when it has none."""
    v2 = _read(root / "cpu.max")  # "max 100000" or "150000 100000"
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period)
    v1 = _read(root / "cpu" / "cpu.cfs_quota_us")  # "-1" when unlimited
    if v1 is not None:
        return _ratio(v1, _read(root / "cpu" / "cpu.cfs_period_us") or "")
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max", or a file that is not what it should be
        return None
    return q / p if q > 0 and p > 0 else None
