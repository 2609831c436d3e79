"""The memory cgroup helper on a fake hierarchy: v1 and v2 limits written, peak and OOM kills read back,
a clear reason when there is no memory controller."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cgroup import MemoryCgroup, NoMemoryCgroupError


def test_v1_group_gets_the_limit_and_reports_peak_and_oom_kills(tmp_path: Path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712")
    group = MemoryCgroup.create("bench", 64 * 2**20, v2_root=tmp_path / "none", v1_root=v1)
    assert group.version == 1
    assert (v1 / "bench" / "memory.limit_in_bytes").read_text() == str(64 * 2**20)
    (v1 / "bench" / "memory.max_usage_in_bytes").write_text("1048576\n")
    (v1 / "bench" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert group.peak_bytes() == 2**20
    assert group.oom_kills() == 2


def test_v2_group_gets_memory_max(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    group = MemoryCgroup.create("bench", 128 * 2**20, v2_root=tmp_path, v1_root=tmp_path / "none")
    assert group.version == 2
    assert (tmp_path / "bench" / "memory.max").read_text() == str(128 * 2**20)
    assert (tmp_path / "bench" / "memory.swap.max").read_text() == "0"
    (tmp_path / "bench" / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    assert group.oom_kills() == 1
    assert group.peak_bytes() is None  # no memory.peak on this (older) kernel


def test_no_memory_controller_is_a_clear_reason(tmp_path: Path) -> None:
    with pytest.raises(NoMemoryCgroupError, match="no memory cgroup controller"):
        MemoryCgroup.create("bench", 2**26, v2_root=tmp_path, v1_root=tmp_path / "memory")
