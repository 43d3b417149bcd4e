"""probe() picks the backend from the layout of a (fake) /sys/fs/cgroup and mountinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.slave.containerizer.cgroups.probe import probe
from corral.slave.containerizer.cgroups.v1 import V1Backend
from corral.slave.containerizer.cgroups.v2 import V2Backend
from corral.slave.containerizer.errors import CgroupError


def _mountinfo(tmp_path: Path, root: Path, v1: list[str], unified: bool) -> Path:
    lines = [f"31 23 0:28 / {root} rw,relatime - tmpfs tmpfs rw,mode=755"]
    for n, controllers in enumerate(v1):
        mount = root / controllers
        mount.mkdir(parents=True, exist_ok=True)
        lines.append(
            f"{32 + n} 31 0:{29 + n} / {mount} rw,relatime shared:{n} - cgroup cgroup rw,{controllers}"
        )
    if unified:
        (root / "unified").mkdir(parents=True, exist_ok=True)
        (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
        lines.append(f"60 31 0:60 / {root / 'unified'} rw,relatime - cgroup2 cgroup2 rw")
    lines.append("70 23 0:70 / /elsewhere/memory rw - cgroup cgroup rw,memory")
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_v2_only(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    backend = probe(root, tmp_path / "no-mountinfo")
    assert isinstance(backend, V2Backend)
    assert backend.controllers == ("cpu", "memory", "pids")


def test_v1_only(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    info = _mountinfo(tmp_path, root, ["cpu", "cpuacct", "memory", "pids", "freezer"], False)
    backend = probe(root, info)
    assert isinstance(backend, V1Backend)
    assert backend.mounts["memory"] == root / "memory"
    assert backend.mounts["freezer"] == root / "freezer"


def test_hybrid_with_empty_v2_picks_v1(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    info = _mountinfo(tmp_path, root, ["cpu", "cpuacct", "memory", "pids"], unified=True)
    assert isinstance(probe(root, info), V1Backend)


def test_comounted_cpu_cpuacct_share_one_directory(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    info = _mountinfo(tmp_path, root, ["cpu,cpuacct", "memory"], False)
    backend = probe(root, info)
    assert isinstance(backend, V1Backend)
    assert backend.mounts["cpu"] == backend.mounts["cpuacct"] == root / "cpu,cpuacct"
    assert backend.dirs("p/c") == (root / "cpu,cpuacct" / "p/c", root / "memory" / "p/c")


def test_nothing_usable_says_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    info = _mountinfo(tmp_path, root, ["cpu", "pids"], unified=True)
    with pytest.raises(CgroupError, match=r"memory and cpu.*found: cpu, pids"):
        probe(root, info)


def test_v2_without_memory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu pids\n")
    with pytest.raises(CgroupError, match="without the memory controller"):
        probe(root, tmp_path / "no-mountinfo")
