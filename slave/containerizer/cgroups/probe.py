"""Pick the cgroup backend the host supports."""

from __future__ import annotations

from pathlib import Path

from corral.slave.containerizer.cgroups import files
from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.cgroups.v1 import V1Backend
from corral.slave.containerizer.cgroups.v2 import V2Backend
from corral.slave.containerizer.errors import CgroupError


def v1_mounts(root: Path, mountinfo: Path) -> dict[str, Path]:
    """Controller -> mount point of the cgroup v1 hierarchies mounted under ``root``."""
    mounts: dict[str, Path] = {}
    for line in (files.read_text(mountinfo) or "").splitlines():
        # proc(5): "... mount_point options [optional fields] - fstype source super_options"
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields = head.split()
        fstype, _source, super_options = ([*tail.split(), "", ""])[:3]
        if fstype != "cgroup" or len(fields) < 5:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        if mount_point != root and root not in mount_point.parents:
            continue
        for option in super_options.split(","):
            mounts.setdefault(option, mount_point)
    return mounts


def probe(
    root: Path = Path("/sys/fs/cgroup"), mountinfo: Path = Path("/proc/self/mountinfo")
) -> CgroupBackend:
    """V2 when ``root`` is a unified hierarchy with memory; else V1 if memory and cpu are
    mounted as v1 (a hybrid host's empty cgroup2 at root/unified is ignored)."""
    controllers = files.read_text(root / "cgroup.controllers")
    if controllers is not None:
        if "memory" in controllers.split():
            return V2Backend(root)
        raise CgroupError(
            f"{root} is a cgroup v2 hierarchy without the memory controller "
            f"(available: {controllers.strip() or 'none'}); enable it for corral"
        )
    mounts = v1_mounts(root, mountinfo)
    missing = [c for c in ("memory", "cpu") if c not in mounts]
    if not missing:
        return V1Backend(mounts)
    raise CgroupError(
        f"no usable cgroup hierarchy under {root}: neither cgroup v2 with the memory "
        f"controller nor cgroup v1 with memory and cpu mounted "
        f"(v1 controllers found: {', '.join(sorted(mounts)) or 'none'})"
    )
