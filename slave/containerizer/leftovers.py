"""Containers an earlier agent process left that nobody takes over any more.

Found by their meta dirs and by the cgroups under the prefix (a launch may
have died between the two); removed task first, then supervisor: still
alive, the supervisor reaps the task and leaves, while killed first it would
leave the task a zombie of whatever adopts it. Sandboxes stay for GC.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import structlog

from corral.slave.containerizer import reattach, stopping, supervision
from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.isolators.userns import UserNamespaceIsolator

log = structlog.get_logger(__name__)


def find(work_dir: Path, cgroups: CgroupBackend, prefix: str) -> set[str]:
    """Ids of every container with a meta dir in ``work_dir`` or a cgroup under ``prefix``."""
    found: set[str] = set()
    containers = work_dir / "containers"
    if containers.is_dir():
        found |= {d.name for d in containers.iterdir() if d.is_dir()}
    for prefix_dir in cgroups.dirs(prefix):
        if prefix_dir.is_dir():
            found |= {d.name for d in prefix_dir.iterdir() if d.is_dir()}
    return found


async def remove_all(
    cgroups: CgroupBackend, prefix: str, work_dir: Path, ids: list[str], userns: UserNamespaceIsolator
) -> None:
    """``remove`` each of ``ids``, at once."""
    containers = work_dir / "containers"
    await asyncio.gather(*(remove(cgroups, f"{prefix}/{i}", containers / i, userns) for i in ids))


def remove_prefix_dirs(cgroups: CgroupBackend, prefix: str) -> None:
    """Best effort: the prefix directories an earlier agent made (empty by now)."""
    for prefix_dir in cgroups.dirs(prefix):
        with contextlib.suppress(OSError):
            prefix_dir.rmdir()


async def remove(cgroups: CgroupBackend, cgroup: str, meta_dir: Path, userns: UserNamespaceIsolator) -> None:
    """Kill the container's processes, end its supervisor, free its ids, remove its records."""
    pidfd = None
    with contextlib.suppress(reattach.RecordError):
        record = reattach.read_record(meta_dir)
        if record is not None:
            pidfd = reattach.open_process(record.supervisor_pid, record.supervisor_start)
    await stopping.discard(cgroups, cgroup)
    if pidfd is not None:
        await supervision.end_supervisor(pidfd)
    # Only now that no process of it is left may another container get its ids.
    userns.release_leftover(meta_dir)
    shutil.rmtree(meta_dir, ignore_errors=True)
    log.info("container.leftover_removed", container_id=meta_dir.name)
