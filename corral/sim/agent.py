"""Simulated agents: the agent protocol, task bookkeeping, at-least-once
status updates and recovery, over simulated containers.

What is real here: the protocol (``AgentMessage``/``MasterMessage``) and the
status update manager of ``slave/status_updates.py`` (uuids, one in flight
per task, retried with backoff until acknowledged, resent on reconnection),
with a journal that survives a crash. What is simulated: containers, whose
run time and end (exit code, OOM) come from a seeded model, and which
outlive the agent process as the real supervisor makes them do.

The rules follow ``slave/agent.py``: a launch already known is ignored; a
kill of an unknown task answers ``TASK_LOST``; a restarted agent reports a
container that ended while it was down from its exit status, and a task
whose container never started ``TASK_LOST``; it re-registers under its id
with every task's latest state; an agent the master calls gone kills its
tasks and registers afresh. No task is ever launched again by recovery.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.codec import is_terminal, resources_from_proto, resources_to_proto
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError, Resources
from corral.sim.ids import Ids
from corral.sim.invariants import Observer
from corral.sim.network import Network, Stream
from corral.slave.status_updates import StatusUpdateManager

AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage
TS = pb.TaskStatus
TaskKey = tuple[str, str]

RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 5.0
TICK_S = 1.0


@dataclass(frozen=True)
class TaskModel:
    """How tasks behave, drawn per task id from the seed (so a task behaves
    the same whatever else the schedule does)."""

    seed: int
    min_run_s: float = 1.0
    max_run_s: float = 90.0
    fail_p: float = 0.08
    oom_p: float = 0.03

    def outcome(self, task_id: str) -> tuple[float, int, bool]:
        """``(run_s, exit_code, oom)`` of a task."""
        rng = random.Random(f"task-{self.seed}-{task_id}")
        run_s = rng.uniform(self.min_run_s, self.max_run_s)
        roll = rng.random()
        if roll < self.oom_p:
            return run_s * rng.random(), 137, True
        if roll < self.oom_p + self.fail_p:
            return run_s, rng.choice((1, 2, 127)), False
        return run_s, 0, False


@dataclass
class Container:
    """A task's container: it outlives the agent process; its supervisor
    records how it ended (``exit_status.json`` in the real agent)."""

    key: TaskKey
    resources: Resources
    exit_code: int
    oom: bool
    ended: bool = False
    killed: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass
class SimTask:
    """An agent's checkpoint of one task (survives a crash)."""

    framework_id: str
    info: pb.TaskInfo
    state: int = pb.TASK_STAGING
    container: Container | None = None
    kill_requested: bool = False


@dataclass
class Durable:
    """What survives an agent crash: its id, frameworks, tasks, and the
    journal of updates not yet acknowledged (``slave/checkpoints.py``)."""

    agent_id: str = ""
    frameworks: dict[str, pb.FrameworkInfo] = field(default_factory=dict)
    tasks: dict[TaskKey, SimTask] = field(default_factory=dict)
    pending: dict[TaskKey, list[pb.TaskStatus]] = field(default_factory=dict)

    # the status update manager's Journal
    def updated(self, status: pb.TaskStatus) -> None:
        copy = pb.TaskStatus()
        copy.CopyFrom(status)
        self.pending.setdefault((status.framework_id, status.task_id), []).append(copy)

    def acknowledged(self, key: TaskKey, uuid: bytes) -> None:
        queue = self.pending.get(key)
        if queue and queue[0].uuid == uuid:
            queue.pop(0)
            if not queue:
                del self.pending[key]


