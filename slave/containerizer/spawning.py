"""Asking the fork server for a supervisor, with a cancelled launch's task adopted.

A launch cancelled while the fork server works may still get its task forked:
once the server answers, the task must be taken on and removed, so that no
task runs unknown to the agent. ``Spawner`` keeps those adoptions referenced
until they end (no fire-and-forget) and their container ids taken meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from corral.slave.containerizer import launcher
from corral.slave.containerizer.exec_report import read_to_eof
from corral.slave.containerizer.forkserver_client import ForkServerClient, ForkServerError

log = structlog.get_logger(__name__)
C = TypeVar("C")


class Spawner:
    def __init__(self, server: ForkServerClient) -> None:
        self.server = server
        self.adopting: set[asyncio.Task[None]] = set()
        #: ids of cancelled launches whose answer is awaited
        self.adopting_ids: set[str] = set()

    async def spawn(
        self,
        container_id: str,
        spec: launcher.LaunchSpec,
        register: Callable[[launcher.Spawned], C],
        abandon: Callable[[C], Awaitable[None]],
        failed: Callable[[], Awaitable[None]],
        timeout_s: float,
    ) -> launcher.Spawned:
        """The server's answer; if cancelled meanwhile, the cancellation goes on
        and once the answer comes the container is ``register``-ed, then (when
        its exec report is complete, or after ``timeout_s``) ``abandon``-ed; or
        ``failed`` runs if the server could not fork. Raises OSError or
        ForkServerError."""
        request = asyncio.ensure_future(self.server.spawn(spec))
        try:
            return await asyncio.shield(request)
        except asyncio.CancelledError:
            self.adopting_ids.add(container_id)

            async def late() -> None:
                try:
                    spawned = await request
                except (OSError, ForkServerError):
                    self.adopting_ids.discard(container_id)
                    await failed()
                    return
                try:
                    c = register(spawned)
                finally:
                    self.adopting_ids.discard(container_id)
                # Once the exec report is complete the task is in its cgroup (or
                # dead), so the kill cannot miss it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await read_to_eof(spawned.exec_fd)
                await abandon(c)

            task = asyncio.ensure_future(late())
            self.adopting.add(task)
            task.add_done_callback(self._adopted)
            raise

    def _adopted(self, task: asyncio.Task[None]) -> None:
        self.adopting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("container.cleanup_failed", error=str(task.exception()))

    async def wait_adoptions(self, timeout_s: float) -> None:
        if self.adopting:
            await asyncio.wait(self.adopting, timeout=timeout_s)
