"""One container's state as the containerizer tracks it.

running ⇄ paused → stopped (``done`` resolved) → destroyed (forgotten). The
transitions are the containerizer's (containerizer.py); this is the record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from corral.slave.containerizer.isolator import Running
from corral.slave.containerizer.model import ContainerConfig, Limitation, Termination
from corral.slave.containerizer.supervision import Watch


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
