"""Find the supervisors an earlier agent process started, safely against pid reuse.

A pid alone names a process only while it lives: once the supervisor exits and
is reaped, the kernel may give its pid to anything. A process is identified by
its pid *and* its start time (field 22 of ``/proc/PID/stat``, in clock ticks
since boot), recorded at launch in ``container.json``. Recovery opens a pidfd
first, which pins whichever process holds the pid now, and only then compares
the start time: a match means the pidfd names our supervisor, and it stays
valid (readable once the supervisor exits) however the pid is reused later.
"""

from __future__ import annotations

import json
import os
import select
from dataclasses import dataclass
from pathlib import Path

from corral.slave.containerizer import checkpoint


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall; this list starts at field 3
    except (IndexError, ValueError):
        return None


def alive(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` still runs (a pidfd polls readable once it exits)."""
    poller = select.poll()  # not select(): agents hold well over 1,024 fds
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def start_time_of(pid: int, pidfd: int) -> int | None:
    """The start time of the process ``pidfd`` names (whose pid is ``pid``), None once it has exited."""
    value = start_time(pid)
    # Read while it still lived: the stat was its own, not a successor's.
    return value if value is not None and alive(pidfd) else None


def open_process(pid: int, expected_start: int | None) -> int | None:
    """A pidfd of ``pid`` if it is still the process that started at ``expected_start``."""
    if pid <= 0 or expected_start is None:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start_time(pid) != expected_start or not alive(fd):
        os.close(fd)
        return None
    return fd


@dataclass(frozen=True)
class ContainerRecord:
    """``container.json``: who supervises a container and where its pieces are."""

    container_id: str
    supervisor_pid: int
    supervisor_start: int | None
    task_pid: int
    sandbox: Path


def write_record(
    meta_dir: Path, record: ContainerRecord, cgroup_version: str, cgroups: tuple[Path, ...]
) -> None:
    """Write ``container.json`` (atomically; see checkpoint.py)."""
    checkpoint.write_json(
        meta_dir / "container.json",
        {
            "container_id": record.container_id,
            "supervisor_pid": record.supervisor_pid,
            "supervisor_start": record.supervisor_start,
            "task_pid": record.task_pid,
            "cgroup_version": cgroup_version,
            "cgroups": [str(d) for d in cgroups],
            "sandbox": str(record.sandbox),
        },
    )


class RecordError(ValueError):
    """``container.json`` exists but cannot be trusted."""


def read_record(meta_dir: Path) -> ContainerRecord | None:
    """The record in ``meta_dir``; None if the launch never wrote one. Raises RecordError."""
    path = meta_dir / "container.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RecordError(f"not valid JSON ({e})") from None
    try:
        start = data.get("supervisor_start")
        record = ContainerRecord(
            container_id=str(data["container_id"]),
            supervisor_pid=int(data["supervisor_pid"]),
            supervisor_start=None if start is None else int(start),
            task_pid=int(data.get("task_pid", 0)),
            sandbox=Path(str(data["sandbox"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RecordError(f"missing or malformed field ({e})") from None
    if record.container_id != meta_dir.name:
        raise RecordError(f"container_id {record.container_id!r} is not its folder's name")
    return record


@dataclass(frozen=True)
class Attached:
    """What recovery finds of a container: its record (None if the launch
    never wrote one), a pidfd of its supervisor if that still runs, and
    whether its exit status is on disk."""

    record: ContainerRecord | None
    pidfd: int | None
    ended: bool


def attach(meta_dir: Path, record: ContainerRecord | None, rebooted: bool) -> Attached:
    """Pin the supervisor ``record`` (read from ``meta_dir``) names, if it still
    runs. After a reboot no pid is probed: one recorded then may name anything now."""
    pidfd = (
        None if record is None or rebooted else open_process(record.supervisor_pid, record.supervisor_start)
    )
    return Attached(record, pidfd, (meta_dir / "exit_status.json").exists())
