"""The rootfs isolator: a container's directories and, with an image, its root.

Makes the meta dir (records, overlay layers) and the sandbox, and for an image
the overlay's upper and work directories (overlay.py); the launcher mounts
them in the container's mount namespace (rootfs.py). ``cleanup`` removes the
overlay; the meta dir itself is the containerizer's, the sandbox the agent's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer import overlay
from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.isolation import image_etc_files
from corral.slave.containerizer.isolator import Isolator, Prepared
from corral.slave.containerizer.model import ContainerConfig
from corral.slave.work_dir import PRIVATE, ensure_dir


class RootfsIsolator(Isolator):
    name: ClassVar[str] = "filesystem/rootfs"

    def __init__(self) -> None:
        self._meta_dirs: dict[str, Path] = {}

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        try:
            ensure_dir(meta_dir.parent, PRIVATE)  # overlay upper dirs: see slave/work_dir.py
            meta_dir.mkdir(parents=True, exist_ok=True)
            (meta_dir / "exit_status.json").unlink(missing_ok=True)
            config.sandbox.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ContainerError(
                f"cannot create the directories of container {config.container_id!r}: {e}"
            ) from e
        self._meta_dirs[config.container_id] = meta_dir
        etc = image_etc_files(config.isolation, config.container_id) if config.rootfs is not None else ()
        spec, cwd = overlay.make_root(config.rootfs, config.sandbox, config.workdir, meta_dir, etc)
        return Prepared(rootfs=spec, cwd=cwd)

    def cleanup(self, container_id: str) -> None:
        meta_dir = self._meta_dirs.pop(container_id, None)
        if meta_dir is not None:
            shutil.rmtree(meta_dir / "overlay", ignore_errors=True)
