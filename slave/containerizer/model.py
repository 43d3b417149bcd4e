"""Values exchanged between the agent and the containerizer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.slave.containerizer.errors import ContainerError

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclass(frozen=True)
class ContainerConfig:
    """What to run and within which limits.

    ``argv`` is exec'd directly (the agent passes ``("/bin/sh", "-c", cmd)`` for
    shell commands); a bare ``argv[0]`` is looked up in ``env["PATH"]``.
    """

    container_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    sandbox: Path
    cpus_milli: int
    mem_bytes: int
    cpu_hard_cap: bool = False
    pids_max: int | None = None

    def validate(self) -> None:
        """Raise ContainerError naming the first bad field."""
        if not _ID_RE.fullmatch(self.container_id) or self.container_id in {".", ".."}:
            raise ContainerError(
                f"container_id: must be 1-200 characters of [A-Za-z0-9._-], got {self.container_id!r}"
            )
        if not self.argv or not self.argv[0]:
            raise ContainerError(f"argv: must name a program, got {self.argv!r}")
        if self.cpus_milli <= 0:
            raise ContainerError(f"cpus_milli: must be > 0, got {self.cpus_milli}")
        if self.mem_bytes <= 0:
            raise ContainerError(f"mem_bytes: must be > 0, got {self.mem_bytes}")
        if self.pids_max is not None and self.pids_max <= 0:
            raise ContainerError(f"pids_max: must be > 0 or None, got {self.pids_max}")
        if any("\0" in a for a in self.argv) or any(
            "\0" in k or "=" in k or "\0" in v for k, v in self.env.items()
        ):
            raise ContainerError("argv/env: must not contain NUL bytes or '=' in names")


@dataclass(frozen=True)
class Limitation:
    """A resource limit the container ran into (Mesos' ContainerLimitation)."""

    kind: str  # "memory" | "pids" | "disk"
    message: str
    limit: int
    peak: int


@dataclass(frozen=True)
class Termination:
    """How a task ended, with the forensics a user needs to learn why."""

    exit_code: int | None
    signal: int | None
    limitation: Limitation | None
    killed: bool
    stderr_tail: str
    # One sentence for the task's status message, e.g. "killed by signal 9 (SIGKILL)".
    message: str = ""


@dataclass(frozen=True)
class Usage:
    cpu_time_s: float
    mem_bytes: int
    mem_peak_bytes: int
    pids: int
