"""The agent: dials the master, registers, runs tasks, reports their states.

One asyncio program. The connection loop reconnects with backoff whenever the
stream breaks (a master restart, a network blip) and re-registers under the
same agent id with the tasks it still runs, so nothing silently disappears.
Task processes are owned by the containerizer; status updates by the status
update manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import structlog

from corral import __version__
from corral.codec import (
    Reason,
    State,
    attributes_to_proto,
    is_terminal,
    resources_from_proto,
    resources_to_proto,
)
from corral.detector import LeaderFinder
from corral.metrics import MetricsServer
from corral.proto import agent_pb2, agent_pb2_grpc
from corral.proto import messages_pb2 as pb
from corral.resources import MILLI, ResourceError, Resources
from corral.slave import gc as sandbox_gc
from corral.slave import health, recovery, sandbox_files, usage
from corral.slave import metrics as agent_metrics
from corral.slave import resources as detect
from corral.slave import work_dir as work_dir_modes
from corral.slave.checkpoints import Checkpoints, CheckpointWriteError, TaskCheckpoint
from corral.slave.containerizer import (
    ContainerConfig,
    ContainerError,
    Containerizer,
    Isolation,
    Termination,
)
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.seccomp import SeccompPolicy
from corral.slave.status_updates import StatusUpdateManager, TaskKey
from corral.slave.task_image import with_image
from corral.transport import Credentials, drain, make_channel

log = structlog.get_logger(__name__)
AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage
TS = pb.TaskStatus

COMPLETED_SANDBOXES_KEPT = 2000
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class AgentRejected(Exception):
    """The master refused this agent's registration (bad resources or attributes)."""


@dataclass
class AgentConfig:
    master: str
    work_dir: Path
    resources: Resources | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    hostname: str = field(default_factory=socket.gethostname)
    cgroup_prefix: str = "corral"
    default_kill_grace_s: float = 3.0
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 5.0
    credentials: Credentials | None = None
    #: i-th of n slices of this host, when several agents share it
    share: tuple[int, int] = (0, 1)
    #: how often a task's sandbox is measured against its ``disk`` resource
    disk_watch_interval_s: float = 15.0
    #: processes (and threads) one task may have at once, so a fork bomb
    #: cannot take the node down; None means unlimited
    task_pids_max: int | None = 4096
    #: at start: "reconnect" re-attaches to the tasks an earlier run left,
    #: "cleanup" kills them and forgets them (see slave/recovery.py)
    recover: str = "reconnect"
    #: finished sandboxes are removed this long after their task ended, sooner
    #: as the work disk fills (see slave/gc.py)
    gc_delay_s: float = 7 * 86400.0
    gc_disk_headroom: float = 0.1
    gc_interval_s: float = sandbox_gc.GC_INTERVAL_S
    #: where task images are kept (shared with `corral image`); None: <work_dir>/images
    image_store: Path | None = None
    #: directories under which a task may name an image tarball by path
    #: (``--image-import-dir``); none: tasks name images in the store only
    image_import_dirs: tuple[Path, ...] = ()
    #: host paths (and what is below them) tasks may bind-mount as volumes
    #: (``--allowed-host-paths``); none: tmpfs and sandbox volumes only
    allowed_host_paths: tuple[Path, ...] = ()
    #: serve Prometheus metrics on this HOST:PORT (``--metrics-listen``)
    metrics_listen: str | None = None
    #: seccomp profiles tasks may name besides the default (``--seccomp-profile NAME=PATH``)
    seccomp_profiles: Mapping[str, Path] = field(default_factory=dict)
    #: whether a task may ask for no seccomp filter (``--allow-unconfined-seccomp``)
    allow_unconfined_seccomp: bool = False
    #: host device nodes tasks may ask for (``--allowed-devices``); none by default
    allowed_devices: tuple[str, ...] = ()
    #: run tasks that do not say otherwise in a user namespace (``--user-namespaces``)
    user_namespaces: bool = False


