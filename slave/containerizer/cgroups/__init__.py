"""cgroup backends: one interface, a v1 and a v2 implementation, and a host probe."""

from corral.slave.containerizer.cgroups.base import CgroupBackend, CgroupLimits, CgroupStats
from corral.slave.containerizer.cgroups.probe import probe
from corral.slave.containerizer.cgroups.v1 import V1Backend
from corral.slave.containerizer.cgroups.v2 import V2Backend

__all__ = ["CgroupBackend", "CgroupLimits", "CgroupStats", "V1Backend", "V2Backend", "probe"]
