"""The devices isolator: the device allow rules of a container's cgroup
(cgroups/devices.py applies them on v1; on v2 MKNOD is dropped instead)."""

from __future__ import annotations

from typing import ClassVar

from corral.slave.containerizer.cgroups import devices
from corral.slave.containerizer.isolator import Isolator, Prepared
from corral.slave.containerizer.model import ContainerConfig


class DevicesIsolator(Isolator):
    name: ClassVar[str] = "devices"

    def prepare(self, config: ContainerConfig) -> Prepared:
        iso = config.isolation
        # Device control comes with the minimal /dev, i.e. with a mount
        # namespace; Isolation.none() keeps the old, uncontrolled behaviour.
        if not iso.mount:
            return Prepared()
        return Prepared(device_rules=tuple(devices.rule_for(d) for d in iso.devices))
