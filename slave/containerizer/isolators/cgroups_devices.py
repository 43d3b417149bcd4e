"""The devices controller's isolator: the device allow rules of a container's
cgroup (cgroups/devices.py applies them on v1; on v2 CAP_MKNOD is dropped
instead, see isolation.py and docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.cgroups import devices
from corral.slave.containerizer.isolator import Isolator, Prepared
from corral.slave.containerizer.model import ContainerConfig


class CgroupsDevicesIsolator(Isolator):
    name: ClassVar[str] = "cgroups/devices"

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        iso = config.isolation
        # Device control comes with the minimal /dev, i.e. with a mount
        # namespace; Isolation.none() keeps the old, uncontrolled behaviour.
        if not iso.mount:
            return Prepared()
        return Prepared(device_rules=tuple(devices.rule_for(d) for d in iso.devices))
