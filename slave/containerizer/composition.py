"""The isolators a containerizer composes, in order, and what they add up to.

As Mesos' MesosContainerizer: every lifecycle call goes to each isolator in
composition order (``cleanup`` in reverse), and the :class:`Prepared` pieces
merge into one launch. The order matters only in ``prepare``: the pure
refusals first, so that nothing is made for a launch that is refused, then
the isolators that make directories (rootfs) and claim ids (userns).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from corral.slave.containerizer import launcher
from corral.slave.containerizer.cgroups.base import CgroupBackend, CgroupLimits
from corral.slave.containerizer.errors import CgroupError, ContainerError
from corral.slave.containerizer.isolation import launch_spec
from corral.slave.containerizer.isolator import Isolator, Prepared, Running
from corral.slave.containerizer.isolators.cgroups_cpu import CgroupsCpuIsolator
from corral.slave.containerizer.isolators.cgroups_devices import CgroupsDevicesIsolator
from corral.slave.containerizer.isolators.cgroups_freezer import CgroupsFreezerIsolator
from corral.slave.containerizer.isolators.cgroups_memory import CgroupsMemoryIsolator
from corral.slave.containerizer.isolators.cgroups_pids import CgroupsPidsIsolator
from corral.slave.containerizer.isolators.disk import DiskIsolator
from corral.slave.containerizer.isolators.namespaces import NamespacesIsolator
from corral.slave.containerizer.isolators.rootfs import RootfsIsolator
from corral.slave.containerizer.isolators.seccomp import SeccompIsolator
from corral.slave.containerizer.isolators.userns import UserNamespaceIsolator
from corral.slave.containerizer.isolators.volumes import VolumesIsolator
from corral.slave.containerizer.model import ContainerConfig, Usage

log = structlog.get_logger(__name__)


class Isolators:
    """The default composition; the freezer, user namespace and disk isolators
    are also reachable by name for the calls only they answer (pause, ids,
    the disk interval)."""

    def __init__(
        self,
        cgroups: CgroupBackend,
        *,
        disk_watch_interval_s: float,
        seccomp_profiles: Mapping[str, Path] | None,
        userns: UserNamespaceIsolator | None,
    ) -> None:
        self.cgroups = cgroups
        self.disk = DiskIsolator(disk_watch_interval_s)
        self.freezer = CgroupsFreezerIsolator(cgroups)
        self.userns = userns if userns is not None else UserNamespaceIsolator()
        self.all: tuple[Isolator, ...] = (
            NamespacesIsolator(),
            SeccompIsolator(seccomp_profiles),
            CgroupsCpuIsolator(cgroups),
            CgroupsMemoryIsolator(cgroups),
            CgroupsPidsIsolator(cgroups),
            CgroupsDevicesIsolator(),
            self.freezer,
            RootfsIsolator(),
            VolumesIsolator(),
            self.userns,
            self.disk,
        )

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        """Every isolator's ``prepare``, merged; on a refusal the ones before it are undone."""
        prepared = Prepared()
        done: list[Isolator] = []
        try:
            for isolator in self.all:
                prepared = prepared.merge(isolator.prepare(config, meta_dir))
                done.append(isolator)
        except ContainerError:
            self.cleanup(config.container_id, done)
            raise
        return prepared

    def launch(
        self, config: ContainerConfig, meta_dir: Path, cgroup: str
    ) -> tuple[Prepared, launcher.LaunchSpec]:
        """``prepare``, then the cgroup the controller isolators filled in, then
        the launcher's spec; what was made is undone if any step fails."""
        try:
            prepared = self.prepare(config, meta_dir)
        except ContainerError:
            # The meta dir was the rootfs isolator's first step (the sandbox stays).
            shutil.rmtree(meta_dir, ignore_errors=True)
            raise
        try:
            join = self.cgroups.create(cgroup, cgroup_limits(prepared))
        except (CgroupError, ContainerError):
            self.cleanup(config.container_id)
            raise
        version, mounts = self.cgroups.version, self.cgroups.task_mounts()
        return prepared, launch_spec(config, join, meta_dir, prepared, version, mounts)

    def cleanup(self, container_id: str, isolators: Sequence[Isolator] | None = None) -> None:
        """``cleanup`` in reverse order; a failure is logged, and the others still run."""
        for isolator in reversed(self.all if isolators is None else isolators):
            try:
                isolator.cleanup(container_id)
            except (OSError, ContainerError) as e:
                log.warning(
                    "container.isolator_cleanup_failed",
                    container_id=container_id,
                    isolator=isolator.name,
                    error=str(e),
                )

    def isolate(self, container: Running, pid: int) -> None:
        for isolator in self.all:
            isolator.isolate(container, pid)

    def recover(self, container: Running) -> None:
        for isolator in self.all:
            isolator.recover(container)

    def usage(self, container: Running, state: str) -> Usage:
        usage = Usage(cpu_time_s=0.0, mem_bytes=0, mem_peak_bytes=0, pids=0, state=state)
        for isolator in self.all:
            usage = isolator.usage(container, usage)
        return usage

    def close(self) -> None:
        for isolator in self.all:
            isolator.close()


def cgroup_limits(prepared: Prepared) -> CgroupLimits:
    """The cgroup limits the controller isolators asked for."""
    if prepared.cpu_shares is None or prepared.mem_bytes is None:
        raise ContainerError("the cpu and memory isolators are not composed: no cgroup limits")
    return CgroupLimits(
        cpu_shares=prepared.cpu_shares,
        mem_bytes=prepared.mem_bytes,
        cpu_quota_us=prepared.cpu_quota_us,
        pids_max=prepared.pids_max,
        devices=prepared.device_rules,
    )
