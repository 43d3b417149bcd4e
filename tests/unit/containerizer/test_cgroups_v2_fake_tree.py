"""The v2 backend against a directory tree laid out like cgroup2 (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.slave.containerizer.cgroups.base import CgroupLimits
from corral.slave.containerizer.cgroups.v2 import V2Backend, shares_to_weight
from corral.slave.containerizer.errors import CgroupError
from corral.slave.containerizer.forensics import limitation


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "cgroup.procs").write_text("1\n")
    return tmp_path


def test_prefix_enables_cpu_memory_pids_in_every_ancestor(root: Path) -> None:
    backend = V2Backend(root)
    backend.prepare_prefix("corral/agent-1")
    for cgroup in (root, root / "corral", root / "corral" / "agent-1"):
        enabled = (cgroup / "cgroup.subtree_control").read_text().split()
        assert enabled == ["+cpu", "+memory", "+pids"], cgroup


def test_prefix_leaves_enabled_controllers_alone(root: Path) -> None:
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    V2Backend(root).prepare_prefix("corral")
    assert (root / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_remove_prefix_removes_only_what_it_created(root: Path) -> None:
    (root / "corral").mkdir()
    backend = V2Backend(root)
    backend.prepare_prefix("corral/agent-1")
    # A fake tree holds regular files, so empty the directory as the kernel would.
    (root / "corral" / "agent-1" / "cgroup.subtree_control").unlink()
    backend.remove_prefix("corral/agent-1")
    assert not (root / "corral" / "agent-1").exists()
    assert (root / "corral").is_dir()


def test_create_writes_limits(root: Path) -> None:
    backend = V2Backend(root)
    backend.prepare_prefix("corral")
    limits = CgroupLimits.for_task(cpus_milli=500, mem_bytes=64 << 20, cpu_hard_cap=False, pids_max=10)
    join = backend.create("corral/t1", limits)
    leaf = root / "corral" / "t1"
    assert join == (leaf / "cgroup.procs",)
    # 500 millicpus -> 512 shares -> weight 1 + (510 * 9999) // 262142 = 20
    assert (leaf / "cpu.weight").read_text() == "20"
    assert (leaf / "cpu.max").read_text() == "max 100000"
    assert (leaf / "memory.max").read_text() == str(64 << 20)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "memory.oom.group").read_text() == "1"
    assert (leaf / "pids.max").read_text() == "10"


def test_create_with_hard_cap_and_no_pids_limit(root: Path) -> None:
    backend = V2Backend(root)
    limits = CgroupLimits.for_task(cpus_milli=1500, mem_bytes=1 << 30, cpu_hard_cap=True, pids_max=None)
    backend.create("t2", limits)
    assert (root / "t2" / "cpu.max").read_text() == "150000 100000"
    assert (root / "t2" / "pids.max").read_text() == "max"


def test_create_refuses_an_existing_cgroup(root: Path) -> None:
    backend = V2Backend(root)
    (root / "t3").mkdir()
    with pytest.raises(CgroupError, match="already exists"):
        backend.create("t3", CgroupLimits.for_task(100, 1 << 20, False, None))


def test_without_memory_controller_the_backend_refuses(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")
    with pytest.raises(CgroupError, match="memory controller"):
        V2Backend(tmp_path)


def test_stats_parse_oom_and_pids_events(root: Path) -> None:
    leaf = root / "c"
    leaf.mkdir()
    (leaf / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (leaf / "memory.current").write_text("1048576\n")
    (leaf / "memory.peak").write_text("33554432\n")
    (leaf / "memory.max").write_text("33554432\n")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "pids.max").write_text("max\n")
    (leaf / "pids.events").write_text("max 0\n")
    stats = V2Backend(root).stats("c")
    assert stats.cpu_time_ns == 1_500_000_000
    assert stats.oom_kills == 1
    assert stats.mem_peak_bytes == 32 << 20
    assert stats.pids == 3
    assert stats.pids_limit == 0  # "max" means unlimited
    found = limitation(stats)
    assert found is not None
    assert found.kind == "memory"
    assert found.message == (
        "memory limit 32.0 MiB exceeded (peak 32.0 MiB); killed by the kernel OOM killer"
    )


def test_stats_without_memory_peak_fall_back_to_current(root: Path) -> None:
    leaf = root / "c"
    leaf.mkdir()
    (leaf / "memory.current").write_text("4096\n")
    assert V2Backend(root).stats("c").mem_peak_bytes == 4096


def test_kill_all_uses_cgroup_kill_when_present(root: Path) -> None:
    leaf = root / "c"
    leaf.mkdir()
    (leaf / "cgroup.kill").write_text("")
    (leaf / "cgroup.procs").write_text("")
    V2Backend(root).kill_all("c")
    assert (leaf / "cgroup.kill").read_text() == "1"


def test_procs_lists_pids(root: Path) -> None:
    leaf = root / "c"
    leaf.mkdir()
    (leaf / "cgroup.procs").write_text("10\n11\n")
    assert V2Backend(root).procs("c") == {10, 11}
    assert V2Backend(root).procs("gone") == set()


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262_144, 10_000)])
def test_shares_to_weight_spans_the_v2_range(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight
