"""The one interface both cgroup versions implement.

A cgroup is named by a relative path (``"<prefix>/<container-id>"``) under each
controller's mount; backends take their roots as arguments so they can be tested
against a directory tree (as youki does).
"""

from __future__ import annotations

import contextlib
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupLimits:
    cpu_shares: int  # v1 units (2..262144); v2 backends map them to cpu.weight
    mem_bytes: int
    cpu_quota_us: int | None = None  # per CPU_PERIOD_US; None means no hard cap
    pids_max: int | None = None
    #: device allow rules beyond the minimal set (devices.py); None: no device
    #: control at all (the devices controller is left as the parent has it)
    devices: tuple[str, ...] | None = None

    @classmethod
    def for_task(
        cls,
        cpus_milli: int,
        mem_bytes: int,
        cpu_hard_cap: bool,
        pids_max: int | None,
        devices: tuple[str, ...] | None = None,
    ) -> CgroupLimits:
        # 1024 shares per CPU is the kernel's and Mesos' convention.
        shares = max(2, min(262_144, cpus_milli * 1024 // 1000))
        quota = max(1000, cpus_milli * CPU_PERIOD_US // 1000) if cpu_hard_cap else None
        return cls(
            cpu_shares=shares, mem_bytes=mem_bytes, cpu_quota_us=quota, pids_max=pids_max, devices=devices
        )


@dataclass(frozen=True)
class CgroupStats:
    cpu_time_ns: int
    mem_bytes: int
    mem_peak_bytes: int
    mem_limit_bytes: int
    oom_kills: int
    pids: int
    pids_limit: int  # 0 when unlimited
    pids_max_events: int  # forks refused because pids.max was reached


@dataclass(frozen=True)
class MemoryStats:
    current: int
    peak: int
    limit: int
    oom_kills: int


@dataclass(frozen=True)
class PidsStats:
    current: int
    limit: int  # 0 when unlimited
    max_events: int  # forks refused because pids.max was reached


class CgroupBackend(ABC):
    """Creates, limits, inspects, signals and removes the cgroups of containers.

    ``remove`` and ``remove_prefix`` must be idempotent.
    """

    version: ClassVar[str]

    @abstractmethod
    def prepare_prefix(self, prefix: str) -> None:
        """Create the parent of all containers (and enable controllers for it)."""

    @abstractmethod
    def remove_prefix(self, prefix: str) -> None:
        """Best effort: remove the prefix directories that prepare_prefix created."""

    @abstractmethod
    def create(self, path: str, limits: CgroupLimits) -> tuple[Path, ...]:
        """Create the container's cgroups with limits; return the cgroup.procs files to join."""

    @abstractmethod
    def task_mounts(self) -> tuple[tuple[bytes, bytes, bytes], ...]:
        """What a container mounts read-only under its /sys/fs/cgroup, in its
        cgroup namespace: (directory or b"" for the unified root, fstype, options)."""

    @abstractmethod
    def dirs(self, path: str) -> tuple[Path, ...]:
        """The container's cgroup directories (for checkpoints)."""

    @abstractmethod
    def procs(self, path: str) -> set[int]:
        """Pids of every process in the container's cgroup."""

    @abstractmethod
    def kill_all(self, path: str) -> None:
        """SIGKILL every process in the cgroup, without racing forks where the kernel allows."""

    # One reader per controller, so that each controller's isolator reads only
    # its own files (isolators/cgroups_*.py); ``stats`` is all of them at once.
    @abstractmethod
    def cpu_time_ns(self, path: str) -> int: ...

    @abstractmethod
    def memory_stats(self, path: str) -> MemoryStats: ...

    @abstractmethod
    def pids_stats(self, path: str) -> PidsStats: ...

    def stats(self, path: str) -> CgroupStats:
        memory = self.memory_stats(path)
        pids = self.pids_stats(path)
        return CgroupStats(
            cpu_time_ns=self.cpu_time_ns(path),
            mem_bytes=memory.current,
            mem_peak_bytes=memory.peak,
            mem_limit_bytes=memory.limit,
            oom_kills=memory.oom_kills,
            pids=pids.current,
            pids_limit=pids.limit,
            pids_max_events=pids.max_events,
        )

    @abstractmethod
    def set_frozen(self, path: str, frozen: bool) -> None:
        """Ask the kernel to freeze (or thaw) every process of the cgroup; see ``frozen``.

        Raises CgroupError when the host cannot freeze (v1 without the freezer).
        """

    @abstractmethod
    def frozen(self, path: str) -> bool:
        """True once every process of the cgroup is frozen (freezing takes a moment)."""

    @abstractmethod
    def remove(self, path: str) -> bool:
        """Remove the container's cgroups: True when gone, False while still busy."""

    def signal_all(self, path: str, sig: int) -> set[int]:
        """Send ``sig`` to each process in the cgroup; return the pids signalled."""
        pids = self.procs(path)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids


def kill_pids(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def signal_if_member(pid: int, procs: Callable[[str], set[int]], cgroup: str, sig: int) -> None:
    """Signal ``pid`` only if it is still the process we read from the cgroup.

    A pid read from cgroup.procs may exit and be reused by an unrelated
    process before we signal it. A pidfd pins the process; checking the
    cgroup again after opening it proves it is still ours.
    """
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        if pid in procs(cgroup):
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(fd, sig)
    finally:
        os.close(fd)
