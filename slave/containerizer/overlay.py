"""An image as a container's root: its layers stacked with overlayfs.

The image's layers (from the image store, read-only and shared) are the lower
directories; each container gets its own upper and work directories under
``<work_dir>/containers/<id>/overlay/``, removed with the container, so
nothing a task writes reaches the image. The overlay itself is mounted by the
container's init in its own mount namespace (rootfs.py): the host never sees
it, and it goes away with the namespace.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.rootfs import MountSpec, RootfsSpec
from corral.slave.containerizer.volumes import Volume

SANDBOX_PATH = "/mnt/sandbox"
# overlayfs takes its options in one page.
_MAX_OPTIONS = 4000


@dataclass(frozen=True)
class Rootfs:
    """An image's layer directories (bottom first) and whether the root is read-only."""

    layers: tuple[Path, ...]
    read_only: bool = False

    def validate(self) -> None:
        if not self.layers:
            raise ContainerError("rootfs.layers: an image needs at least one layer")
        bad = [str(p) for p in self.layers if not p.is_absolute() or any(c in str(p) for c in ":,\0")]
        if bad:
            raise ContainerError(f"rootfs.layers: must be absolute paths without ':' or ',', got {bad[0]!r}")
        size = sum(len(str(p)) + 1 for p in self.layers)
        if size > _MAX_OPTIONS:
            raise ContainerError(f"rootfs.layers: {len(self.layers)} layers are too many for overlayfs")


def prepare(
    rootfs: Rootfs | None,
    volumes: tuple[Volume, ...],
    sandbox: Path,
    workdir: str,
    meta_dir: Path,
    etc_files: tuple[tuple[bytes, bytes], ...] = (),
) -> tuple[RootfsSpec | None, tuple[MountSpec, ...], bytes]:
    """Make the container's overlay directories; return the launcher's root, mounts and cwd.

    Raises ContainerError (naming the volume) when a bind source is missing or
    a layer is gone.
    """
    mounts = volume_mounts(volumes, sandbox, image=rootfs is not None)
    spec, cwd = make_root(rootfs, sandbox, workdir, meta_dir, etc_files)
    return spec, mounts, cwd


def volume_mounts(volumes: tuple[Volume, ...], sandbox: Path, image: bool) -> tuple[MountSpec, ...]:
    """The launcher's mounts for ``volumes``; raises ContainerError naming one whose source is missing."""
    return tuple(v.mount_spec(f"volumes[{i}]", sandbox, SANDBOX_PATH, image) for i, v in enumerate(volumes))


def make_root(
    rootfs: Rootfs | None,
    sandbox: Path,
    workdir: str,
    meta_dir: Path,
    etc_files: tuple[tuple[bytes, bytes], ...] = (),
) -> tuple[RootfsSpec | None, bytes]:
    """Make the overlay directories of an image container; return its root and cwd.

    Raises ContainerError when a layer is gone.
    """
    if rootfs is None:
        return None, os.fsencode(sandbox)
    for i, layer in enumerate(rootfs.layers):
        if not layer.is_dir():
            raise ContainerError(f"rootfs.layers[{i}]: {layer} is missing; import the image again")
    overlay = meta_dir / "overlay"
    try:
        shutil.rmtree(overlay, ignore_errors=True)
        overlay.mkdir(parents=True, mode=0o700)  # no host user reaches the upper dir
        for d in ("upper", "work", "root"):
            (overlay / d).mkdir(parents=True, mode=0o755)
    except OSError as e:
        raise ContainerError(f"cannot create the overlay directories in {overlay}: {e}") from e
    spec = RootfsSpec(
        root=os.fsencode(overlay / "root"),
        lowerdirs=tuple(os.fsencode(p) for p in rootfs.layers),
        upperdir=os.fsencode(overlay / "upper"),
        workdir=os.fsencode(overlay / "work"),
        read_only=rootfs.read_only,
        sandbox=os.fsencode(sandbox),
        sandbox_target=os.fsencode(SANDBOX_PATH),
        etc_files=etc_files,
    )
    return spec, os.fsencode(workdir or SANDBOX_PATH)
