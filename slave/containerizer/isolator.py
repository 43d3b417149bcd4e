"""The isolator seam: one concern of a container each, with Mesos' lifecycle.

As Mesos' isolators (``src/slave/containerizer/mesos/isolator.hpp``): the
containerizer composes a list of them (containerizer.py) and calls, for each
container,

* ``prepare`` before the launch: refuse early (ContainerError with a
  sentence) or say what the isolator adds to it, as Mesos' ``prepare``
  returns a ``ContainerLaunchInfo``; the :class:`Prepared` of every isolator
  are merged, in composition order, into what the launcher applies;
* ``isolate`` once the task has exec'd inside its cgroups (the launcher joins
  them itself before exec, so unlike Mesos nothing waits for this call);
* ``watch`` while it runs: a limitation it returns ends the container;
* ``update`` when its resources change; ``usage`` when asked;
* ``cleanup`` when it is destroyed, or when its launch failed after
  ``prepare``: it must be idempotent, and work for a container the isolator
  never prepared;
* ``recover`` for one an earlier agent process launched.

Every method has a no-op default, so an isolator overrides only what it needs.
Kernel work that must happen inside the container (mounts, namespaces, the
seccomp filter, the user namespace switch) is done by the launcher from what
``prepare`` returned: an isolator itself never forks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.model import ContainerConfig, Limitation, Termination, Usage
from corral.slave.containerizer.rootfs import MountSpec, RootfsSpec


@dataclass(frozen=True)
class IdRange:
    """A user namespace's id mapping: container ids 0..size-1 are host ids base..base+size-1."""

    base: int
    size: int


@dataclass(frozen=True)
class Prepared:
    """What isolators add to a launch; each field belongs to one isolator, and
    ``None``/empty means "nothing from me" (a later isolator's value wins)."""

    seccomp: bytes = b""  # a BPF program (seccomp)
    device_rules: tuple[str, ...] | None = None  # devices cgroup allow rules (cgroups_devices)
    cpu_shares: int | None = None  # (cgroups_cpu)
    cpu_quota_us: int | None = None  # (cgroups_cpu); None: no hard cap
    mem_bytes: int | None = None  # (cgroups_memory)
    pids_max: int | None = None  # (cgroups_pids)
    clone_flags: int | None = None  # namespaces the task child unshares (namespaces)
    hostname: bytes | None = None  # its UTS namespace's hostname (namespaces)
    rootfs: RootfsSpec | None = None  # an image to pivot into (rootfs)
    cwd: bytes | None = None  # the working directory (rootfs)
    mounts: tuple[MountSpec, ...] = ()  # volumes (volumes)
    userns: IdRange | None = None  # the container's user namespace (userns)

    def merge(self, other: Prepared) -> Prepared:
        values = {}
        for f in fields(self):
            # Compared with the default, not with falsy: an empty device list
            # (device control, no extra device) differs from None (none at all).
            theirs = getattr(other, f.name)
            values[f.name] = theirs if theirs != f.default else getattr(self, f.name)
        return Prepared(**values)


@dataclass(frozen=True)
class Running:
    """A container as an isolator sees it after ``prepare``."""

    config: ContainerConfig
    meta_dir: Path
    #: the cgroup's relative path (``<prefix>/<container-id>``) in every hierarchy
    cgroup: str
    #: resolves when the task has ended (never cancel it)
    done: asyncio.Future[Termination] = field(compare=False)

    @property
    def container_id(self) -> str:
        return self.config.container_id


#: Mesos' name; the disk isolator's watch takes one
Watched = Running


class Isolator:
    """No-op lifecycle; subclasses refuse early (ContainerError with a sentence)
    in ``prepare`` when the host or the request cannot be supported."""

    name: ClassVar[str] = "isolator"

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        """Refuse, or say what this isolator adds to the launch. Anything made on
        disk goes under ``meta_dir`` (or the sandbox) and is undone by ``cleanup``."""
        return Prepared()

    def isolate(self, container: Running, pid: int) -> None:
        """The task ``pid`` has exec'd inside its cgroups and namespaces."""

    async def watch(self, container: Running) -> Limitation | None:
        """Return a limitation the container ran into (it is then killed), or
        None when there is nothing (more) to watch. Cancelled at destroy."""
        return None

    def watches(self, config: ContainerConfig) -> bool:
        """Whether ``watch`` is worth a task for this container."""
        return False

    def update(self, container: Running, config: ContainerConfig) -> None:
        """The container's resources changed to ``config``'s."""

    def usage(self, container: Running, usage: Usage) -> Usage:
        """``usage`` with this isolator's figures filled in."""
        return usage

    def recover(self, container: Running) -> None:
        """Take on a container an earlier agent process launched (still running)."""

    def cleanup(self, container_id: str) -> None:
        """Forget the container and undo what ``prepare`` made; idempotent."""

    def close(self) -> None:
        """The containerizer is closing (after every container's cleanup)."""
