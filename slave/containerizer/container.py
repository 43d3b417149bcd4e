"""One container's state as the containerizer tracks it.

running ⇄ paused → stopped (``done`` resolved) → destroyed (forgotten).
What changes a running container's processes (kill, pause, resume) is its
own; launch, re-attaching and destroy are the containerizer's
(containerizer.py), which owns the table of containers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from corral.slave.containerizer import stopping
from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.isolator import Running
from corral.slave.containerizer.isolators.cgroups_freezer import CgroupsFreezerIsolator
from corral.slave.containerizer.model import ContainerConfig, Limitation, Termination
from corral.slave.containerizer.supervision import Watch

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Container:
    running: Running
    supervisor_pid: int
    supervisor_gone: asyncio.Future[None]
    task_pid: int = 0
    killed: bool = False
    paused: bool = False
    # A limit an isolator enforced itself (disk); the kernel's (memory, pids)
    # are read from the cgroup when the task ends.
    limitation: Limitation | None = None
    #: the isolators' watches (see isolator.py), cancelled at destroy
    watches: list[asyncio.Future[None]] = field(default_factory=list)
    kill_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: with the pid, identifies the supervisor to a restarted agent (see reattach.py)
    supervisor_start: int | None = None
    #: the loop's readers on its supervisor (see supervision.py)
    watch: Watch | None = None

    @property
    def config(self) -> ContainerConfig:
        return self.running.config

    @property
    def container_id(self) -> str:
        return self.running.config.container_id

    @property
    def done(self) -> asyncio.Future[Termination]:
        return self.running.done

    @property
    def state(self) -> str:
        if self.done.done():
            return "stopped"
        return "paused" if self.paused else "running"

    async def kill(self, cgroups: CgroupBackend, freezer: CgroupsFreezerIsolator, grace_s: float) -> None:
        """SIGTERM every process, SIGKILL what is left after ``grace_s``;
        idempotent, returns when every process is gone and the exit is recorded."""
        async with self.kill_lock:
            # A task whose exit the supervisor already recorded ended on its
            # own, even if the loop has not read the news yet: not killed.
            ended = (self.running.meta_dir / "exit_status.json").exists()
            if not self.done.done() and not ended:
                self.killed = True
                log.info("container.killing", container_id=self.container_id, grace_s=grace_s)
            if self.paused:
                # A frozen task cannot act on SIGTERM: thaw it so it may end cleanly.
                freezer.thaw(self.running)
                self.paused = False
            await self.terminate(cgroups, grace_s)

    async def terminate(self, cgroups: CgroupBackend, grace_s: float) -> None:
        """Signal the cgroup (stopping.py) and wait for the supervisor's report."""
        await stopping.terminate(cgroups, self.running.cgroup, grace_s, self.container_id)
        try:
            async with asyncio.timeout(stopping.KILL_TIMEOUT_S):
                await asyncio.shield(self.done)
        except TimeoutError:
            raise ContainerError(
                f"the supervisor of container {self.container_id!r} "
                f"(pid {self.supervisor_pid}) did not report the task's exit"
            ) from None

    async def pause(self, freezer: CgroupsFreezerIsolator) -> None:
        """Freeze every process; ContainerError if not running, or not frozen
        within FREEZE_TIMEOUT_S (it is then thawed again)."""
        async with self.kill_lock:
            if self.state != "running" or self.killed:
                raise ContainerError(f"container {self.container_id!r} cannot be paused: it is {self.state}")
            await freezer.pause(self.running)
            self.paused = True
            log.info("container.paused", container_id=self.container_id)

    async def resume(self, freezer: CgroupsFreezerIsolator) -> None:
        """Thaw a paused container; ContainerError if it is not paused."""
        async with self.kill_lock:
            if self.state != "paused":
                raise ContainerError(f"container {self.container_id!r} cannot be resumed: it is {self.state}")
            freezer.thaw(self.running)
            self.paused = False
            log.info("container.resumed", container_id=self.container_id)
