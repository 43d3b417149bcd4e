"""Garbage collection of finished tasks' sandboxes: a pure policy and a small shell.

A finished task's sandbox stays for ``corral logs`` until it is older than the
allowed age, which shrinks as the work disk fills. Mesos' rule
(``slave/gc.cpp``, flags ``--gc_delay`` and ``--gc_disk_headroom``)::

    max_age = gc_delay * max(0, 1 - gc_disk_headroom - disk_usage)

so with the default one-week delay and 10% headroom a half-full disk keeps
sandboxes for 2.8 days and a disk 90% full keeps none. The policy is a pure
function of the finished tasks, the time and the disk usage (:func:`due`,
:func:`collectable`, which the agent core calls); the shell measures the disk
(:func:`disk_usage`) and removes what the policy names (:func:`remove`,
:func:`empty_trash`, which the agent runtime calls).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from corral.slave.checkpoints import Checkpoints, CheckpointWriteError

TaskKey = tuple[str, str]  # (framework_id, task_id)

log = structlog.get_logger(__name__)

#: How often the agent looks (seconds); the policy is cheap, the disk measure a statvfs.
GC_INTERVAL_S = 60.0
#: Removals per round, so a long-due backlog does not stall the agent's loop.
MAX_REMOVALS_PER_ROUND = 200


@dataclass(frozen=True)
class Finished:
    """A finished task's sandbox: its container id and when its task ended."""

    container_id: str
    ended_at: float


def max_age_s(gc_delay_s: float, disk_usage: float, headroom: float) -> float:
    """How old a finished sandbox may get at this disk usage (0..1)."""
    return gc_delay_s * max(0.0, 1.0 - headroom - disk_usage)


def due(
    finished: Sequence[Finished], now: float, gc_delay_s: float, disk_usage: float, headroom: float
) -> list[str]:
    """Container ids whose sandboxes should go now, oldest first."""
    limit = max_age_s(gc_delay_s, disk_usage, headroom)
    old = [f for f in finished if now - f.ended_at >= limit]
    return [f.container_id for f in sorted(old, key=lambda f: f.ended_at)]


def disk_usage(path: Path) -> float:
    """Used fraction of the filesystem holding ``path``."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return 0.0 if total == 0 else 1.0 - (st.f_bavail * st.f_frsize) / total


def collectable(
    completed: Mapping[TaskKey, Path],
    completed_at: Mapping[TaskKey, float],
    now: float,
    gc_delay_s: float,
    disk_usage: float,
    headroom: float,
) -> list[TaskKey]:
    """The finished tasks (keys of ``completed``, their sandboxes) to forget
    now, at most MAX_REMOVALS_PER_ROUND; a task with no end time counts as
    ended ``now``."""
    finished = [Finished(path.name, completed_at.get(key, now)) for key, path in completed.items()]
    names = set(due(finished, now, gc_delay_s, disk_usage, headroom)[:MAX_REMOVALS_PER_ROUND])
    return [key for key, path in completed.items() if path.name in names]


def remove(sandbox: Path, work_dir: Path, checkpoints: Checkpoints) -> CheckpointWriteError | None:
    """The shell: forget a finished task's checkpoint and move its sandbox to
    the trash at once (a rename); :func:`empty_trash` deletes it later, off the
    event loop (a big sandbox takes seconds to delete). Returns the checkpoint
    write that failed, if one did (the journal still names the task then, and
    the next agent run collects it again); the sandbox goes either way."""
    failed = None
    try:
        checkpoints.remove_task(sandbox.name)
    except CheckpointWriteError as e:
        failed = e
    trash = trash_dir(work_dir)
    try:
        trash.mkdir(mode=0o700, exist_ok=True)
        sandbox.rename(trash / f"{sandbox.name}-{uuid.uuid4().hex[:8]}")
    except FileNotFoundError:
        pass  # never created, or removed already
    except OSError as e:
        log.warning("sandboxes.trash_failed", sandbox=str(sandbox), error=str(e))
        shutil.rmtree(sandbox, ignore_errors=True)
    return failed


def trash_dir(work_dir: Path) -> Path:
    """Where removed sandboxes wait to be deleted (the same filesystem: a rename)."""
    return work_dir / "trash"


def empty_trash(work_dir: Path) -> int:
    """Delete what :func:`remove` moved to the trash; returns how many. Blocking:
    run it in a thread. Also clears what an agent killed mid-delete left."""
    trash = trash_dir(work_dir)
    try:
        names = os.listdir(trash)
    except FileNotFoundError:
        return 0
    for name in names:
        shutil.rmtree(trash / name, ignore_errors=True)
    return len(names)
