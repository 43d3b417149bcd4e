"""The isolator seam: one concern of a container each, with Mesos' lifecycle.

As Mesos' isolators (``src/slave/containerizer/mesos/isolator.hpp``): the
containerizer composes a list of them and calls, for each container,
``prepare`` before the launch (what the isolator adds to it), ``watch`` while
it runs (a limitation ends it), ``usage`` when asked, ``cleanup`` when it is
destroyed, and ``recover`` for one an earlier agent launched. Every method has
a no-op default, so an isolator overrides only what it needs; ``cleanup`` must
be idempotent. Kernel work that must happen inside the container (mounts,
the seccomp filter) is done by the launcher from what ``prepare`` returned:
an isolator itself never forks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.model import ContainerConfig, Limitation, Termination


@dataclass(frozen=True)
class Prepared:
    """What isolators add to a launch; each field belongs to one isolator."""

    seccomp: bytes = b""  # a BPF program (seccomp isolator)
    device_rules: tuple[str, ...] | None = None  # devices cgroup allow rules (devices isolator)

    def merge(self, other: Prepared) -> Prepared:
        return Prepared(
            seccomp=other.seccomp or self.seccomp,
            device_rules=other.device_rules if other.device_rules is not None else self.device_rules,
        )


@dataclass(frozen=True)
class Watched:
    """A running container as an isolator's ``watch`` sees it."""

    config: ContainerConfig
    meta_dir: Path
    #: resolves when the task has ended (never cancel it)
    done: asyncio.Future[Termination] = field(compare=False)

    @property
    def container_id(self) -> str:
        return self.config.container_id


class Isolator:
    """No-op lifecycle; subclasses refuse early (ContainerError with a sentence)
    in ``prepare`` when the host or the request cannot be supported."""

    name: ClassVar[str] = "isolator"

    def prepare(self, config: ContainerConfig) -> Prepared:
        return Prepared()

    async def watch(self, container: Watched) -> Limitation | None:
        """Return a limitation the container ran into (it is then killed), or
        None when there is nothing (more) to watch. Cancelled at destroy."""
        return None

    def watches(self, config: ContainerConfig) -> bool:
        """Whether ``watch`` is worth a task for this container."""
        return False

    def usage(self, container_id: str) -> dict[str, int]:
        return {}

    def recover(self, config: ContainerConfig) -> None:
        """Take on a container an earlier agent process launched."""

    def cleanup(self, container_id: str) -> None:
        """Forget the container; idempotent."""
