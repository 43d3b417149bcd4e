"""Ending and freezing a container's processes through its cgroup.

Procedures over the cgroup backend only (they hold no container state): the
containerizer calls them under its per-container lock. Every wait has a
deadline and polls with back-off from ``POLL_MIN_S`` to ``POLL_MAX_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog

from corral.slave.containerizer.cgroups.base import CgroupBackend, signal_if_member
from corral.slave.containerizer.errors import CgroupError, ContainerError

log = structlog.get_logger(__name__)

POLL_MIN_S = 0.002
POLL_MAX_S = 0.05
KILL_TIMEOUT_S = 10.0  # after the grace period, how long SIGKILL may take before we give up
REMOVE_TIMEOUT_S = 5.0
FREEZE_TIMEOUT_S = 5.0
#: polls of a freeze in progress before it is retried from thawed (see freeze)
REFREEZE_EVERY = 10


async def terminate(cgroups: CgroupBackend, cgroup: str, grace_s: float, name: str) -> None:
    """SIGTERM every process of ``cgroup`` (forked later ones too) until they are
    gone or ``grace_s`` passed, then SIGKILL until none is left; raises
    ContainerError naming ``name`` when SIGKILL does not empty it in KILL_TIMEOUT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    signalled: set[int] = set()
    poll = POLL_MIN_S
    while pids := cgroups.procs(cgroup):
        for pid in pids - signalled:
            signal_if_member(pid, cgroups.procs, cgroup, signal.SIGTERM)
        signalled |= pids
        if loop.time() >= deadline:
            break
        await asyncio.sleep(min(poll, max(0.0, deadline - loop.time())))
        poll = min(poll * 2, POLL_MAX_S)
    hard_deadline = loop.time() + KILL_TIMEOUT_S
    poll = POLL_MIN_S
    while pids := cgroups.procs(cgroup):
        if loop.time() >= hard_deadline:
            raise ContainerError(
                f"container {name!r} still has processes {sorted(pids)} {KILL_TIMEOUT_S:.0f} s after SIGKILL"
            )
        cgroups.kill_all(cgroup)
        await asyncio.sleep(poll)
        poll = min(poll * 2, POLL_MAX_S)


async def discard(cgroups: CgroupBackend, cgroup: str) -> None:
    """Kill whatever joined ``cgroup`` and remove it, within REMOVE_TIMEOUT_S (then log)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REMOVE_TIMEOUT_S
    while True:
        with contextlib.suppress(OSError, CgroupError):
            if cgroups.procs(cgroup):
                cgroups.kill_all(cgroup)
            if cgroups.remove(cgroup):
                return
        if loop.time() >= deadline:
            log.warning("container.cgroup_left", cgroup=cgroup)
            return
        await asyncio.sleep(POLL_MIN_S)


async def remove(cgroups: CgroupBackend, cgroup: str, name: str) -> None:
    """Remove an emptied ``cgroup``, retrying while the kernel says busy; raises
    CgroupError naming ``name`` after REMOVE_TIMEOUT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REMOVE_TIMEOUT_S
    # Off the event loop: on v1 removal reclaims the task's page cache first.
    while not await asyncio.to_thread(cgroups.remove, cgroup):
        if loop.time() >= deadline:
            raise CgroupError(f"cgroup of container {name!r} still busy after {REMOVE_TIMEOUT_S} s")
        await asyncio.sleep(POLL_MIN_S)


async def freeze(cgroups: CgroupBackend, cgroup: str, ended: asyncio.Future[Any], name: str) -> None:
    """Freeze ``cgroup`` and wait until the kernel says every process is frozen;
    thaw again and raise ContainerError after FREEZE_TIMEOUT_S or if ``ended``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FREEZE_TIMEOUT_S
    poll = POLL_MIN_S
    attempt = 0
    cgroups.set_frozen(cgroup, True)
    while not cgroups.frozen(cgroup):
        if loop.time() >= deadline or ended.done():
            cgroups.set_frozen(cgroup, False)
            raise ContainerError(f"container {name!r} could not be frozen within {FREEZE_TIMEOUT_S:.0f} s")
        await asyncio.sleep(poll)
        poll = min(poll * 2, POLL_MAX_S)
        attempt += 1
        if attempt % REFREEZE_EVERY == 0 and cgroups.version == "v1":
            # A v1 freezer can stay FREEZING for good (a task caught in vfork or
            # exec); thawing and freezing again unsticks it, as runc does. (v2
            # freezes reliably, if slowly: left alone.)
            cgroups.set_frozen(cgroup, False)
            await asyncio.sleep(POLL_MIN_S)
        cgroups.set_frozen(cgroup, True)
