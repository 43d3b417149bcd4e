"""The containerizer: launch, watch, kill, measure and remove cgroup-limited tasks.

Each task runs under its own supervisor process (see launcher.py), which records
the exit status in ``<work_dir>/containers/<id>/exit_status.json``; the agent
learns of it through pipes and a pidfd watched by the event loop, never by
blocking. Supervisors are forked by a fork server (forkserver.py), a small helper
process, so that launching does not fork the agent's large address space.
``container.json`` beside it names the supervisor, task and cgroups so a
restarted agent can re-attach (recovery is a later issue).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from corral.slave.containerizer import (
    checkpoint,
    forensics,
    kernel,
    launcher,
    overlay,
    reattach,
    stopping,
)
from corral.slave.containerizer.cgroups.base import CgroupBackend, CgroupLimits, CgroupStats
from corral.slave.containerizer.cgroups.probe import probe
from corral.slave.containerizer.enter import EnterError, Outcome, has_spec, run_inside, save_spec
from corral.slave.containerizer.errors import CgroupError, ContainerError
from corral.slave.containerizer.exec_report import parse_exec_report, read_to_eof
from corral.slave.containerizer.forkserver_client import ForkServerClient, ForkServerError
from corral.slave.containerizer.isolation import image_etc_files, launch_spec
from corral.slave.containerizer.isolator import Isolator, Prepared, Watched
from corral.slave.containerizer.isolators.devices import DevicesIsolator
from corral.slave.containerizer.isolators.disk import DISK_WATCH_INTERVAL_S, DiskIsolator
from corral.slave.containerizer.isolators.seccomp import SeccompIsolator
from corral.slave.containerizer.model import ContainerConfig, Limitation, Termination, Usage
from corral.slave.containerizer.stopping import (
    KILL_TIMEOUT_S,
    POLL_MAX_S,
    POLL_MIN_S,
    REMOVE_TIMEOUT_S,
)
from corral.slave.work_dir import PRIVATE, ensure_dir

log = structlog.get_logger(__name__)

# grpcio's C core (1.85) has fork support on by default: its pthread_atfork
# handlers restart about five grpc threads in every forked child, and those abort
# the supervisor ("Check failed: wakeup_fd_->Wakeup().ok()") once it closes the
# agent's fds. grpc reads the variable when it is imported, so this default only
# helps when the containerizer is imported first; entry points should set it.
# Only the in-process fork path cares: the fork server never imports grpc.
_GRPC_FORK_ENV = "GRPC_ENABLE_FORK_SUPPORT"
_FALSY = ("0", "false", "no", "off")
_GRPC_IMPORTED_FORK_SAFE = "grpc" not in sys.modules or os.environ.get(_GRPC_FORK_ENV, "1").lower() in _FALSY
os.environ.setdefault(_GRPC_FORK_ENV, "0")

LAUNCH_TIMEOUT_S = 30.0
#: in a container's meta dir while it is paused on purpose
PAUSED_MARK = "paused"
RECOVERED_POLL_S = 0.5


@dataclass(eq=False)
class _Container:
    config: ContainerConfig
    cgroup: str
    meta_dir: Path
    supervisor_pid: int
    done: asyncio.Future[Termination]
    supervisor_gone: asyncio.Future[None]
    task_pid: int = 0
    killed: bool = False
    paused: bool = False
    # A limit the agent enforced itself (disk); the kernel's (memory, pids) are
    # read from the cgroup when the task ends.
    limitation: Limitation | None = None
    #: the isolators' watches (see isolator.py), cancelled at destroy
    watches: list[asyncio.Future[None]] = field(default_factory=list)
    kill_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: with the pid, identifies the supervisor to a restarted agent (see reattach.py)
    supervisor_start: int | None = None
    #: stops watching its supervisor (removes the loop's readers, closes their fds)
    unwatch: Callable[[], None] | None = None

    @property
    def state(self) -> str:
        if self.done.done():
            return "stopped"
        return "paused" if self.paused else "running"


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
    ) -> None:
        """``fork_server=False`` forks supervisors from this process (slower; for comparison).

        ``seccomp_profiles``: name → moby-form JSON file a container's
        ``isolation.seccomp_profile`` may name besides "default" and
        "unconfined" (which tasks may ask for is the agent's policy).

        What each container wrote (sandbox, overlay upper layer) is measured
        every ``disk_watch_interval_s`` (0 turns it off); one over its
        ``disk_bytes`` is killed.
        """
        if not fork_server and (
            not _GRPC_IMPORTED_FORK_SAFE or os.environ.get(_GRPC_FORK_ENV, "").lower() not in _FALSY
        ):
            raise ContainerError(
                f"grpc's fork support is on, which crashes container supervisors: set "
                f"{_GRPC_FORK_ENV}=0 in the environment before grpc is imported"
            )
        self.work_dir = work_dir
        self.cgroups = cgroups if cgroups is not None else probe()
        self.cgroup_prefix = cgroup_prefix.strip("/")
        self._disk = DiskIsolator(disk_watch_interval_s)
        #: composed in this order (Mesos' isolators); each owns one concern
        self.isolators: tuple[Isolator, ...] = (
            SeccompIsolator(seccomp_profiles),
            DevicesIsolator(),
            self._disk,
        )
        self._containers: dict[str, _Container] = {}
        self._prefix_ready = False
        self._fork_server = ForkServerClient() if fork_server else None
        if fork_server:
            # Supervisors orphaned by a fork server that died are re-parented
            # to us, and reaped by _watch, instead of to a pid 1 that may
            # never reap them.
            with contextlib.suppress(OSError):
                kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
        self._reserved: set[str] = set()  # ids being launched
        self._adopting: set[asyncio.Task[None]] = set()
        self._adopting_ids: set[str] = set()  # launches cancelled while the server forked
        self._recovered: dict[str, _Container] = {}  # re-attached, exit status polled
        self._poller: asyncio.Task[None] | None = None
        #: the prefix was made by an earlier agent process: ours to remove too
        self._adopted_prefix = False

    @property
    def disk_watch_interval_s(self) -> float:
        return self._disk.interval_s

    @disk_watch_interval_s.setter
    def disk_watch_interval_s(self, value: float) -> None:
        self._disk.interval_s = value

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's pid; None without one, before the first launch, or after close."""
        return None if self._fork_server is None else self._fork_server.pid

    def containers(self) -> list[str]:
        return list(self._containers)

    def _get(self, container_id: str) -> _Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise ContainerError(f"container {container_id!r} is not known") from None

    async def launch(self, config: ContainerConfig) -> int:
        """Start the task; return its pid once it has exec'd inside its cgroups.

        A program that cannot be exec'd is not an error here: it ends with exit
        code 127 (126 if not executable) and the reason in its stderr, as in a shell.
        """
        config.validate()
        if config.container_id in self._containers.keys() | self._reserved | self._adopting_ids:
            raise ContainerError(f"container {config.container_id!r} already exists")
        # Reserved while the fork server works: launch awaits before registering.
        self._reserved.add(config.container_id)
        try:
            return await self._launch(config)
        finally:
            self._reserved.discard(config.container_id)

    async def _launch(self, config: ContainerConfig) -> int:
        meta_dir = self.work_dir / "containers" / config.container_id
        # Refused (a profile, a device) before anything is made.
        prepared = Prepared()
        for isolator in self.isolators:
            prepared = prepared.merge(isolator.prepare(config))
        try:
            ensure_dir(meta_dir.parent, PRIVATE)  # overlay upper dirs: see slave/work_dir.py
            meta_dir.mkdir(parents=True, exist_ok=True)
            (meta_dir / "exit_status.json").unlink(missing_ok=True)
            config.sandbox.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ContainerError(
                f"cannot create the directories of container {config.container_id!r}: {e}"
            ) from e
        try:
            filesystem = overlay.prepare(
                config.rootfs,
                config.volumes,
                config.sandbox,
                config.workdir,
                meta_dir,
                image_etc_files(config.isolation, config.container_id) if config.rootfs is not None else (),
            )
        except ContainerError:
            shutil.rmtree(meta_dir, ignore_errors=True)
            raise
        if not self._prefix_ready:
            self.cgroups.prepare_prefix(self.cgroup_prefix)
            self._prefix_ready = True
        cgroup = f"{self.cgroup_prefix}/{config.container_id}"
        limits = CgroupLimits.for_task(
            config.cpus_milli, config.mem_bytes, config.cpu_hard_cap, config.pids_max, prepared.device_rules
        )
        join = self.cgroups.create(cgroup, limits)
        spec = launch_spec(
            config,
            join,
            meta_dir,
            filesystem,
            prepared.seccomp,
            self.cgroups.version,
            self.cgroups.task_mounts(),
        )
        try:
            if self._fork_server is None:
                spawned = self._spawn_here(spec)
            else:
                spawned = await self._spawn_in_fork_server(self._fork_server, config, cgroup, meta_dir, spec)
        except (OSError, ForkServerError) as e:
            # After a fork server failure the task may have been forked anyway.
            await self._discard_cgroup(cgroup)
            shutil.rmtree(meta_dir / "overlay", ignore_errors=True)
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
        self._start_watches(c)
        save_spec(meta_dir, spec)
        checkpoint.write_json(
            meta_dir / "container.json",
            {
                "container_id": config.container_id,
                "supervisor_pid": c.supervisor_pid,
                "supervisor_start": c.supervisor_start,
                "task_pid": task_pid,
                "cgroup_version": self.cgroups.version,
                "cgroups": [str(d) for d in self.cgroups.dirs(cgroup)],
                "sandbox": str(config.sandbox),
            },
        )
        log.debug(
            "container.launched",
            container_id=config.container_id,
            pid=task_pid,
            supervisor_pid=c.supervisor_pid,
        )
        return task_pid

    def _register(
        self, config: ContainerConfig, cgroup: str, meta_dir: Path, spawned: launcher.Spawned
    ) -> _Container:
        loop = asyncio.get_running_loop()
        c = _Container(
            config=config,
            cgroup=cgroup,
            meta_dir=meta_dir,
            supervisor_pid=spawned.supervisor_pid,
            done=loop.create_future(),
            supervisor_gone=loop.create_future(),
        )
        self._containers[config.container_id] = c
        self._watch(c, spawned)
        return c

    async def _spawn_in_fork_server(
        self,
        server: ForkServerClient,
        config: ContainerConfig,
        cgroup: str,
        meta_dir: Path,
        spec: launcher.LaunchSpec,
    ) -> launcher.Spawned:
        request = asyncio.ensure_future(server.spawn(spec))
        try:
            return await asyncio.shield(request)
        except asyncio.CancelledError:
            # The server may fork the task anyway: once it answers, take the
            # container on and remove it, so that no task runs unknown to us.
            # The id stays taken until then.
            container_id = config.container_id
            self._adopting_ids.add(container_id)

            async def adopt() -> None:
                try:
                    try:
                        spawned = await request
                    except (OSError, ForkServerError):
                        await self._discard_cgroup(cgroup)
                        return
                    c = self._register(config, cgroup, meta_dir, spawned)
                finally:
                    self._adopting_ids.discard(container_id)
                # Once the exec report is complete the task is in its cgroup (or
                # dead), so the kill cannot miss it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LAUNCH_TIMEOUT_S):
                        await read_to_eof(spawned.exec_fd)
                await self._abandon(c)

            self._forget_task(asyncio.ensure_future(adopt()))
            raise

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        """Keep a fire-and-forget task referenced until it ends; log its failure."""
        self._adopting.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._adopting.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("container.cleanup_failed", error=str(t.exception()))

        task.add_done_callback(done)

    async def _discard_cgroup(self, cgroup: str) -> None:
        await stopping.discard(self.cgroups, cgroup)

    def _spawn_here(self, spec: launcher.LaunchSpec) -> launcher.Spawned:
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

    def _watch(self, c: _Container, spawned: launcher.Spawned) -> None:
        loop = asyncio.get_running_loop()
        # A pidfd says when the supervisor ends without a SIGCHLD handler that
        # could steal other children's statuses. The fork server opened it before
        # it could reap the supervisor; in-process the supervisor is our child and
        # cannot be reaped before we open one.
        pidfd = spawned.pidfd if spawned.pidfd >= 0 else os.pidfd_open(c.supervisor_pid)
        c.supervisor_start = reattach.start_time_of(c.supervisor_pid, pidfd)

        def on_supervisor_exit() -> None:
            loop.remove_reader(pidfd)
            # Reaps it if it is our child (in-process path); the fork server reaps
            # its own. Through the pidfd, so a recycled pid is never reaped.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
            os.close(pidfd)
            if not c.supervisor_gone.done():
                c.supervisor_gone.set_result(None)
            on_done()

        def on_done() -> None:
            if c.done.done():
                return
            with contextlib.suppress(BlockingIOError):
                if os.read(spawned.done_fd, 64):
                    return
            loop.remove_reader(spawned.done_fd)
            os.close(spawned.done_fd)
            c.paused = False
            c.done.set_result(self._termination(c))

        def unwatch() -> None:
            if not c.supervisor_gone.done():
                loop.remove_reader(pidfd)
                os.close(pidfd)
            if not c.done.done():
                loop.remove_reader(spawned.done_fd)
                os.close(spawned.done_fd)

        os.set_blocking(spawned.done_fd, False)
        loop.add_reader(pidfd, on_supervisor_exit)
        loop.add_reader(spawned.done_fd, on_done)
        c.unwatch = unwatch

    def _termination(self, c: _Container) -> Termination:
        status = checkpoint.read_json(c.meta_dir / "exit_status.json") or {}
        exit_code = status.get("exit_code")
        sig = status.get("signal")
        stats = self._stats(c)
        found = c.limitation or forensics.limitation(stats)
        termination = Termination(
            exit_code=exit_code if isinstance(exit_code, int) else None,
            signal=sig if isinstance(sig, int) else None,
            limitation=found,
            killed=c.killed,
            stderr_tail=forensics.stderr_tail(c.config.sandbox / "stderr"),
            message=forensics.describe(exit_code, sig, found),
        )
        log.info(
            "container.ended",
            container_id=c.config.container_id,
            exit_code=termination.exit_code,
            signal=termination.signal,
            killed=termination.killed,
            limitation=None if found is None else found.kind,
        )
        return termination

    def _stats(self, c: _Container) -> CgroupStats | None:
        try:
            return self.cgroups.stats(c.cgroup)
        except (OSError, ValueError) as e:
            log.warning("container.stats_unavailable", container_id=c.config.container_id, error=str(e))
            return None

    async def _abandon(self, c: _Container) -> None:
        """Undo a launch that failed after the fork."""
        with contextlib.suppress(ContainerError):
            await self._terminate(c, grace_s=0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await asyncio.shield(c.supervisor_gone)
        await self.destroy(c.config.container_id)

    async def wait(self, container_id: str) -> Termination:
        """Resolve when the task has ended; any number of callers may wait."""
        return await asyncio.shield(self._get(container_id).done)

    async def kill(self, container_id: str, grace_s: float = 3.0) -> None:
        """SIGTERM every process of the container, SIGKILL what is left after ``grace_s``.

        Idempotent; returns when every process is gone and the exit is recorded.
        """
        c = self._get(container_id)
        async with c.kill_lock:
            # A task whose exit the supervisor already recorded ended on its
            # own, even if the loop has not read the news yet: not killed.
            ended = (c.meta_dir / "exit_status.json").exists()
            if not c.done.done() and not ended:
                c.killed = True
                log.info("container.killing", container_id=container_id, grace_s=grace_s)
            if c.paused:
                # A frozen task cannot act on SIGTERM: thaw it so it may end cleanly.
                self.cgroups.set_frozen(c.cgroup, False)
                c.paused = False
                (c.meta_dir / PAUSED_MARK).unlink(missing_ok=True)
            await self._terminate(c, grace_s)

    async def _terminate(self, c: _Container, grace_s: float) -> None:
        await stopping.terminate(self.cgroups, c.cgroup, grace_s, c.config.container_id)
        try:
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await asyncio.shield(c.done)
        except TimeoutError:
            raise ContainerError(
                f"the supervisor of container {c.config.container_id!r} "
                f"(pid {c.supervisor_pid}) did not report the task's exit"
            ) from None

    def state(self, container_id: str) -> str:
        """``"running"``, ``"paused"`` or ``"stopped"`` (ended, not yet destroyed)."""
        return self._get(container_id).state

    async def pause(self, container_id: str) -> None:
        """Freeze every process of a running container (cgroup freezer).

        Raises ContainerError if it is not running, or cannot be frozen within
        FREEZE_TIMEOUT_S (it is then thawed again).
        """
        c = self._get(container_id)
        async with c.kill_lock:
            if c.state != "running" or c.killed:
                raise ContainerError(f"container {container_id!r} cannot be paused: it is {c.state}")
            await stopping.freeze(self.cgroups, c.cgroup, c.done, container_id)
            try:
                # Kept on disk so a restarted agent leaves it paused (see recover).
                (c.meta_dir / PAUSED_MARK).touch()
            except OSError as e:
                self.cgroups.set_frozen(c.cgroup, False)
                raise ContainerError(f"container {container_id!r} cannot be paused: {e}") from e
            c.paused = True
            log.info("container.paused", container_id=container_id)

    async def resume(self, container_id: str) -> None:
        """Thaw a paused container; raises ContainerError if it is not paused."""
        c = self._get(container_id)
        async with c.kill_lock:
            if c.state != "paused":
                raise ContainerError(f"container {container_id!r} cannot be resumed: it is {c.state}")
            self.cgroups.set_frozen(c.cgroup, False)
            c.paused = False
            (c.meta_dir / PAUSED_MARK).unlink(missing_ok=True)
            log.info("container.resumed", container_id=container_id)

    def _start_watches(self, c: _Container) -> None:
        if c.watches:
            return
        for isolator in self.isolators:
            if isolator.watches(c.config):
                c.watches.append(asyncio.ensure_future(self._watch_with(isolator, c)))

    async def _watch_with(self, isolator: Isolator, c: _Container) -> None:
        """Kill the container at once when ``isolator`` finds it over a limit."""
        found = await isolator.watch(Watched(c.config, c.meta_dir, c.done))
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
        """Live statistics; disk is the last background measurement (0 before the first)."""
        c = self._get(container_id)
        stats = self.cgroups.stats(c.cgroup)
        disk_used = self._disk.usage(container_id)["disk_bytes"]
        return Usage(
            cpu_time_s=stats.cpu_time_ns / 1e9,
            mem_bytes=stats.mem_bytes,
            mem_peak_bytes=stats.mem_peak_bytes,
            pids=stats.pids,
            mem_limit_bytes=stats.mem_limit_bytes,
            pids_limit=stats.pids_limit,
            disk_bytes=disk_used,
            disk_limit_bytes=c.config.disk_bytes or 0,
            state=c.state,
        )

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
        if not c.done.done() or self.cgroups.procs(c.cgroup):
            await self.kill(container_id, grace_s=0.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REMOVE_TIMEOUT_S
        # Off the event loop: on v1 removal reclaims the task's page cache first.
        while not await asyncio.to_thread(self.cgroups.remove, c.cgroup):
            if loop.time() >= deadline:
                raise CgroupError(
                    f"cgroup of container {container_id!r} still busy after {REMOVE_TIMEOUT_S} s"
                )
            await asyncio.sleep(POLL_MIN_S)
        try:
            async with asyncio.timeout(KILL_TIMEOUT_S):
                await asyncio.shield(c.supervisor_gone)
        except TimeoutError:
            log.warning(
                "container.supervisor_lingers",
                container_id=container_id,
                supervisor_pid=c.supervisor_pid,
            )
        shutil.rmtree(c.meta_dir, ignore_errors=True)
        for isolator in self.isolators:
            isolator.cleanup(container_id)
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
        meta_dir = self.work_dir / "containers" / container_id
        try:
            record = reattach.read_record(meta_dir)
        except reattach.RecordError as e:
            raise ContainerError(f"{meta_dir / 'container.json'}: {e}") from None
        if not self._prefix_ready:
            self.cgroups.prepare_prefix(self.cgroup_prefix)
            self._prefix_ready = True
        self._adopted_prefix = True
        loop = asyncio.get_running_loop()
        if config is None:
            config = ContainerConfig(
                container_id=container_id, argv=("?",), env={}, sandbox=sandbox, cpus_milli=1, mem_bytes=1
            )
        c = _Container(
            config=config,
            cgroup=f"{self.cgroup_prefix}/{container_id}",
            meta_dir=meta_dir,
            supervisor_pid=0 if record is None else record.supervisor_pid,
            done=loop.create_future(),
            supervisor_gone=loop.create_future(),
            task_pid=0 if record is None else record.task_pid,
            supervisor_start=None if record is None else record.supervisor_start,
        )
        self._containers[container_id] = c
        pidfd = (
            None
            if record is None or rebooted
            else reattach.open_process(record.supervisor_pid, record.supervisor_start)
        )
        ended = (meta_dir / "exit_status.json").exists()
        if pidfd is None:
            c.supervisor_gone.set_result(None)
            if ended:
                c.done.set_result(self._termination(c))
                return "ended"
            c.done.set_result(Termination(None, None, None, False, "", "no exit status was recorded"))
            return "lost"

        def on_supervisor_exit() -> None:
            loop.remove_reader(pidfd)
            # Ours to reap only if this process adopted it (a subreaper above it).
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
            os.close(pidfd)
            c.supervisor_gone.set_result(None)
            self._recovered_done(c)

        def unwatch() -> None:
            if not c.supervisor_gone.done():
                loop.remove_reader(pidfd)
                os.close(pidfd)

        loop.add_reader(pidfd, on_supervisor_exit)
        c.unwatch = unwatch
        # An agent killed in the middle of a SIGKILL round (freeze, kill, thaw)
        # leaves the cgroup frozen: the task could then neither run nor end.
        # Only a pause the mark on disk vouches for stays.
        mark = meta_dir / PAUSED_MARK
        with contextlib.suppress(OSError, CgroupError):
            if mark.exists() and not ended and self.cgroups.frozen(c.cgroup):
                c.paused = True
            else:
                self.cgroups.set_frozen(c.cgroup, False)
                mark.unlink(missing_ok=True)
        if ended:
            self._recovered_done(c)
            return "ended"
        for isolator in self.isolators:
            isolator.recover(config)
        self._start_watches(c)
        self._recovered[container_id] = c
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_recovered(), name="containerizer-recovered")
        return "running"

    def task_pid(self, container_id: str) -> int:
        """The task's pid as recorded at launch (0 if unknown)."""
        return self._get(container_id).task_pid

    async def enter(
        self, container_id: str, argv: Sequence[str], env: Mapping[str, str] | None, timeout_s: float
    ) -> Outcome:
        """Run ``argv`` inside the running container, confined exactly as its
        task (enter.py), with ``env`` (None: the task's). Raises ContainerError
        if the container is not running or cannot be entered."""
        c = self._get(container_id)
        if c.state != "running" or c.killed or not c.task_pid:
            raise ContainerError(f"container {container_id!r} is {c.state}: it cannot be entered")
        try:
            return await run_inside(c.meta_dir, c.task_pid, argv, env, timeout_s)
        except EnterError as e:
            raise ContainerError(f"container {container_id!r}: {e}") from None

    def can_enter(self, container_id: str) -> bool:
        """Whether ``enter`` has the task's launch spec (a container an agent
        older than enter.py launched has none)."""
        c = self._containers.get(container_id)
        return c is not None and has_spec(c.meta_dir)

    def _recovered_done(self, c: _Container) -> None:
        self._recovered.pop(c.config.container_id, None)
        if not c.done.done():
            c.done.set_result(self._termination(c))

    async def _poll_recovered(self) -> None:
        """Notice exit statuses of re-attached containers (there is no done pipe to
        them any more; the pidfd covers a supervisor that exits, this one a
        supervisor still reaping the task's orphans)."""
        while self._recovered:
            await asyncio.sleep(RECOVERED_POLL_S)
            for c in list(self._recovered.values()):
                if (c.meta_dir / "exit_status.json").exists():
                    self._recovered_done(c)

    async def detach(self) -> None:
        """Stop polling re-attached containers and close the fork server; the
        containers run on (the agent stops without killing tasks), and nothing
        here acts on them any more: a new containerizer takes them over."""
        await self._stop_poller()
        watches = []
        for c in self._containers.values():
            if c.unwatch is not None:
                c.unwatch()
                c.unwatch = None
            for watch in c.watches:
                watch.cancel()
                watches.append(watch)
        await asyncio.gather(*watches, return_exceptions=True)
        if self._fork_server is not None:
            await self._fork_server.close()

    async def _stop_poller(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def cleanup_leftovers(self, keep: set[str]) -> list[str]:
        """Kill and remove containers not in ``keep`` that an earlier agent left:
        their processes, cgroups and records (their sandboxes stay for GC)."""
        found: set[str] = set()
        containers = self.work_dir / "containers"
        if containers.is_dir():
            found |= {d.name for d in containers.iterdir() if d.is_dir()}
        for prefix_dir in self.cgroups.dirs(self.cgroup_prefix):
            if prefix_dir.is_dir():
                found |= {d.name for d in prefix_dir.iterdir() if d.is_dir()}
        leftovers = sorted(found - keep)
        self._adopted_prefix = self._adopted_prefix or bool(found)
        await asyncio.gather(*(self._remove_leftover(containers / c) for c in leftovers))
        return leftovers

    async def _remove_leftover(self, meta_dir: Path) -> None:
        container_id = meta_dir.name
        pidfd = None
        with contextlib.suppress(reattach.RecordError):
            record = reattach.read_record(meta_dir)
            if record is not None:
                pidfd = reattach.open_process(record.supervisor_pid, record.supervisor_start)
        # The task first: its supervisor, still alive, reaps it and leaves;
        # killed first, it would leave the task a zombie of whatever adopts it.
        await self._discard_cgroup(f"{self.cgroup_prefix}/{container_id}")
        if pidfd is not None:
            await self._end_supervisor(pidfd)
        shutil.rmtree(meta_dir, ignore_errors=True)
        log.info("container.leftover_removed", container_id=container_id)

    async def _end_supervisor(self, pidfd: int) -> None:
        """Give a leftover supervisor KILL_TIMEOUT_S to leave on its own, then SIGKILL it."""
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

    async def close(self, grace_s: float = 3.0) -> None:
        """Kill and destroy every container, then remove the cgroup prefix."""
        ids = list(self._containers)
        results = await asyncio.gather(*(self._close_one(i, grace_s) for i in ids), return_exceptions=True)
        for container_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                log.error("container.not_cleaned_up", container_id=container_id, error=str(result))
        await self._stop_poller()
        if self._adopting:
            await asyncio.wait(self._adopting, timeout=KILL_TIMEOUT_S + REMOVE_TIMEOUT_S)
        # After the containers and the launches being adopted: the server reaps
        # their supervisors until it leaves.
        if self._fork_server is not None:
            await self._fork_server.close()
        self._disk.close()
        if self._prefix_ready:
            self.cgroups.remove_prefix(self.cgroup_prefix)
            self._prefix_ready = False
        if self._adopted_prefix:
            for prefix_dir in self.cgroups.dirs(self.cgroup_prefix):
                with contextlib.suppress(OSError):
                    prefix_dir.rmdir()
            self._adopted_prefix = False

    async def _close_one(self, container_id: str, grace_s: float) -> None:
        c = self._containers.get(container_id)
        if c is not None and not c.done.done():
            await self.kill(container_id, grace_s)
        await self.destroy(container_id)
