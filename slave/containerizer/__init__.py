"""Runs a task's command as a cgroup-limited process watched by its own supervisor."""

from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.containerizer import Containerizer
from corral.slave.containerizer.errors import CgroupError, ContainerError
from corral.slave.containerizer.model import ContainerConfig, Isolation, Limitation, Termination, Usage

__all__ = [
    "CgroupBackend",
    "CgroupError",
    "ContainerConfig",
    "ContainerError",
    "Containerizer",
    "Isolation",
    "Limitation",
    "Termination",
    "Usage",
]
