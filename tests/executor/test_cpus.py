"""The executor's default worker count: CPUs it may run on, bounded by a cgroup CPU limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.executor.cpus import cgroup_cpu_quota, usable_cpus
from proxy.settings import load_settings

AFFINITY = len(os.sched_getaffinity(0))


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({}, None),
        ({"cpu.max": "max 100000"}, None),
        ({"cpu.max": "150000 100000"}, 1.5),
        ({"cpu.max": "50000 100000"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2.0),
        ({"cpu.max": "garbage"}, None),
    ],
)
def test_cgroup_quota(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cgroup_cpu_quota(cgroup(tmp_path, files)) == quota


def test_without_a_limit_the_affinity_counts(tmp_path: Path) -> None:
    assert usable_cpus(cgroup(tmp_path, {"cpu.max": "max 100000"})) == AFFINITY


def test_a_limit_bounds_the_count_rounded_up(tmp_path: Path) -> None:
    assert usable_cpus(cgroup(tmp_path, {"cpu.max": "50000 100000"})) == 1  # half a CPU: one
    assert usable_cpus(cgroup(tmp_path, {"cpu.max": "100001 100000"})) == min(AFFINITY, 2)
    assert usable_cpus(cgroup(tmp_path, {"cpu.max": "6400000 100000"})) == AFFINITY


def test_executor_workers_is_unset_by_default_and_unset_by_an_empty_variable() -> None:
    assert load_settings(environ={}).executor_workers is None
    assert load_settings(environ={"MODGATE_EXECUTOR_WORKERS": ""}).executor_workers is None
    assert load_settings(environ={"MODGATE_EXECUTOR_WORKERS": "3"}).executor_workers == 3
