"""The volumes isolator: host paths bound into a container and tmpfs mounts.

Which host paths a task may name is the agent's policy (``Volume.allowed``);
here each volume is checked against this host (a bind source must exist) and
translated into a mount the launcher makes (rootfs.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer import overlay
from corral.slave.containerizer.isolator import Isolator, Prepared
from corral.slave.containerizer.model import ContainerConfig


class VolumesIsolator(Isolator):
    name: ClassVar[str] = "filesystem/volumes"

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        image = config.rootfs is not None
        return Prepared(mounts=overlay.volume_mounts(config.volumes, config.sandbox, image))
