"""The containerizer: a composition of isolators and the state machine of each container.

Each task runs under its own supervisor process (see launcher.py), which records
the exit status in ``<work_dir>/containers/<id>/exit_status.json``; the agent
learns of it through pipes and a pidfd watched by the event loop, never by
blocking (supervision.py). Supervisors are forked by a fork server
(forkserver.py), a small helper process, so that launching does not fork the
agent's large address space. ``container.json`` beside it names the
supervisor, task and cgroups so a restarted agent can re-attach (``recover``).

What isolates a container is the isolators' business (isolator.py, as Mesos'
MesosContainerizer composes its isolators): each one's ``prepare`` refuses or
adds to the launch, ``usage`` adds its figures, ``watch`` may end it,
``cleanup`` undoes it. This module only orders them, creates the cgroup every
controller isolator fills in, and moves each container through
launching → running ⇄ paused → stopped → destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import structlog

from corral.slave.containerizer import (
    forensics,
    grpc_fork,
    kernel,
    launcher,
    leftovers,
    reattach,
    stopping,
    supervision,
)
from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.cgroups.probe import probe
from corral.slave.containerizer.composition import Isolators
from corral.slave.containerizer.container import Container
from corral.slave.containerizer.enter import EnterError, Input, Outcome, has_spec, run_inside, save_spec
from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.exec_report import parse_exec_report, read_to_eof
from corral.slave.containerizer.forkserver_client import ForkServerClient, ForkServerError
from corral.slave.containerizer.isolator import Isolator, Running
from corral.slave.containerizer.isolators.cgroups_freezer import PAUSED_MARK
from corral.slave.containerizer.isolators.disk import DISK_WATCH_INTERVAL_S
from corral.slave.containerizer.isolators.userns import UserNamespaceIsolator
from corral.slave.containerizer.model import ContainerConfig, Termination, Usage
from corral.slave.containerizer.spawning import Spawner
from corral.slave.containerizer.stopping import KILL_TIMEOUT_S, REMOVE_TIMEOUT_S

log = structlog.get_logger(__name__)

LAUNCH_TIMEOUT_S = 30.0
RECOVERED_POLL_S = 0.5
__all__ = ["LAUNCH_TIMEOUT_S", "PAUSED_MARK", "RECOVERED_POLL_S", "Containerizer"]


class Containerizer:
    """Runs tasks as supervised processes inside per-container cgroups.

    Methods other than ``containers`` must be called from the event loop's thread.
    """

    def __init__(
        self,
        work_dir: Path,
        cgroups: CgroupBackend | None = None,
        cgroup_prefix: str = "corral",
        *,
        fork_server: bool = True,
        disk_watch_interval_s: float = DISK_WATCH_INTERVAL_S,
        seccomp_profiles: Mapping[str, Path] | None = None,
        userns: UserNamespaceIsolator | None = None,
    ) -> None:
        """``fork_server=False`` forks supervisors from this process (slower; for comparison).

        ``seccomp_profiles``: name → moby-form JSON file a container's
        ``isolation.seccomp_profile`` may name besides "default" and
        "unconfined" (which tasks may ask for is the agent's policy).

        What each container wrote (sandbox, overlay upper layer) is measured
        every ``disk_watch_interval_s`` (0 turns it off); one over its
        ``disk_bytes`` is killed.

        ``userns``: where containers with ``isolation.user_namespace`` get
        their host ids (default: the host-wide registry, isolators/userns.py).
        """
        if not fork_server and not grpc_fork.in_process_fork_safe():
            raise ContainerError(
                f"grpc's fork support is on, which crashes container supervisors: set "
                f"{grpc_fork.ENV}=0 in the environment before grpc is imported"
            )
        self.work_dir = work_dir
        self.cgroups = cgroups if cgroups is not None else probe()
        self.cgroup_prefix = cgroup_prefix.strip("/")
        self._isolators = Isolators(
            self.cgroups,
            disk_watch_interval_s=disk_watch_interval_s,
            seccomp_profiles=seccomp_profiles,
            userns=userns,
        )
        self._containers: dict[str, Container] = {}
        self._prefix_ready = False
        self._fork_server = ForkServerClient() if fork_server else None
        self._spawner = None if self._fork_server is None else Spawner(self._fork_server)
        if fork_server:
            # Supervisors orphaned by a fork server that died are re-parented
            # to us, and reaped by the watch, instead of to a pid 1 that may
            # never reap them.
            with contextlib.suppress(OSError):
                kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
        self._reserved: set[str] = set()  # ids being launched
        #: re-attached containers whose exit status is polled for
        self._recovered = supervision.RecoveredPoller(RECOVERED_POLL_S)
        #: the prefix was made by an earlier agent process: ours to remove too
        self._adopted_prefix = False

    @property
    def disk_watch_interval_s(self) -> float:
        return self._isolators.disk.interval_s

    @disk_watch_interval_s.setter
    def disk_watch_interval_s(self, value: float) -> None:
        self._isolators.disk.interval_s = value

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's pid; None without one, before the first launch, or after close."""
        return None if self._fork_server is None else self._fork_server.pid

    @property
    def isolators(self) -> tuple[Isolator, ...]:
        """The composed isolators, in order."""
        return self._isolators.all

    def containers(self) -> list[str]:
        return list(self._containers)

    def _get(self, container_id: str) -> Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise ContainerError(f"container {container_id!r} is not known") from None

    def _meta_dir(self, container_id: str) -> Path:
        return self.work_dir / "containers" / container_id

    def _cgroup(self, container_id: str) -> str:
        return f"{self.cgroup_prefix}/{container_id}"

    def _ensure_prefix(self) -> None:
        if not self._prefix_ready:
            self.cgroups.prepare_prefix(self.cgroup_prefix)
            self._prefix_ready = True

    # -- launching ------------------------------------------------------------------

    async def launch(self, config: ContainerConfig) -> int:
        """Start the task; return its pid once it has exec'd inside its cgroups.

        A program that cannot be exec'd is not an error here: it ends with exit
        code 127 (126 if not executable) and the reason in its stderr, as in a shell.
        """
        config.validate()
        if config.container_id in self._containers.keys() | self._reserved | self._adopting_ids():
            raise ContainerError(f"container {config.container_id!r} already exists")
        # Reserved while the fork server works: launch awaits before registering.
        self._reserved.add(config.container_id)
        try:
            return await self._launch(config)
        finally:
            self._reserved.discard(config.container_id)

    def _adopting_ids(self) -> set[str]:
        return set() if self._spawner is None else self._spawner.adopting_ids

    async def _launch(self, config: ContainerConfig) -> int:
        meta_dir = self._meta_dir(config.container_id)
        cgroup = self._cgroup(config.container_id)
        self._ensure_prefix()
        prepared, spec = self._isolators.launch(config, meta_dir, cgroup)
        try:
            if self._spawner is None:
                spawned = supervision.spawn_here(spec)
            else:
                spawned = await self._spawner.spawn(
                    config.container_id,
                    spec,
                    register=lambda spawned: self._register(config, cgroup, meta_dir, spawned),
                    abandon=self._abandon,
                    failed=lambda: self._discard(config.container_id, cgroup),
                    timeout_s=LAUNCH_TIMEOUT_S,
                )
        except (OSError, ForkServerError) as e:
            # After a fork server failure the task may have been forked anyway.
            await self._discard(config.container_id, cgroup)
            raise ContainerError(
                f"cannot fork the supervisor of container {config.container_id!r}: {e}"
            ) from e
        c = self._register(config, cgroup, meta_dir, spawned)
        try:
            async with asyncio.timeout(LAUNCH_TIMEOUT_S):
                report = await read_to_eof(spawned.exec_fd)
        except TimeoutError:
            report = b"Etimed out waiting for the task to exec\n"
        task_pid, error = parse_exec_report(report)
        if error is not None or task_pid is None:
            await self._abandon(c)
            raise ContainerError(
                f"cannot launch container {config.container_id!r}: "
                f"{error or 'the supervisor exited before starting the task'}"
            )
        c.task_pid = task_pid
        self._isolators.isolate(c.running, task_pid)
        self._start_watches(c)
        # What a health check needs to enter the container as its task (enter.py).
        save_spec(meta_dir, spec)
        record = reattach.ContainerRecord(
            config.container_id, c.supervisor_pid, c.supervisor_start, task_pid, config.sandbox
        )
        reattach.write_record(meta_dir, record, self.cgroups.version, self.cgroups.dirs(cgroup))
        log.debug(
            "container.launched",
            container_id=config.container_id,
            pid=task_pid,
            supervisor_pid=c.supervisor_pid,
            userns_base=None if prepared.userns is None else prepared.userns.base,
        )
        return task_pid

    def _new(self, config: ContainerConfig, cgroup: str, meta_dir: Path, supervisor_pid: int) -> Container:
        loop = asyncio.get_running_loop()
        c = Container(
            running=Running(config, meta_dir, cgroup, loop.create_future()),
            supervisor_pid=supervisor_pid,
            supervisor_gone=loop.create_future(),
        )
        self._containers[config.container_id] = c
        return c

    def _register(
        self, config: ContainerConfig, cgroup: str, meta_dir: Path, spawned: launcher.Spawned
    ) -> Container:
        c = self._new(config, cgroup, meta_dir, spawned.supervisor_pid)

        def task_ended() -> None:
            if not c.done.done():
                c.paused = False
                c.done.set_result(self._termination(c))

        c.watch = supervision.watch_spawned(spawned, c.supervisor_gone, task_ended)
        c.supervisor_start = c.watch.supervisor_start
        return c

    async def _discard(self, container_id: str, cgroup: str) -> None:
        """Undo a launch whose supervisor never came: whatever joined the cgroup, the isolators."""
        await stopping.discard(self.cgroups, cgroup)
        self._isolators.cleanup(container_id)

    def _termination(self, c: Container) -> Termination:
        try:
            stats = self.cgroups.stats(c.running.cgroup)
        except (OSError, ValueError) as e:
            log.warning("container.stats_unavailable", container_id=c.config.container_id, error=str(e))
            stats = None
        found = c.limitation or forensics.limitation(stats)
        return supervision.termination(c.config, c.running.meta_dir, found, c.killed, stats)

    async def _abandon(self, c: Container) -> None:
        """Undo a launch that failed after the fork."""
        with contextlib.suppress(ContainerError):
            await c.terminate(self.cgroups, grace_s=0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await asyncio.shield(c.supervisor_gone)
        await self.destroy(c.config.container_id)

    # -- a running container ----------------------------------------------------------

    async def wait(self, container_id: str) -> Termination:
        """Resolve when the task has ended; any number of callers may wait."""
        return await asyncio.shield(self._get(container_id).done)

    async def kill(self, container_id: str, grace_s: float = 3.0) -> None:
        """SIGTERM every process of the container, SIGKILL what is left after ``grace_s``.

        Idempotent; returns when every process is gone and the exit is recorded.
        """
        await self._get(container_id).kill(self.cgroups, self._isolators.freezer, grace_s)

    def state(self, container_id: str) -> str:
        """``"running"``, ``"paused"`` or ``"stopped"`` (ended, not yet destroyed)."""
        return self._get(container_id).state

    async def pause(self, container_id: str) -> None:
        """Freeze every process of a running container (cgroup freezer, see Container.pause)."""
        await self._get(container_id).pause(self._isolators.freezer)

    async def resume(self, container_id: str) -> None:
        """Thaw a paused container; raises ContainerError if it is not paused."""
        await self._get(container_id).resume(self._isolators.freezer)

    def _start_watches(self, c: Container) -> None:
        if c.watches:
            return
        for isolator in self._isolators.all:
            if isolator.watches(c.config):
                c.watches.append(asyncio.ensure_future(self._watch_with(isolator, c)))

    async def _watch_with(self, isolator: Isolator, c: Container) -> None:
        """Kill the container at once when ``isolator`` finds it over a limit."""
        found = await isolator.watch(c.running)
        if found is None or c.done.done():
            return
        c.limitation = found
        try:
            await self.kill(c.config.container_id, grace_s=0.0)
        except ContainerError as e:
            log.warning(
                "container.limit_kill_failed",
                container_id=c.config.container_id,
                isolator=isolator.name,
                error=str(e),
            )

    async def usage(self, container_id: str) -> Usage:
        """Live statistics, each isolator filling in its own; disk is the last
        background measurement (0 before the first)."""
        c = self._get(container_id)
        return self._isolators.usage(c.running, c.state)

    async def destroy(self, container_id: str) -> None:
        """Remove the container's cgroups and records; the sandbox stays. Idempotent.

        Meant for after ``wait``: processes the task left behind (daemons) are killed.
        """
        c = self._containers.get(container_id)
        if c is None:
            return
        for watch in c.watches:
            watch.cancel()
        await asyncio.gather(*c.watches, return_exceptions=True)
        if not c.done.done() or self.cgroups.procs(c.running.cgroup):
            await self.kill(container_id, grace_s=0.0)
        await stopping.remove(self.cgroups, c.running.cgroup, container_id)
        try:
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await asyncio.shield(c.supervisor_gone)
        except TimeoutError:
            log.warning(
                "container.supervisor_lingers",
                container_id=container_id,
                supervisor_pid=c.supervisor_pid,
            )
        # Only once no process of it is left: a user namespace's ids may then
        # go to another container.
        self._isolators.cleanup(container_id)
        shutil.rmtree(c.running.meta_dir, ignore_errors=True)
        self._containers.pop(container_id, None)  # a concurrent destroy may have won

    # -- recovery (an earlier agent process launched these) -----------------------

    def recover(
        self,
        container_id: str,
        sandbox: Path,
        config: ContainerConfig | None = None,
        *,
        rebooted: bool = False,
    ) -> str:
        """Re-attach to a container an earlier agent process launched.

        Returns ``"running"`` (its supervisor still runs: ``wait`` resolves when
        the task ends), ``"ended"`` (it ended while no agent watched; ``wait``
        returns how) or ``"lost"`` (no live supervisor and no exit status:
        whatever is left in its cgroup is killed by ``destroy``). Every case
        registers the container, so ``wait``, ``kill`` and ``destroy`` work.
        ``config`` (rebuilt from the task) brings back its limits: a running
        one is measured against its disk limit again. A container paused on
        purpose stays paused. After a reboot (``rebooted``) no process of the
        earlier boot can live, so pids are not even probed: one recorded then
        may name an unrelated process now, and with start times counted from
        boot even the start time may match. Raises ContainerError if
        ``container.json`` is damaged.
        """
        meta_dir = self._meta_dir(container_id)
        try:
            record = reattach.read_record(meta_dir)
        except reattach.RecordError as e:
            raise ContainerError(f"{meta_dir / 'container.json'}: {e}") from None
        self._ensure_prefix()
        self._adopted_prefix = True
        found = reattach.attach(meta_dir, record, rebooted)
        pidfd, ended = found.pidfd, found.ended
        if config is None:
            config = ContainerConfig(
                container_id=container_id, argv=("?",), env={}, sandbox=sandbox, cpus_milli=1, mem_bytes=1
            )
        c = self._new(config, self._cgroup(container_id), meta_dir, record.supervisor_pid if record else 0)
        if record is not None:
            c.task_pid, c.supervisor_start = record.task_pid, record.supervisor_start
        # Whatever its fate, the ids of its user namespace stay taken until destroy.
        self._isolators.userns.recover(c.running)
        if pidfd is None:
            c.supervisor_gone.set_result(None)
            if ended:
                c.done.set_result(self._termination(c))
                return "ended"
            c.done.set_result(Termination(None, None, None, False, "", "no exit status was recorded"))
            return "lost"
        c.watch = supervision.watch_recovered(pidfd, c.supervisor_gone, lambda: self._recovered_done(c))
        # An agent killed in the middle of a SIGKILL round leaves the cgroup
        # frozen; only a pause the mark on disk vouches for stays.
        c.paused = self._isolators.freezer.restore(c.running, ended)
        if ended:
            self._recovered_done(c)
            return "ended"
        self._isolators.recover(c.running)
        self._start_watches(c)
        self._recovered.add(container_id, meta_dir, lambda: self._recovered_done(c))
        return "running"

    def task_pid(self, container_id: str) -> int:
        """The task's pid as recorded at launch (0 if unknown)."""
        return self._get(container_id).task_pid

    async def enter(
        self,
        container_id: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        timeout_s: float,
        on_output: Callable[[bytes], Awaitable[None]] | None = None,
        stdin: asyncio.Queue[Input] | None = None,
        tty: tuple[int, int] | None = None,
    ) -> Outcome:
        """Run ``argv`` inside the running container, confined exactly as its
        task (enter.py), with ``env`` (None: the task's), ``on_output`` fed
        its output as it comes, ``stdin`` and ``tty`` as run_inside takes
        them. Raises ContainerError if the container is not running or
        cannot be entered."""
        c = self._get(container_id)
        if c.state != "running" or c.killed or not c.task_pid:
            raise ContainerError(f"container {container_id!r} is {c.state}: it cannot be entered")
        try:
            return await run_inside(
                c.running.meta_dir, c.task_pid, argv, env, timeout_s, on_output, stdin, tty
            )
        except EnterError as e:
            raise ContainerError(f"container {container_id!r}: {e}") from None

    def can_enter(self, container_id: str) -> bool:
        """Whether ``enter`` has the task's launch spec (a container an agent
        older than enter.py launched has none)."""
        c = self._containers.get(container_id)
        return c is not None and has_spec(c.running.meta_dir)

    def _recovered_done(self, c: Container) -> None:
        self._recovered.discard(c.container_id)
        if not c.done.done():
            c.done.set_result(self._termination(c))

    async def detach(self) -> None:
        """Stop polling re-attached containers and close the fork server; the
        containers run on (the agent stops without killing tasks), and nothing
        here acts on them any more: a new containerizer takes them over."""
        await self._recovered.stop()
        watches = []
        for c in self._containers.values():
            if c.watch is not None:
                c.watch.stop()
                c.watch = None
            for watch in c.watches:
                watch.cancel()
                watches.append(watch)
        await asyncio.gather(*watches, return_exceptions=True)
        if self._fork_server is not None:
            await self._fork_server.close()

    async def cleanup_leftovers(self, keep: set[str]) -> list[str]:
        """Kill and remove containers not in ``keep`` that an earlier agent left:
        their processes, cgroups and records (their sandboxes stay for GC)."""
        found = leftovers.find(self.work_dir, self.cgroups, self.cgroup_prefix)
        removed = sorted(found - keep)
        self._adopted_prefix = self._adopted_prefix or bool(found)
        userns = self._isolators.userns
        await leftovers.remove_all(self.cgroups, self.cgroup_prefix, self.work_dir, removed, userns)
        return removed

    async def close(self, grace_s: float = 3.0) -> None:
        """Kill and destroy every container, then remove the cgroup prefix."""
        ids = list(self._containers)
        results = await asyncio.gather(*(self._close_one(i, grace_s) for i in ids), return_exceptions=True)
        for container_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                log.error("container.not_cleaned_up", container_id=container_id, error=str(result))
        await self._recovered.stop()
        if self._spawner is not None:
            await self._spawner.wait_adoptions(KILL_TIMEOUT_S + REMOVE_TIMEOUT_S)
        # After the containers and the launches being adopted: the server reaps
        # their supervisors until it leaves.
        if self._fork_server is not None:
            await self._fork_server.close()
        self._isolators.close()
        if self._prefix_ready:
            self.cgroups.remove_prefix(self.cgroup_prefix)
            self._prefix_ready = False
        if self._adopted_prefix:
            leftovers.remove_prefix_dirs(self.cgroups, self.cgroup_prefix)
            self._adopted_prefix = False

    async def _close_one(self, container_id: str, grace_s: float) -> None:
        c = self._containers.get(container_id)
        if c is not None and not c.done.done():
            await self.kill(container_id, grace_s)
        await self.destroy(container_id)