@dataclass
class TaskRun:
    framework_id: str
    info: pb.TaskInfo
    container_id: str
    sandbox: Path
    state: State = pb.TASK_STAGING
    kill_requested: bool = False
    launched: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task[None] | None = None
    kill_task: asyncio.Task[None] | None = None
    pid: int = 0
    #: re-attached after an agent restart
    recovered: bool = False
    #: why the agent itself killed it (a failed health check), for the terminal update
    kill_reason: tuple[Reason, str] | None = None


class Agent:
    """A node agent.

    >>> agent = Agent(AgentConfig(master="127.0.0.1:5050", work_dir=Path("/tmp/a")))  # doctest: +SKIP
    >>> await agent.start(); await agent.registered.wait(); await agent.stop()
    """

    def __init__(self, config: AgentConfig, containerizer: Containerizer | None = None) -> None:
        self.config = config
        self.work_dir = config.work_dir
        image_store = config.image_store or self.work_dir / "images"
        work_dir_modes.secure_work_dir(self.work_dir, image_store)
        self.containerizer = containerizer or Containerizer(
            self.work_dir,
            cgroup_prefix=config.cgroup_prefix,
            disk_watch_interval_s=config.disk_watch_interval_s,
            seccomp_profiles=config.seccomp_profiles,
        )

        self.total = config.resources or detect.detect(self.work_dir, config.share)
        self.images = ImageStore(image_store)
        self.checkpoints = Checkpoints(self.work_dir)
        #: the last checkpoint write that failed, and how many have (see checkpoint_failed)
        self.checkpoint_error = ""
        self.checkpoint_failures = 0
        self._agent_id_saved = ""
        self.agent_id = ""  # learnt from the checkpoints in start()
        self.tasks: dict[TaskKey, TaskRun] = {}
        self._answers: set[asyncio.Task[None]] = set()
        self.frameworks: dict[str, pb.FrameworkInfo] = {}
        self.completed: OrderedDict[TaskKey, Path] = OrderedDict()
        #: when each completed task ended (its sandbox's age for GC)
        self.completed_at: dict[TaskKey, float] = {}
        self.registered = asyncio.Event()
        self.fatal: BaseException | None = None
        self._outq: asyncio.Queue[AgentMessage | None] | None = None
        self._heartbeat_s = 5.0
        self.updates = StatusUpdateManager(self._send_updates, journal=recovery.Journal(self))
        self._main: asyncio.Task[None] | None = None
        self._timers: asyncio.Task[None] | None = None
        self._stopping = False
        self._trash_emptier: asyncio.Task[int] | None = None
        self.log = log.bind(hostname=config.hostname)

    @property
    def connected(self) -> bool:
        """Whether a stream to the leading master is up."""
        return self._outq is not None

    # -- identity -------------------------------------------------------------

    def _save_agent_id(self, agent_id: str) -> bool:
        """Checkpoint the agent id; False (logged) if the disk refused. Tasks
        are launched only once it is saved: a restart without it would come
        back as a new agent and orphan them."""
        try:
            self.checkpoints.save_agent(agent_id)
        except CheckpointWriteError as e:
            self.checkpoint_failed(e)
            return False
        self._agent_id_saved = agent_id
        return True

    def checkpoint_failed(self, error: CheckpointWriteError, **context: object) -> None:
        """A checkpoint write failed (a full disk): log it and keep the reason for operators."""
        self.checkpoint_error = str(error)
        self.checkpoint_failures += 1
        self.log.error("checkpoint.write_failed", error=str(error), **context)

    def agent_info(self) -> pb.AgentInfo:
        return pb.AgentInfo(
            id=self.agent_id,
            hostname=self.config.hostname,
            resources=resources_to_proto(self.total),
            attributes=attributes_to_proto(self.config.attributes),
            work_dir=str(self.work_dir),
            version=__version__,
        )

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the checkpoints (raises CheckpointError if one is damaged), then connect."""
        await recovery.recover(self)
        self._empty_trash()  # what a killed agent was deleting
        self._main = asyncio.create_task(self._connection_loop(), name="agent-connection")
        self._timers = asyncio.create_task(self._timer_loop(), name="agent-timers")

    async def stop(self, kill_tasks: bool = True) -> None:
        """Stop talking to the master; with ``kill_tasks`` also end every task."""
        self._stopping = True
        for t in (self._main, self._timers):
            if t is not None:
                t.cancel()
        await asyncio.gather(
            *(t for t in (self._main, self._timers) if t is not None), return_exceptions=True
        )
        watchers = [r.watcher for r in self.tasks.values() if r.watcher is not None]
        watchers += [r.kill_task for r in self.tasks.values() if r.kill_task is not None]
        if kill_tasks:
            await self.containerizer.close()
        else:
            await self.containerizer.detach()
        self.checkpoints.close()
        if self._trash_emptier is not None:
            # A thread cannot be cancelled: give it a moment; what it leaves, the
            # next start deletes.
            await asyncio.wait({self._trash_emptier}, timeout=5.0)
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    async def run(self) -> None:
        """Run until cancelled or rejected by the master."""
        await self.start()
        assert self._main is not None
        await self._main
        if self.fatal is not None:
            raise self.fatal

    # -- connection -----------------------------------------------------------

    async def _connection_loop(self) -> None:
        delay = self.config.reconnect_min_s
        finder = LeaderFinder(self.config.master)
        await finder.start()
        try:
            while not self._stopping:
                address = await finder.address(timeout=self.config.reconnect_max_s)
                if address is not None:
                    if await self._connect(finder, address):
                        delay = self.config.reconnect_min_s
                    if self.fatal is not None or self._stopping:
                        return
                else:
                    self.log.warning("agent.no_leader", master=self.config.master)
                await asyncio.sleep(delay)
                delay = min(self.config.reconnect_max_s, delay * 2)
        finally:
            await finder.stop()

    def _credentials(self) -> Credentials:
        """The configured credentials; without TLS, claiming ``agent:<hostname>``."""
        creds = self.config.credentials or Credentials()
        return creds if creds.claim else creds.claiming(f"agent:{self.config.hostname}")

    async def _connect(self, finder: LeaderFinder, address: str) -> bool:
        """One session with the master at ``address``; True if it was registered."""
        channel = make_channel(address, self._credentials())
        registered = False
        try:
            await finder.session(self._session(channel), address)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                self.fatal = AgentRejected(e.details() or "registration rejected")
                self.log.error("agent.rejected", reason=e.details())
                return False
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION and "is gone" in (e.details() or ""):
                await self._start_over(e.details() or "")
                return False
            finder.failed(e, address)
            self.log.info("agent.connection_lost", code=e.code().name, details=e.details())
        finally:
            registered = self.registered.is_set()
            self._outq = None
            self.registered.clear()
            await channel.close(None)
        return registered

    async def _session(self, channel: grpc.aio.Channel) -> None:
        stub = agent_pb2_grpc.AgentStub(channel)
        outq: asyncio.Queue[AgentMessage | None] = asyncio.Queue()
        outq.put_nowait(self._register_message())

        call = stub.Connect(drain(outq), metadata=self._credentials().metadata())
        try:
            async for message in call:
                try:
                    self._handle(message, outq)
                except Exception:
                    # One bad message must not take the agent (and its tasks) down.
                    self.log.exception("agent.message_failed", kind=message.WhichOneof("message"))
        finally:
            outq.put_nowait(None)
            call.cancel()

    def _handle(self, message: MasterMessage, outq: asyncio.Queue[AgentMessage | None]) -> None:
        kind = message.WhichOneof("message")
        if kind == "registered":
            self._on_registered(message.registered, outq)
        elif kind == "run_tasks":
            self._on_run_tasks(message.run_tasks)
        elif kind == "kill_task":
            self._spawn_kill(
                message.kill_task.framework_id,
                message.kill_task.task_id,
                message.kill_task.grace_period_s,
            )
        elif kind == "acknowledgements":
            now = time.time()
            for ack in message.acknowledgements.acks:
                self._on_ack(ack, now)
        elif kind == "shutdown_framework":
            self._on_shutdown_framework(message.shutdown_framework.framework_id)
        elif kind == "read_file":
            outq.put_nowait(self._read_file(message.read_file))
        elif kind == "get_usage":
            self._answer_later(usage.collect(self.tasks, self.containerizer, message.get_usage), outq)
        elif kind == "error":
            self.log.warning("master.error", message=message.error.message)

    async def _start_over(self, reason: str) -> None:
        """The master declared this agent gone (its frameworks were told its
        tasks are GONE): kill what still runs and come back as a new agent."""
        self.log.warning("agent.gone", reason=reason, tasks=len(self.tasks))
        for run in self.tasks.values():
            for t in (run.watcher, run.kill_task):
                if t is not None:
                    t.cancel()
        await asyncio.gather(
            *(t for r in self.tasks.values() for t in (r.watcher, r.kill_task) if t is not None),
            return_exceptions=True,
        )
        await self.containerizer.close()
        self.tasks.clear()
        self.updates = StatusUpdateManager(self._send_updates, journal=recovery.Journal(self))
        self.agent_id = self._agent_id_saved = ""
        self.checkpoints.forget_agent()

    def _register_message(self) -> AgentMessage:
        statuses, infos = [], []
        for key, run in self.tasks.items():
            latest = self.updates.latest(key)
            statuses.append(
                latest
                or pb.TaskStatus(
                    task_id=run.info.task_id,
                    framework_id=run.framework_id,
                    state=run.state,
                    agent_id=self.agent_id,
                    source=pb.TaskStatus.SOURCE_AGENT,
                    timestamp=time.time(),
                )
            )
            infos.append(run.info)
        return AgentMessage(
            register=AgentMessage.Register(
                agent_info=self.agent_info(),
                tasks=statuses,
                frameworks=list(self.frameworks.values()),
                task_infos=infos,
            )
        )

    def _on_registered(self, reg: MasterMessage.Registered, outq: asyncio.Queue[AgentMessage | None]) -> None:
        if reg.agent_id != self.agent_id or reg.agent_id != self._agent_id_saved:
            self.agent_id = reg.agent_id
            self._save_agent_id(reg.agent_id)
        self._heartbeat_s = reg.heartbeat_interval_s or 5.0
        self._outq = outq
        self.registered.set()
        self.log = log.bind(hostname=self.config.hostname, agent_id=self.agent_id)
        self.log.info("agent.registered", master=reg.master_info.address)
        self.updates.resend_all(time.time())

    def _send(self, message: AgentMessage) -> bool:
        if self._outq is None:
            return False
        self._outq.put_nowait(message)
        return True

    def _send_updates(self, statuses: list[pb.TaskStatus]) -> bool:
        return self._send(AgentMessage(status_updates=AgentMessage.StatusUpdates(statuses=statuses)))

    async def _timer_loop(self) -> None:
        last_heartbeat = 0.0
        next_gc = time.time() + self.config.gc_interval_s
        while True:
            await asyncio.sleep(0.25)
            now = time.time()
            if now >= next_gc:
                next_gc = now + self.config.gc_interval_s
                try:
                    sandbox_gc.collect(self, now)
                except OSError as e:
                    self.log.warning("sandboxes.gc_failed", error=str(e))
                self._empty_trash()
            if self._outq is not None and now - last_heartbeat >= self._heartbeat_s:
                last_heartbeat = now
                self._send(AgentMessage(heartbeat=AgentMessage.Heartbeat(timestamp=now)))
            self.updates.tick(now)

    # -- tasks ----------------------------------------------------------------

    def _on_run_tasks(self, run: MasterMessage.RunTasks) -> None:
        fw = run.framework_info
        # Nothing launches unless a restarted agent could find it again: its
        # agent id, framework and task are checkpointed first.
        problem = ""
        if self.agent_id != self._agent_id_saved and not self._save_agent_id(self.agent_id):
            problem = self.checkpoint_error
        elif self.frameworks.get(fw.id) != fw:
            try:
                self.checkpoints.save_framework(fw)
            except CheckpointWriteError as e:
                self.checkpoint_failed(e, framework_id=fw.id)
                problem = str(e)
        if not problem:
            self.frameworks[fw.id] = fw
        for info in run.tasks:
            key = (fw.id, info.task_id)
            if key in self.tasks:
                # The master re-sent a launch we already have (e.g. after a
                # reconnect): running it twice would be worse than ignoring it.
                self.log.warning("task.duplicate_launch", task_id=info.task_id)
                continue
            container_id = f"{_SAFE.sub('_', info.task_id)[:80]}-{uuid.uuid4().hex[:8]}"
            sandbox = self.work_dir / "sandboxes" / _SAFE.sub("_", fw.id) / container_id
            task = TaskRun(fw.id, info, container_id, sandbox)
            if not problem:
                try:
                    self.checkpoints.save_task(TaskCheckpoint(fw.id, info, container_id, sandbox))
                except CheckpointWriteError as e:
                    self.checkpoint_failed(e, task_id=info.task_id)
                    problem = str(e)  # the next tasks would fail the same way
            if problem:
                self._drop(fw.id, info.task_id, f"the agent could not checkpoint the task: {problem}")
                continue
            self.tasks[key] = task
            task.watcher = asyncio.create_task(self._run_task(task), name=f"task-{info.task_id}")

    def _drop(self, framework_id: str, task_id: str, message: str) -> None:
        """TASK_DROPPED for a task never started (nothing of it to recover: not checkpointed)."""
        self._report_untracked(
            framework_id, task_id, pb.TASK_DROPPED, TS.REASON_CONTAINER_LAUNCH_FAILED, message
        )

    def _report_untracked(
        self, framework_id: str, task_id: str, state: State, reason: Reason, message: str
    ) -> None:
        """A terminal update about a task this agent does not run (so not journaled)."""
        status = pb.TaskStatus(
            task_id=task_id,
            framework_id=framework_id,
            agent_id=self.agent_id,
            state=state,
            reason=reason,
            message=message,
            source=pb.TaskStatus.SOURCE_AGENT,
            timestamp=time.time(),
        )
        self.updates.update(status, time.time())

    async def _run_task(self, run: TaskRun) -> None:
        info = run.info
        try:
            self._update(run, pb.TASK_STARTING)
            try:
                config = await with_image(
                    self._container_config(run),
                    info,
                    self.images,
                    self.config.image_import_dirs,
                    self.config.allowed_host_paths,
                    lease=self._lease_file(run),
                )
                run.pid = await self.containerizer.launch(config)
            except (ContainerError, ResourceError, OSError) as e:
                self.images.release(self._lease_file(run))
                self._update(
                    run,
                    pb.TASK_FAILED,
                    TS.REASON_CONTAINER_LAUNCH_FAILED,
                    f"could not start the container: {e}",
                )
                return
            run.launched.set()
            if run.kill_requested:
                self._spawn_kill(run.framework_id, info.task_id, 0.0)
            else:
                self._update(run, pb.TASK_RUNNING)
            await self._follow_checked(run)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.exception("task.failed_unexpectedly", task_id=info.task_id)
            if not is_terminal(run.state):
                self._update(run, pb.TASK_FAILED, TS.REASON_CONTAINER_LAUNCH_FAILED, f"agent error: {e}")

    def _spawn_follow(self, run: TaskRun, lost: str) -> asyncio.Task[None]:
        return asyncio.create_task(self._follow_checked(run, lost), name=f"task-{run.info.task_id}")

    async def _follow_checked(self, run: TaskRun, lost: str = "") -> None:
        """:meth:`_follow`, running the task's health check meanwhile (if it has one)."""
        checker = None if lost else health.start(self, run)
        try:
            await self._follow(run, lost)
        finally:
            if checker is not None:
                checker.cancel()

    async def _follow(self, run: TaskRun, lost: str = "") -> None:
        """Wait for a launched (or re-attached) task to end and send its terminal
        update; ``lost`` says why its end cannot be known (it is reported TASK_LOST)."""
        info = run.info
        try:
            termination = await self.containerizer.wait(run.container_id)
            # The main process is gone; the terminal update waits until every
            # other process of the task is gone too (a kill in progress
            # finishes its grace period, leftovers are killed by destroy), so
            # "KILLED" or "FINISHED" means nothing of the task still runs.
            if run.kill_task is not None:
                with contextlib.suppress(Exception):
                    await run.kill_task
            try:
                await self.containerizer.destroy(run.container_id)
            except Exception:
                self.log.exception("task.cleanup_failed", task_id=info.task_id)
            self.images.release(self._lease_file(run))
            if lost:
                self._update(run, pb.TASK_LOST, TS.REASON_AGENT_RESTARTED, lost)
            else:
                self._terminal_update(run, termination)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.exception("task.failed_unexpectedly", task_id=info.task_id)
            if not is_terminal(run.state):
                self._update(run, pb.TASK_FAILED, TS.REASON_CONTAINER_LAUNCH_FAILED, f"agent error: {e}")

    def _lease_file(self, run: TaskRun) -> Path:
        """Holds the task's image layers from `corral image rm` until the container is destroyed."""
        return self.work_dir / "containers" / run.container_id / "layers"

    def _container_config(self, run: TaskRun, prepare: bool = True) -> ContainerConfig:
        """The container a task runs in; ``prepare`` also makes its sandbox
        (not for one re-attached after a restart: its sandbox is its own now)."""
        info = run.info
        wanted = resources_from_proto(info.resources)
        cmd = info.command
        if cmd.shell:
            argv: tuple[str, ...] = ("/bin/sh", "-c", cmd.value)
        else:
            argv = tuple(cmd.arguments) or (cmd.value,)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(run.sandbox),
            "CORRAL_SANDBOX": str(run.sandbox),
            "CORRAL_TASK_ID": info.task_id,
            "CORRAL_FRAMEWORK_ID": run.framework_id,
            "CORRAL_AGENT_ID": self.agent_id,
            "CORRAL_CPUS": f"{wanted.scalar('cpus') / MILLI:g}",
            "CORRAL_MEM_MIB": f"{wanted.scalar('mem') / MILLI:g}",
        }
        ports = wanted.range("ports")
        if ports:
            env["CORRAL_PORTS"] = ",".join(str(p) for b, e in ports.intervals for p in range(b, e + 1))[:4096]
        env.update(cmd.environment)
        mem_milli = wanted.scalar("mem") or self.total.scalar("mem")
        container = info.container
        user = None
        if prepare:
            work_dir_modes.make_sandbox(run.sandbox)
        if container.HasField("uid"):
            user = (container.uid, container.gid if container.HasField("gid") else container.uid)
            if prepare:
                # The task must be able to write its own sandbox (stdout, files).
                os.chown(run.sandbox, *user)
        for i, device in enumerate(container.devices):
            if device not in self.config.allowed_devices:
                raise ContainerError(
                    f"container.devices[{i}]: {device!r} is not offered by this agent "
                    f"(--allowed-devices: {', '.join(self.config.allowed_devices) or 'none'})"
                )
        isolation = Isolation(
            network="none" if container.network == pb.ContainerInfo.NONE else "host",
            hostname=container.hostname or None,
            user=user,
            seccomp_profile=SeccompPolicy(
                self.config.seccomp_profiles, self.config.allow_unconfined_seccomp
            ).resolve(container.seccomp_profile),
            devices=tuple(container.devices),
            user_namespace=(
                container.user_namespace
                if container.HasField("user_namespace")
                else self.config.user_namespaces
            ),
        )
        return ContainerConfig(
            container_id=run.container_id,
            argv=argv,
            env=env,
            sandbox=run.sandbox,
            cpus_milli=wanted.scalar("cpus") or 10,
            mem_bytes=mem_milli * 1024 * 1024 // MILLI,
            isolation=isolation,
            pids_max=self.config.task_pids_max,
            # A task that asked for no disk is not limited (as in Mesos).
            disk_bytes=(wanted.scalar("disk") * 1024 * 1024 // MILLI) or None,
        )

    def recovered_config(self, run: TaskRun) -> ContainerConfig | None:
        """The limits a re-attached task was launched with (None if its TaskInfo no longer parses)."""
        try:
            return self._container_config(run, prepare=False)
        except (ResourceError, ContainerError, ValueError, OSError) as e:
            self.log.warning("task.recovered_without_limits", task_id=run.info.task_id, error=str(e))
            return None

    def _terminal_update(self, run: TaskRun, t: Termination) -> None:
        extra: dict[str, object] = {"stderr_tail": t.stderr_tail}
        if t.exit_code is not None:
            extra["exit_code"] = t.exit_code
        if t.signal is not None:
            extra["signal"] = t.signal
        if t.limitation is not None and t.limitation.kind == "pids" and t.exit_code == 0 and not t.killed:
            # It succeeded despite refused forks: FINISHED, but with the limit said.
            extra.update(limit=t.limitation.limit, peak=t.limitation.peak)
            self._update(
                run,
                pb.TASK_FINISHED,
                TS.REASON_CONTAINER_LIMITATION_PIDS,
                f"command exited with status 0; {t.limitation.message}",
                **extra,
            )
        elif t.limitation is not None:
            reason = {
                "memory": TS.REASON_CONTAINER_LIMITATION_MEMORY,
                "pids": TS.REASON_CONTAINER_LIMITATION_PIDS,
                "disk": TS.REASON_CONTAINER_LIMITATION_DISK,
            }.get(t.limitation.kind, TS.REASON_COMMAND_EXITED)
            extra.update(limit=t.limitation.limit, peak=t.limitation.peak)
            self._update(run, pb.TASK_FAILED, reason, t.limitation.message, **extra)
        elif t.killed or (run.recovered and run.state == pb.TASK_KILLING):
            # Asked to stop, it stopped while no agent watched.
            reason, message = run.kill_reason or (TS.REASON_TASK_KILLED_BY_REQUEST, "killed on request")
            self._update(run, pb.TASK_KILLED, reason, message, **extra)
        elif t.exit_code == 0:
            self._update(
                run,
                pb.TASK_FINISHED,
                TS.REASON_COMMAND_EXITED,
                "command exited with status 0",
                **extra,
            )
        elif t.signal is not None:
            name = (
                signal.Signals(t.signal).name
                if t.signal in {s.value for s in signal.Signals}
                else str(t.signal)
            )
            self._update(
                run,
                pb.TASK_FAILED,
                TS.REASON_COMMAND_EXITED,
                f"command was killed by signal {t.signal} ({name})",
                **extra,
            )
        else:
            self._update(
                run,
                pb.TASK_FAILED,
                TS.REASON_COMMAND_EXITED,
                f"command exited with status {t.exit_code}",
                **extra,
            )

    def _update(
        self,
        run: TaskRun,
        state: State,
        reason: Reason = TS.REASON_UNSPECIFIED,
        message: str = "",
        **extra: object,
    ) -> None:
        run.state = state
        status = pb.TaskStatus(
            task_id=run.info.task_id,
            state=state,
            reason=reason,
            message=message,
            source=pb.TaskStatus.SOURCE_AGENT,
            agent_id=self.agent_id,
            framework_id=run.framework_id,
            timestamp=time.time(),
            **extra,  # type: ignore[arg-type]
        )
        self.updates.update(status, time.time())
        self.log.debug("task.status", task_id=run.info.task_id, state=pb.TaskState.Name(state))

    def _on_ack(self, ack: MasterMessage.Acknowledgements.Ack, now: float) -> None:
        # The ack names its task exactly: no scan of every pending update,
        # which made acknowledging n tasks cost O(n^2).
        key = (ack.framework_id, ack.task_id)
        acked = self.updates.acknowledge(key, ack.uuid, now)
        if acked is not None and is_terminal(acked.state):
            run = self.tasks.pop(key, None)
            if run is not None:
                try:
                    self.checkpoints.complete_task(run.container_id, now)
                except CheckpointWriteError as e:
                    # After a restart its terminal update goes once more: a duplicate.
                    self.checkpoint_failed(e, task_id=run.info.task_id)
                self.completed[key] = run.sandbox
                self.completed_at[key] = now
                if len(self.completed) > COMPLETED_SANDBOXES_KEPT:
                    while len(self.completed) > COMPLETED_SANDBOXES_KEPT:
                        sandbox_gc.remove(self, next(iter(self.completed)))
                    self._empty_trash()

    def _empty_trash(self) -> None:
        """Delete removed sandboxes in a thread, one deleter at a time."""
        if self._trash_emptier is None or self._trash_emptier.done():
            self._trash_emptier = asyncio.create_task(
                asyncio.to_thread(sandbox_gc.empty_trash, self.work_dir), name="agent-empty-trash"
            )

    def _spawn_kill(self, framework_id: str, task_id: str, grace_s: float) -> None:
        run = self.tasks.get((framework_id, task_id))
        if run is None:
            # Unknown here: say so with a terminal update so the framework is
            # not left waiting for a task the master thinks exists.
            message = "the agent has no such task"
            self._report_untracked(framework_id, task_id, pb.TASK_LOST, TS.REASON_TASK_UNKNOWN, message)
            return
        run.kill_requested = True
        if not run.launched.is_set() or is_terminal(run.state):
            return  # _run_task kills it right after launch
        grace = grace_s or run.info.kill_policy.grace_period_s or self.config.default_kill_grace_s
        if run.state != pb.TASK_KILLING:
            self._update(
                run,
                pb.TASK_KILLING,
                TS.REASON_TASK_KILLED_BY_REQUEST,
                f"SIGTERM sent, SIGKILL after {grace:g}s",
            )
        if run.kill_task is None or run.kill_task.done():
            run.kill_task = asyncio.create_task(self._kill(run, grace))

    async def _kill(self, run: TaskRun, grace_s: float) -> None:
        try:
            await self.containerizer.kill(run.container_id, grace_s)
        except Exception:
            self.log.exception("task.kill_failed", task_id=run.info.task_id)

    def _on_shutdown_framework(self, framework_id: str) -> None:
        for (fw_id, task_id), run in list(self.tasks.items()):
            if fw_id == framework_id and not is_terminal(run.state):
                self._spawn_kill(fw_id, task_id, 0.0)

    def _answer_later(
        self, answer: Coroutine[object, object, AgentMessage], outq: asyncio.Queue[AgentMessage | None]
    ) -> None:
        """Send the answer to a master's question once it is ready, off the read loop."""

        async def send() -> None:
            try:
                outq.put_nowait(await answer)
            except Exception:
                self.log.exception("agent.answer_failed")

        task = asyncio.ensure_future(send())
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    # -- sandbox files --------------------------------------------------------

    def _read_file(self, req: MasterMessage.ReadFile) -> AgentMessage:
        def answer(**kw: object) -> AgentMessage:
            return AgentMessage(file_data=AgentMessage.FileData(request_id=req.request_id, **kw))  # type: ignore[arg-type]

        fw_id, _, task_id = req.task_id.partition("/")
        key = (fw_id, task_id)
        sandbox = self.tasks[key].sandbox if key in self.tasks else self.completed.get(key)
        if sandbox is None:
            return answer(error=f"task {task_id!r} has no sandbox on this agent")
        try:
            data, size = sandbox_files.read(sandbox, req.path or "stdout", req.offset, req.length)
        except sandbox_files.SandboxFileError as e:
            return answer(error=str(e))
        return answer(data=data, size=size)


async def run_agent(config: AgentConfig) -> None:
    """Run an agent until SIGTERM/SIGINT; tasks are killed on the way out."""
    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    metrics = None
    if config.metrics_listen:
        metrics = MetricsServer(config.metrics_listen, lambda: agent_metrics.collect(agent, __version__))
        await metrics.start()
    waiter = asyncio.create_task(stop.wait())
    assert agent._main is not None
    await asyncio.wait({waiter, agent._main}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    if metrics is not None:
        await metrics.stop()
    await agent.stop()
    if agent.fatal is not None:
        raise agent.fatal
