"""Watching a container's supervisor from the event loop, and reading how it ended.

The supervisor (launcher.py) reports through a pidfd (it exited) and the done
pipe (EOF once the exit status is on disk); both are watched with loop readers,
never by blocking and never with a SIGCHLD handler that could steal other
children's statuses. A supervisor an earlier agent started has only the pidfd
(``watch_recovered``). Procedures over fds and futures: the container's state
stays with the containerizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from corral.slave.containerizer import checkpoint, forensics, launcher, reattach
from corral.slave.containerizer.cgroups.base import CgroupStats
from corral.slave.containerizer.model import ContainerConfig, Limitation, Termination
from corral.slave.containerizer.stopping import KILL_TIMEOUT_S, POLL_MAX_S

log = structlog.get_logger(__name__)


@dataclass
class Watch:
    """The loop readers watching one supervisor; ``stop`` removes them and closes their fds."""

    stop: Callable[[], None]
    #: with the pid, identifies the supervisor to a restarted agent (see reattach.py)
    supervisor_start: int | None = None


def spawn_here(spec: launcher.LaunchSpec) -> launcher.Spawned:
    """Fork the supervisor from this process: the path before the fork server."""
    # A collection in the child could run arbitrary __del__ code of the agent,
    # so the child starts with gc off (as _posixsubprocess does).
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        return launcher.spawn(spec)
    finally:
        if gc_enabled:
            gc.enable()


def watch_spawned(
    spawned: launcher.Spawned,
    supervisor_gone: asyncio.Future[None],
    task_ended: Callable[[], None],
) -> Watch:
    """Call ``task_ended`` once the done pipe reaches EOF or the supervisor exits
    (whichever first; the callee must tolerate a second call), and resolve
    ``supervisor_gone`` when it has exited."""
    loop = asyncio.get_running_loop()
    # The fork server opened the pidfd before it could reap the supervisor;
    # in-process the supervisor is our child and cannot be reaped before we
    # open one.
    pidfd = spawned.pidfd if spawned.pidfd >= 0 else os.pidfd_open(spawned.supervisor_pid)
    start = reattach.start_time_of(spawned.supervisor_pid, pidfd)
    done_open = True

    def on_supervisor_exit() -> None:
        loop.remove_reader(pidfd)
        # Reaps it if it is our child (in-process path); the fork server reaps
        # its own. Through the pidfd, so a recycled pid is never reaped.
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        os.close(pidfd)
        if not supervisor_gone.done():
            supervisor_gone.set_result(None)
        on_done()

    def on_done() -> None:
        nonlocal done_open
        if not done_open:
            return
        with contextlib.suppress(BlockingIOError):
            if os.read(spawned.done_fd, 64):
                return
        loop.remove_reader(spawned.done_fd)
        os.close(spawned.done_fd)
        done_open = False
        task_ended()

    def stop() -> None:
        nonlocal done_open
        if not supervisor_gone.done():
            loop.remove_reader(pidfd)
            os.close(pidfd)
        if done_open:
            loop.remove_reader(spawned.done_fd)
            os.close(spawned.done_fd)
            done_open = False

    os.set_blocking(spawned.done_fd, False)
    loop.add_reader(pidfd, on_supervisor_exit)
    loop.add_reader(spawned.done_fd, on_done)
    return Watch(stop, start)


def watch_recovered(pidfd: int, supervisor_gone: asyncio.Future[None], exited: Callable[[], None]) -> Watch:
    """Like ``watch_spawned`` for a supervisor an earlier agent started: only its pidfd is left."""
    loop = asyncio.get_running_loop()

    def on_supervisor_exit() -> None:
        loop.remove_reader(pidfd)
        # Ours to reap only if this process adopted it (a subreaper above it).
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        os.close(pidfd)
        supervisor_gone.set_result(None)
        exited()

    def stop() -> None:
        if not supervisor_gone.done():
            loop.remove_reader(pidfd)
            os.close(pidfd)

    loop.add_reader(pidfd, on_supervisor_exit)
    return Watch(stop)


class RecoveredPoller:
    """Notices exit statuses of re-attached containers: there is no done pipe
    to them any more; the pidfd covers a supervisor that exits, this poll a
    supervisor still reaping the task's orphans. The poll task runs only while
    some container is waited for; ``stop`` cancels and awaits it."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._waiting: dict[str, tuple[Path, Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, container_id: str, meta_dir: Path, ended: Callable[[], None]) -> None:
        """Call ``ended`` once ``meta_dir`` holds an exit status (it must ``discard`` the id)."""
        self._waiting[container_id] = (meta_dir, ended)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="containerizer-recovered")

    def discard(self, container_id: str) -> None:
        self._waiting.pop(container_id, None)

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.interval_s)
            for meta_dir, ended in list(self._waiting.values()):
                if (meta_dir / "exit_status.json").exists():
                    ended()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def termination(
    config: ContainerConfig,
    meta_dir: Path,
    found: Limitation | None,
    killed: bool,
    stats: CgroupStats | None = None,
) -> Termination:
    """How the task ended, from the exit status its supervisor wrote, the
    limitation found (an isolator's, else the cgroup's, see forensics.py) and
    what its cgroup used (``stats``, read before the cgroup goes)."""
    status = checkpoint.read_json(meta_dir / "exit_status.json") or {}
    exit_code = status.get("exit_code")
    sig = status.get("signal")
    result = Termination(
        exit_code=exit_code if isinstance(exit_code, int) else None,
        signal=sig if isinstance(sig, int) else None,
        limitation=found,
        killed=killed,
        stderr_tail=forensics.stderr_tail(config.sandbox / "stderr"),
        message=forensics.describe(exit_code, sig, found),
        cpu_time_s=None if stats is None else stats.cpu_time_ns / 1e9,
        mem_peak_bytes=None if stats is None or not stats.mem_peak_bytes else stats.mem_peak_bytes,
    )
    log.info(
        "container.ended",
        container_id=config.container_id,
        exit_code=result.exit_code,
        signal=result.signal,
        killed=result.killed,
        limitation=None if found is None else found.kind,
    )
    return result


async def end_supervisor(pidfd: int) -> None:
    """Give a leftover supervisor KILL_TIMEOUT_S to leave on its own, then SIGKILL it; closes ``pidfd``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_TIMEOUT_S
    try:
        while reattach.alive(pidfd) and loop.time() < deadline:
            await asyncio.sleep(POLL_MAX_S)
        if reattach.alive(pidfd):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)
