"""The memory controller: a container's memory limit (no swap beyond it).

The kernel enforces it (OOM kill; v2 kills the whole group); the backends
set ``memory.limit_in_bytes``/``memsw`` (v1) or ``memory.max`` and
``memory.swap.max`` (v2). That the task was OOM-killed is read when it ends
(forensics.py), from the same files ``usage`` reads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.isolator import Isolator, Prepared, Running
from corral.slave.containerizer.model import ContainerConfig, Usage


class CgroupsMemoryIsolator(Isolator):
    name: ClassVar[str] = "cgroups/memory"

    def __init__(self, cgroups: CgroupBackend) -> None:
        self.cgroups = cgroups

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        return Prepared(mem_bytes=config.mem_bytes)

    def usage(self, container: Running, usage: Usage) -> Usage:
        memory = self.cgroups.memory_stats(container.cgroup)
        return replace(
            usage, mem_bytes=memory.current, mem_peak_bytes=memory.peak, mem_limit_bytes=memory.limit
        )
