"""The agent's runtime: dials the master, owns the stream, timers, disk and containers.

One asyncio program, the imperative shell around a pure core:

- slave/agent_core.py: task bookkeeping, transitions that return effects;
- slave/session.py: reconnect backoff and heartbeats, driven by the clock;
- slave/task_config.py and slave/task_status.py: TaskInfo → ContainerConfig
  and Termination → TaskStatus, pure translations;
- slave/master_link.py: the gRPC stream, redialled with backoff when it breaks;
- slave/task_runner.py: the containers (launch, follow, kill), one asyncio task each;
- slave/recovery.py: what an earlier run left, as a value the core takes.

:class:`Agent` feeds the master's messages, container ends and ticks to the
core with the time of its injected clock and carries out the effects the
core returns (:meth:`Agent._execute`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine
from pathlib import Path

import structlog

from corral import __version__
from corral.codec import attributes_to_proto, resources_to_proto
from corral.metrics import MetricsServer
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError
from corral.slave import gc as sandbox_gc
from corral.slave import metrics as agent_metrics
from corral.slave import recovery, sandbox_files, usage
from corral.slave import resources as detect
from corral.slave import task_config as translate
from corral.slave import work_dir as work_dir_modes
from corral.slave.agent_config import AgentConfig, AgentRejected
from corral.slave.agent_core import COMPLETED_SANDBOXES_KEPT, AgentCore, TaskRun, WriteFailure
from corral.slave.agent_effects import (
    CompleteTask,
    Effect,
    EmptyTrash,
    Follow,
    JournalAck,
    JournalUpdate,
    Kill,
    Launch,
    RemoveSandbox,
    SaveAgent,
    SaveFramework,
    SaveTask,
    Send,
    Write,
    log_context,
)
from corral.slave.checkpoints import Checkpoints, CheckpointWriteError, TaskCheckpoint
from corral.slave.chores import Chores
from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.seccomp import SeccompPolicy
from corral.slave.master_link import MasterLink
from corral.slave.session import Session
from corral.slave.status_updates import StatusUpdateManager, TaskKey
from corral.slave.task_exec import ExecSessions
from corral.slave.task_runner import Clock, TaskRunner
from corral.transport import Credentials

__all__ = [
    "COMPLETED_SANDBOXES_KEPT",
    "Agent",
    "AgentConfig",
    "AgentRejected",
    "Clock",
    "TaskRun",
    "run_agent",
]

log = structlog.get_logger(__name__)
AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage


class Agent:
    """A node agent.

    ``clock``: the wall clock (seconds since the epoch) for status timestamps,
    retries, heartbeats and sandbox ages; the simulation passes a virtual one.

    >>> agent = Agent(AgentConfig(master="127.0.0.1:5050", work_dir=Path("/tmp/a")))  # doctest: +SKIP
    >>> await agent.start(); await agent.registered.wait(); await agent.stop()
    """

    def __init__(
        self, config: AgentConfig, containerizer: Containerizer | None = None, *, clock: Clock = time.time
    ) -> None:
        self.config = config
        self.work_dir = config.work_dir
        self.clock = clock
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
        self.histograms = agent_metrics.AgentHistograms()
        self.core = AgentCore(
            self.work_dir,
            new_suffix=lambda: uuid.uuid4().hex[:8],
            default_kill_grace_s=config.default_kill_grace_s,
            observe_round_trip=self.histograms.status_update_round_trip.observe,
        )
        self.link = MasterLink(
            config.master,
            self._credentials,
            Session(config.reconnect_min_s, config.reconnect_max_s),
            self,
            lambda: self.log,
            reconnect_max_s=config.reconnect_max_s,
        )
        self.runner = TaskRunner(
            self.core,
            self.containerizer,
            self.images,
            self.work_dir,
            lambda: self.host(self.core.agent_id),
            self._execute,
            self.clock,
            image_import_dirs=config.image_import_dirs,
            allowed_host_paths=config.allowed_host_paths,
            registries=config.registries,
            logger=lambda: self.log,
        )
        self._answers: set[asyncio.Task[None]] = set()
        self.execs = ExecSessions(self.containerizer)
        self._main: asyncio.Task[None] | None = None
        self._timers: asyncio.Task[None] | None = None
        self.chores = Chores(self.work_dir, self.images, config.image_gc, config.image_gc_budget)
        self.log = log.bind(hostname=config.hostname)

    # -- what the core knows ------------------------------------------------------

    @property
    def agent_id(self) -> str:
        return self.core.agent_id

    @property
    def tasks(self) -> dict[TaskKey, TaskRun]:
        return self.core.tasks

    @property
    def frameworks(self) -> dict[str, pb.FrameworkInfo]:
        return self.core.frameworks

    @property
    def completed(self) -> OrderedDict[TaskKey, Path]:
        return self.core.completed

    @property
    def completed_at(self) -> dict[TaskKey, float]:
        return self.core.completed_at

    @property
    def updates(self) -> StatusUpdateManager:
        return self.core.updates

    @property
    def connected(self) -> bool:
        """Whether a stream to the leading master is up."""
        return self.link.outq is not None

    def _credentials(self) -> Credentials:
        """The configured credentials; without TLS, claiming ``agent:<hostname>``."""
        creds = self.config.credentials or Credentials()
        return creds if creds.claim else creds.claiming(f"agent:{self.config.hostname}")

    def host(self, agent_id: str) -> translate.Host:
        """What a task's container takes from this agent (read at each launch:
        the config may change while the agent runs)."""
        config = self.config
        return translate.Host(
            agent_id=agent_id,
            total_mem_milli=self.total.scalar("mem"),
            env={k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ},
            allowed_devices=config.allowed_devices,
            task_pids_max=config.task_pids_max,
            user_namespaces=config.user_namespaces,
            resolve_seccomp=SeccompPolicy(config.seccomp_profiles, config.allow_unconfined_seccomp).resolve,
        )

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
        await self._recover()
        self.chores.start()  # what a killed agent was deleting
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
        held = self.runner.tasks()
        await self.execs.stop()
        if kill_tasks:
            await self.containerizer.close()
        else:
            await self.containerizer.detach()
        self.checkpoints.close()
        await self.chores.stop()
        for w in held:
            w.cancel()
        await asyncio.gather(*held, return_exceptions=True)

    async def run(self) -> None:
        """Run until cancelled or rejected by the master."""
        await self.start()
        assert self._main is not None
        await self._main
        if self.fatal is not None:
            raise self.fatal

    async def _recover(self) -> None:
        """Carry on with what an earlier run left (slave/recovery.py)."""
        mode = self.config.recover
        recovery.check_mode(mode)
        started = time.monotonic()
        if mode == "cleanup":
            agent_id, killed = await recovery.clean_up(self.checkpoints, self.containerizer)
            self.core.agent_id = agent_id
            self.log.warning("agent.cleaned_up", agent_id=agent_id, containers_killed=killed)
            return
        found = recovery.inspect(self.checkpoints, self.containerizer, self.work_dir, self._recovered_config)
        if found.rebooted:
            self.log.warning("agent.host_rebooted", tasks=len(found.tasks) + len(found.completed))
        self._execute(self.core.recovered(found, self.clock()))
        removed = await self.containerizer.cleanup_leftovers(set(found.keep))
        self.log.info(
            "agent.recovered",
            agent_id=self.agent_id,
            frameworks=len(self.frameworks),
            leftovers_removed=len(removed),
            elapsed_s=round(time.monotonic() - started, 3),
            **found.counts(),
        )

    def _recovered_config(self, task: TaskCheckpoint, agent_id: str) -> ContainerConfig | None:
        """The limits a re-attached task was launched with (None if its TaskInfo no longer parses)."""
        try:
            return translate.container_config(
                task.info, task.framework_id, task.container_id, task.sandbox, self.host(agent_id)
            )
        except (ResourceError, ContainerError, ValueError, OSError) as e:
            self.log.warning("task.recovered_without_limits", task_id=task.info.task_id, error=str(e))
            return None

    # -- effects --------------------------------------------------------------

    def _write(self, write: Write) -> None:
        """One checkpoint the core asked for; raises CheckpointWriteError."""
        if isinstance(write, SaveAgent):
            self.checkpoints.save_agent(write.agent_id)
        elif isinstance(write, SaveFramework):
            self.checkpoints.save_framework(write.info)
        else:
            self.checkpoints.save_task(write.task)

    def _execute(self, effects: list[Effect]) -> None:
        """Carry out what the core returned, in order."""
        for e in effects:
            try:
                if isinstance(e, Send):
                    self._send(e.message)
                elif isinstance(e, JournalUpdate):
                    self.checkpoints.record_update(e.container_id, e.status)
                elif isinstance(e, JournalAck):
                    # Not fatal: after a restart the update goes once more (a duplicate).
                    self.checkpoints.record_ack(e.container_id, e.uuid)
                elif isinstance(e, CompleteTask):
                    # After a restart its terminal update goes once more: a duplicate.
                    self.checkpoints.complete_task(e.container_id, e.now)
                elif isinstance(e, SaveAgent):
                    # Tasks are launched only once it is saved: a restart without
                    # it would come back as a new agent and orphan them.
                    self._write(e)
                    self.core.saved_agent(e.agent_id)
                elif isinstance(e, SaveFramework | SaveTask):
                    self._write(e)
                elif isinstance(e, RemoveSandbox):
                    failed = sandbox_gc.remove(e.sandbox, self.work_dir, self.checkpoints)
                    if failed is not None:
                        self.checkpoint_failed(failed, container_id=e.sandbox.name)
                elif isinstance(e, EmptyTrash):
                    self.chores.start()
                elif isinstance(e, Launch):
                    self.runner.launch(e.key)
                elif isinstance(e, Kill):
                    self.runner.kill(e.key, e.grace_s)
                elif isinstance(e, Follow):
                    self.runner.follow(e.key, e.lost)
            except CheckpointWriteError as error:
                self.checkpoint_failed(error, **log_context(e))

    def _send(self, message: AgentMessage) -> bool:
        return self.link.send(message)

    # -- the master -----------------------------------------------------------

    @property
    def registered(self) -> asyncio.Event:
        """Set while registered with a master."""
        return self.link.registered

    @property
    def fatal(self) -> BaseException | None:
        """Why the agent stopped for good (the master rejected it), if it did."""
        return self.link.fatal

    @property
    def _stopping(self) -> bool:
        return self.link.stopping

    @_stopping.setter
    def _stopping(self, value: bool) -> None:
        self.link.stopping = value

    def _connection_loop(self) -> Coroutine[object, object, None]:
        return self.link.run()

    def register_message(self) -> AgentMessage:
        """Link: the registration to send first on a new stream."""
        return self.core.register_message(self.agent_info(), self.clock())

    def disconnected(self) -> None:
        """Link: the stream ended."""
        self.core.disconnected()

    def handle(self, message: MasterMessage, outq: asyncio.Queue[AgentMessage | None]) -> None:
        """Link: one message from the master, fed to the core with the time."""
        kind = message.WhichOneof("message")
        now = self.clock()
        if kind == "registered":
            self._on_registered(message.registered, now)
        elif kind == "run_tasks":
            self._on_run_tasks(message.run_tasks, now)
        elif kind == "kill_task":
            kill = message.kill_task
            self._execute(self.core.kill(kill.framework_id, kill.task_id, kill.grace_period_s, now))
        elif kind == "acknowledgements":
            self._execute(self.core.acknowledge(message.acknowledgements.acks, now))
        elif kind == "shutdown_framework":
            self._execute(self.core.shutdown_framework(message.shutdown_framework.framework_id, now))
        elif kind == "read_file":
            fw_id, _, task_id = message.read_file.task_id.partition("/")
            outq.put_nowait(sandbox_files.answer(message.read_file, self.core.sandbox((fw_id, task_id))))
        elif kind == "get_usage":
            answer = usage.collect(self.tasks, self.containerizer, message.get_usage, self.clock)
            self._answer_later(answer, outq)
        elif kind == "exec":
            run = self.tasks.get(tuple(message.exec.task_id.split("/", 1)))  # type: ignore[arg-type]
            self.execs.start(message.exec, run.container_id if run is not None else None, outq)
        elif kind == "exec_input":
            self.execs.feed(message.exec_input)
        elif kind == "cancel_exec":
            self.execs.cancel(message.cancel_exec.request_id)
        elif kind == "error":
            self.log.warning("master.error", message=message.error.message)

    def _on_registered(self, reg: MasterMessage.Registered, now: float) -> None:
        # The link has made the stream this message came on the outgoing one.
        self.link.session.registered(reg.heartbeat_interval_s)
        effects = self.core.registered(reg.agent_id, now)
        self.registered.set()
        self.log = log.bind(hostname=self.config.hostname, agent_id=self.agent_id)
        self.log.info("agent.registered", master=reg.master_info.address)
        self._execute(effects)

    def _on_run_tasks(self, run: MasterMessage.RunTasks, now: float) -> None:
        # Nothing launches unless a restarted agent could find it again: its
        # agent id, framework and task are checkpointed first, in order; after
        # a failed write the rest are dropped (they would fail the same way).
        plan = self.core.plan_launch(run)
        for task_id in plan.duplicates:
            self.log.warning("task.duplicate_launch", task_id=task_id)
        failure = None
        for i, write in enumerate(plan.writes):
            try:
                self._write(write)
            except CheckpointWriteError as e:
                self.checkpoint_failed(e, **log_context(write))
                failure = WriteFailure(i, str(e))
                break
        self._execute(self.core.launch(plan, failure, now))

    async def start_over(self, reason: str) -> None:
        """The master declared this agent gone (its frameworks were told its
        tasks are GONE): kill what still runs and come back as a new agent."""
        self.log.warning("agent.gone", reason=reason, tasks=len(self.tasks))
        await self.runner.cancel_all()
        await self.containerizer.close()
        self.core.start_over()
        self.checkpoints.forget_agent()

    async def _timer_loop(self) -> None:
        next_gc = self.clock() + self.config.gc_interval_s
        while True:
            await asyncio.sleep(0.25)
            now = self.clock()
            if now >= next_gc:
                next_gc = now + self.config.gc_interval_s
                self._collect_garbage(now)
                self.chores.start(images=True)
            if self.link.session.heartbeat_due(now):
                self._send(AgentMessage(heartbeat=AgentMessage.Heartbeat(timestamp=now)))
            self._execute(self.core.tick(now))

    def _collect_garbage(self, now: float) -> None:
        """One GC round (slave/gc.py): measure the work disk, remove what is due."""
        try:
            disk_usage = sandbox_gc.disk_usage(self.work_dir)
        except OSError as e:
            self.log.warning("sandboxes.gc_failed", error=str(e))
            return
        config = self.config
        effects = self.core.collect_garbage(now, disk_usage, config.gc_delay_s, config.gc_disk_headroom)
        self._execute(effects)
        if effects:
            log.info("sandboxes.collected", count=len(effects))

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
        metrics = MetricsServer(config.metrics_listen, agent_metrics.registry([agent], __version__))
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
