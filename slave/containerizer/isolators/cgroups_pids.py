"""The pids controller: how many processes and threads a container may have.

Forks beyond ``pids.max`` fail with EAGAIN inside the task; ``pids.events``
counts them, and the terminal status reports them (forensics.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.isolator import Isolator, Prepared, Running
from corral.slave.containerizer.model import ContainerConfig, Usage


class CgroupsPidsIsolator(Isolator):
    name: ClassVar[str] = "cgroups/pids"

    def __init__(self, cgroups: CgroupBackend) -> None:
        self.cgroups = cgroups

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        return Prepared(pids_max=config.pids_max)

    def usage(self, container: Running, usage: Usage) -> Usage:
        pids = self.cgroups.pids_stats(container.cgroup)
        return replace(usage, pids=pids.current, pids_limit=pids.limit)
