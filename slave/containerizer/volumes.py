"""Volumes: host paths bind-mounted into a container, and tmpfs mounts.

A volume's ``container_path`` is absolute (in the image's root, or on the
host's tree for a task without an image, where it must already exist) or
relative to the sandbox (created there). The mounts themselves are made by
the container's init (rootfs.py); this module checks and translates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.rootfs import MountSpec

DEFAULT_TMPFS_BYTES = 64 << 20
MAX_TMPFS_BYTES = 1 << 40
# Mounted by the containerizer itself; a volume there would hide them.
_RESERVED = ("/proc", "/dev", "/sys")


@dataclass(frozen=True)
class Volume:
    """A bind mount of ``host_path``, or a tmpfs of ``tmpfs_size_bytes`` when it is empty."""

    container_path: str
    host_path: str = ""
    read_only: bool = False
    tmpfs_size_bytes: int = 0

    @property
    def kind(self) -> str:
        return "bind" if self.host_path else "tmpfs"

    def validate(self, where: str) -> None:
        """Raise ContainerError naming the field (``where`` is e.g. ``volumes[0]``)."""
        path = self.container_path
        if not path or "\0" in path:
            raise ContainerError(f"{where}.container_path: must be a non-empty path without NUL")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ContainerError(f"{where}.container_path: must not contain '..', got {path!r}")
        if not parts:
            raise ContainerError(f"{where}.container_path: must not be the root, got {path!r}")
        canonical = "/" + "/".join(parts)
        if path.startswith("/") and any(canonical == r or canonical.startswith(r + "/") for r in _RESERVED):
            raise ContainerError(f"{where}.container_path: {canonical} is managed by the containerizer")
        if self.host_path:
            if not self.host_path.startswith("/") or "\0" in self.host_path:
                raise ContainerError(f"{where}.host_path: must be an absolute path, got {self.host_path!r}")
            if self.tmpfs_size_bytes:
                raise ContainerError(f"{where}.tmpfs_size_bytes: only for tmpfs volumes (no host_path)")
        elif not 0 <= self.tmpfs_size_bytes <= MAX_TMPFS_BYTES:
            raise ContainerError(
                f"{where}.tmpfs_size_bytes: must be 0 (64 MiB) .. {MAX_TMPFS_BYTES}, "
                f"got {self.tmpfs_size_bytes}"
            )

    def allowed(self, where: str, allowed_host_paths: tuple[Path, ...]) -> Volume:
        """This volume with ``host_path`` resolved to its real path, if that is under one of
        ``allowed_host_paths`` (the agent's ``--allowed-host-paths``); ContainerError otherwise.

        tmpfs volumes need no permission. The launcher binds the real path and
        refuses it if it is no longer its own real path (a symlink swapped in).
        """
        if not self.host_path:
            return self
        if not allowed_host_paths:
            raise ContainerError(
                f"{where}.host_path: {self.host_path}: this agent allows no host paths "
                f"(corral agent --allowed-host-paths PATH[,PATH])"
            )
        try:
            real = os.path.realpath(self.host_path, strict=True)
        except OSError as e:
            raise ContainerError(
                f"{where}.host_path: {self.host_path} cannot be used on this agent: {e.strerror}"
            ) from None
        for prefix in allowed_host_paths:
            if Path(real).is_relative_to(os.path.realpath(prefix)):
                return replace(self, host_path=real)
        raise ContainerError(
            f"{where}.host_path: {self.host_path} (really {real}) is not under this agent's "
            f"--allowed-host-paths ({', '.join(str(p) for p in allowed_host_paths)})"
        )

    def mount_spec(self, where: str, sandbox: Path, sandbox_target: str, image: bool) -> MountSpec:
        """The launcher's mount; raises ContainerError if a bind source is missing on this host."""
        if self.host_path:
            try:
                os.stat(self.host_path)
            except OSError as e:
                raise ContainerError(
                    f"{where}.host_path: {self.host_path} cannot be used on this agent: {e.strerror}"
                ) from None
        if self.container_path.startswith("/"):
            target = self.container_path
        else:
            target = os.path.join(sandbox_target if image else str(sandbox), self.container_path)
        return MountSpec(
            kind=self.kind,
            target=os.fsencode(os.path.normpath(target)),
            source=os.fsencode(os.path.realpath(self.host_path)) if self.host_path else b"",
            read_only=self.read_only,
            size_bytes=self.tmpfs_size_bytes or DEFAULT_TMPFS_BYTES,
        )