class SimAgent:
    """One agent node: a host (containers) and an agent process on it."""

    def __init__(
        self,
        name: str,
        total: Resources,
        net: Network,
        leader: Callable[[], object | None],
        model: TaskModel,
        ids: Ids,
        observer: Observer,
        record: Callable[[str], None],
    ) -> None:
        self.name = name
        self.total = total
        self.net = net
        self.leader = leader
        self.model = model
        self.ids = ids
        self.observer = observer
        self.record = record
        self.durable = Durable()
        self.up = False
        self.stream: Stream | None = None
        self.registered = False
        self.updates = self._manager()
        self._tasks: list[asyncio.Task[None]] = []
        self._launches: dict[TaskKey, asyncio.TimerHandle] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.net.loop

    def _manager(self) -> StatusUpdateManager:
        return StatusUpdateManager(self._send_updates, journal=self.durable, new_uuid=self.ids.uuid)

    # -- process lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Start the agent process: recover from the checkpoint, then connect."""
        self.up = True
        self.updates = self._manager()
        for key, pending in sorted(self.durable.pending.items()):
            self.updates.restore(key, [_copy(s) for s in pending])
        for key, task in sorted(self.durable.tasks.items()):
            self._recover(key, task)
        self._tasks = [
            asyncio.ensure_future(self._connection_loop()),
            asyncio.ensure_future(self._timer_loop()),
        ]

    def _recover(self, key: TaskKey, task: SimTask) -> None:
        if is_terminal(task.state):
            return  # its end is in the journal and goes again
        c = task.container
        if c is None:
            self._update(
                task, pb.TASK_LOST, TS.REASON_AGENT_RESTARTED, "the agent restarted before it started"
            )
        elif c.ended:
            self._container_report(task, c)
        elif task.state == pb.TASK_STARTING:
            self._update(task, pb.TASK_RUNNING)

    async def crash(self) -> None:
        """The agent process dies (kill -9); containers run on."""
        if not self.up:
            return
        self.up = False
        self.registered = False
        for handle in self._launches.values():
            handle.cancel()
        self._launches.clear()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.stream is not None:
            self.stream.close("UNAVAILABLE", "the agent died")
            self.stream = None

    def stop_containers(self) -> None:
        """End of the simulation: no timer of ours may outlive it."""
        for task in self.durable.tasks.values():
            if task.container is not None and task.container.timer is not None:
                task.container.timer.cancel()

    # -- connection -----------------------------------------------------------------

    async def _connection_loop(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            if await self._session():
                delay = RECONNECT_MIN_S
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _session(self) -> bool:
        """One stream to the leader; True if it registered."""
        node = self.leader()
        if node is None:
            return False
        from corral.sim.masters import MasterNode

        assert isinstance(node, MasterNode)
        first = self._register_message()
        stream = self.net.open(self.name, node.name, node.accept_agent)
        if stream is None:
            await asyncio.sleep(5.0)  # the dial times out
            return False
        closed = asyncio.Event()
        stream.listen(self._receive)
        stream.on_close(lambda _s: closed.set())
        self.stream = stream
        stream.send_to_server(first)
        await closed.wait()
        was_registered = self.registered
        self.registered = False
        self.stream = None
        if stream.close_code == "FAILED_PRECONDITION" and "is gone" in stream.close_message:
            self._start_over()
        return was_registered

    def _register_message(self) -> AgentMessage:
        statuses, infos = [], []
        for key, task in self.durable.tasks.items():
            latest = self.updates.latest(key)
            statuses.append(
                _copy(latest)
                if latest is not None
                else pb.TaskStatus(
                    task_id=task.info.task_id,
                    framework_id=task.framework_id,
                    state=task.state,  # type: ignore[arg-type]
                    agent_id=self.durable.agent_id,
                    source=TS.SOURCE_AGENT,
                    timestamp=self.loop.time(),
                )
            )
            infos.append(task.info)
        info = pb.AgentInfo(
            id=self.durable.agent_id, hostname=self.name, resources=resources_to_proto(self.total)
        )
        return AgentMessage(
            register=AgentMessage.Register(
                agent_info=info,
                tasks=statuses,
                frameworks=list(self.durable.frameworks.values()),
                task_infos=infos,
            )
        )

    def _start_over(self) -> None:
        """The master says this agent is gone: kill everything, forget it, come back new."""
        self.record(f"agent.start_over {self.name}")
        for key, task in list(self.durable.tasks.items()):
            c = task.container
            if c is not None and not c.ended:
                self._end_container(c, killed=True, report=False)
            self.durable.tasks.pop(key, None)
        self.durable.pending.clear()
        self.durable.agent_id = ""
        self.updates = self._manager()

    def _send_updates(self, statuses: list[pb.TaskStatus]) -> bool:
        if self.stream is None or not self.registered:
            return False
        self.stream.send_to_server(
            AgentMessage(status_updates=AgentMessage.StatusUpdates(statuses=[_copy(s) for s in statuses]))
        )
        return True

    async def _timer_loop(self) -> None:
        last_heartbeat = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = self.loop.time()
            if self.stream is not None and self.registered and now - last_heartbeat >= 5.0:
                last_heartbeat = now
                self.stream.send_to_server(AgentMessage(heartbeat=AgentMessage.Heartbeat(timestamp=now)))
            self.updates.tick(now)

    # -- messages from the master ---------------------------------------------------

    def _receive(self, message: object) -> None:
        assert isinstance(message, MasterMessage)
        if not self.up:
            return
        kind = message.WhichOneof("message")
        if kind == "registered":
            self.durable.agent_id = message.registered.agent_id
            self.registered = True
            self.updates.resend_all(self.loop.time())
        elif kind == "run_tasks":
            self._run_tasks(message.run_tasks)
        elif kind == "kill_task":
            self._kill(message.kill_task.framework_id, message.kill_task.task_id)
        elif kind == "acknowledgements":
            now = self.loop.time()
            for ack in message.acknowledgements.acks:
                self._ack(ack, now)
        elif kind == "shutdown_framework":
            fw_id = message.shutdown_framework.framework_id
            for key in sorted(k for k in self.durable.tasks if k[0] == fw_id):
                self._kill(*key)

    def _run_tasks(self, run: MasterMessage.RunTasks) -> None:
        fw = run.framework_info
        self.durable.frameworks[fw.id] = fw
        for info in run.tasks:
            key = (fw.id, info.task_id)
            if key in self.durable.tasks:
                continue  # a launch already here: running it twice would be worse
            task = SimTask(fw.id, _copy_info(info))
            self.durable.tasks[key] = task
            self._update(task, pb.TASK_STARTING)
            delay = self.net.rng.uniform(0.05, 0.5)
            self._launches[key] = self.loop.call_later(delay, self._launch, key)

    def _launch(self, key: TaskKey) -> None:
        self._launches.pop(key, None)
        task = self.durable.tasks.get(key)
        if task is None or is_terminal(task.state):
            return
        if task.kill_requested:
            self._update(task, pb.TASK_KILLED, TS.REASON_TASK_KILLED_BY_REQUEST, "killed before it started")
            return
        try:
            resources = resources_from_proto(task.info.resources)
        except ResourceError:
            resources = Resources()
        run_s, exit_code, oom = self.model.outcome(task.info.task_id)
        c = Container(key, resources, exit_code, oom)
        task.container = c
        self.observer.container_started(self.name, key, resources, self.total)
        self.record(f"container.start {self.name} {key[1]}")
        c.timer = self.loop.call_later(run_s, self._end_container, c, False, True)
        self._update(task, pb.TASK_RUNNING)

    def _end_container(self, c: Container, killed: bool, report: bool) -> None:
        if c.ended:
            return
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        c.ended, c.killed = True, killed
        self.observer.container_ended(self.name, c.key)
        self.record(f"container.end {self.name} {c.key[1]} killed={killed}")
        task = self.durable.tasks.get(c.key)
        if report and self.up and task is not None and task.container is c:
            self._container_report(task, c)

    def _container_report(self, task: SimTask, c: Container) -> None:
        if c.killed:
            self._update(task, pb.TASK_KILLED, TS.REASON_TASK_KILLED_BY_REQUEST, "killed on request")
        elif c.oom:
            self._update(task, pb.TASK_FAILED, TS.REASON_CONTAINER_LIMITATION_MEMORY, "out of memory")
        elif c.exit_code == 0:
            self._update(task, pb.TASK_FINISHED, TS.REASON_COMMAND_EXITED, "command exited with status 0")
        else:
            self._update(task, pb.TASK_FAILED, TS.REASON_COMMAND_EXITED, f"exited with {c.exit_code}")

    def _kill(self, framework_id: str, task_id: str) -> None:
        key = (framework_id, task_id)
        task = self.durable.tasks.get(key)
        if task is None:
            status = pb.TaskStatus(
                task_id=task_id,
                framework_id=framework_id,
                agent_id=self.durable.agent_id,
                state=pb.TASK_LOST,
                reason=TS.REASON_TASK_UNKNOWN,
                message="the agent has no such task",
                source=TS.SOURCE_AGENT,
                timestamp=self.loop.time(),
            )
            self.updates.update(status, self.loop.time())
            return
        task.kill_requested = True
        c = task.container
        if c is None or c.ended or is_terminal(task.state):
            return  # killed at launch, or already ending
        if task.state != pb.TASK_KILLING:
            self._update(task, pb.TASK_KILLING, TS.REASON_TASK_KILLED_BY_REQUEST, "SIGTERM sent")
            grace = min(task.info.kill_policy.grace_period_s or 3.0, 3.0)
            self.loop.call_later(self.net.rng.uniform(0.01, grace), self._end_container, c, True, True)

    def _ack(self, ack: MasterMessage.Acknowledgements.Ack, now: float) -> None:
        key = (ack.framework_id, ack.task_id)
        acked = self.updates.acknowledge(key, ack.uuid, now)
        if acked is not None and is_terminal(acked.state):
            self.observer.terminal_acknowledged(self.name, acked)
            task = self.durable.tasks.get(key)
            if task is not None and is_terminal(task.state) and self.updates.latest(key) is None:
                del self.durable.tasks[key]

    def _update(
        self, task: SimTask, state: int, reason: int = TS.REASON_UNSPECIFIED, message: str = ""
    ) -> None:
        task.state = state
        status = pb.TaskStatus(
            task_id=task.info.task_id,
            framework_id=task.framework_id,
            agent_id=self.durable.agent_id,
            state=state,  # type: ignore[arg-type]
            reason=reason,  # type: ignore[arg-type]
            message=message,
            source=TS.SOURCE_AGENT,
            timestamp=self.loop.time(),
        )
        if task.container is not None and task.container.ended and not task.container.killed:
            status.exit_code = task.container.exit_code
        self.updates.update(status, self.loop.time())

    # -- views ----------------------------------------------------------------------

    def live_tasks(self) -> set[TaskKey]:
        """What this agent would report as not ended."""
        return {k for k, t in self.durable.tasks.items() if not is_terminal(t.state)}

    def unacknowledged(self) -> int:
        return sum(len(v) for v in self.durable.pending.values())


def _copy(status: pb.TaskStatus) -> pb.TaskStatus:
    out = pb.TaskStatus()
    out.CopyFrom(status)
    return out


def _copy_info(info: pb.TaskInfo) -> pb.TaskInfo:
    out = pb.TaskInfo()
    out.CopyFrom(info)
    return out
