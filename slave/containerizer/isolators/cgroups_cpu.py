"""The cpu controller: a container's CPU weight and, when asked, its hard cap.

As Mesos' ``cgroups/cpu`` subsystem: shares always (1024 per CPU, the
kernel's convention), a CFS quota only with ``cpu_hard_cap``; usage is the
cpuacct (v1) or ``cpu.stat`` (v2) time.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.cgroups.base import CgroupBackend, CgroupLimits
from corral.slave.containerizer.isolator import Isolator, Prepared, Running
from corral.slave.containerizer.model import ContainerConfig, Usage


class CgroupsCpuIsolator(Isolator):
    name: ClassVar[str] = "cgroups/cpu"

    def __init__(self, cgroups: CgroupBackend) -> None:
        self.cgroups = cgroups

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        # The arithmetic stays in one place (CgroupLimits.for_task), shared with
        # the backends' tests.
        limits = CgroupLimits.for_task(config.cpus_milli, 1, config.cpu_hard_cap, None)
        return Prepared(cpu_shares=limits.cpu_shares, cpu_quota_us=limits.cpu_quota_us)

    def usage(self, container: Running, usage: Usage) -> Usage:
        return replace(usage, cpu_time_s=self.cgroups.cpu_time_ns(container.cgroup) / 1e9)
