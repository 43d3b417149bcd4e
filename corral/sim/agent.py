"""Simulated agents: the real agent core over simulated containers.

What is real: :class:`~corral.slave.agent_core.AgentCore` (task bookkeeping,
duplicate launches, kills, the status update manager with its uuids and
retries, completion), the session rules of ``slave/session.py`` (reconnect
backoff, heartbeats, what a session's end means), the TaskInfo →
ContainerConfig and Termination → TaskStatus translations, the checkpoint
contents as ``slave/checkpoints.py``'s :class:`JournalState` keeps them, and
recovery through ``recovery.take_back`` and ``AgentCore.recovered``, the path
a restarted agent takes. :class:`SimAgent` plays ``slave/agent.py``, the
runtime: it feeds the core the master's messages, container ends and ticks
with the virtual time and carries out the effects the core returns, in order.

What is simulated: containers, whose run time and end (exit code, OOM) come
from a seeded model and which outlive the agent process as the real
supervisor makes them do; the disk (the checkpoint contents live in memory
and survive a crash of the agent process); the stream to the master.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.codec import is_terminal, resources_from_proto, resources_to_proto
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError, Resources
from corral.sim.ids import Ids
from corral.sim.invariants import Observer
from corral.sim.network import Network, Stream
from corral.slave import recovery
from corral.slave import task_config as translate
from corral.slave.agent_core import AgentCore
from corral.slave.agent_effects import (
    CompleteTask,
    Effect,
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
)
from corral.slave.checkpoints import JournalState, TaskCheckpoint
from corral.slave.containerizer import ContainerError, Limitation, Termination
from corral.slave.session import Outcome, Session, outcome
from corral.slave.status_updates import TaskKey

AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage

#: the runtime's timer period (the real agent ticks every 0.25 s; retries are
#: 10 s and more and heartbeats 5 s apart, so 1 s changes no decision and
#: costs a quarter of the callbacks)
TICK_S = 1.0
#: a dial to a node that is cut off fails after this long
DIAL_TIMEOUT_S = 5.0


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
    container_id: str
    resources: Resources
    mem_bytes: int
    exit_code: int
    oom: bool
    pid: int
    ended: bool = False
    #: a kill signal was sent (the end follows after the grace period)
    killing: bool = False
    termination: Termination | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


@dataclass
class Durable:
    """What survives an agent crash: ``agent.json`` and the journal's contents."""

    agent_id: str = ""
    journal: JournalState = field(default_factory=JournalState)


class SimAgent:
    """One agent node: a host (containers, a disk) and an agent process on it."""

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
        self.work_dir = Path("/sim") / name
        self.durable = Durable()
        #: the host's containers by id (they outlive the agent process)
        self.containers: dict[str, Container] = {}
        self._pids = 1000
        # -- the agent process (None / empty while it is down)
        self.up = False
        self.core: AgentCore | None = None
        self.session = Session()
        self.stream: Stream | None = None
        self.registered = False
        self.rejected = ""
        self._incarnation = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[TaskKey, asyncio.Handle] = {}
        #: containers this process follows (it is told of their ends)
        self._followed: set[str] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.net.loop

    @property
    def agent_id(self) -> str:
        return self.core.agent_id if self.core is not None else self.durable.agent_id

    # -- process lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Start the agent process: recover from the checkpoints, then connect."""
        self.up = True
        self._incarnation += 1
        self.session = Session()
        self.core = AgentCore(self.work_dir, new_suffix=lambda: self.ids.hex(8), new_uuid=self.ids.uuid)
        journal = self.durable.journal
        found = recovery.take_back(journal.checkpoint(self.durable.agent_id), False, self._verdict)
        self._execute(self.core.recovered(found, self.loop.time()))
        for cid in [c for c in self.containers if c not in found.keep]:
            # A container no checkpointed task owns (Containerizer.cleanup_leftovers).
            self._end(self.containers[cid], killed=True)
            self.containers.pop(cid, None)
        self._tasks = [
            asyncio.ensure_future(self._connection_loop()),
            asyncio.ensure_future(self._timer_loop()),
        ]

    def _verdict(self, task: TaskCheckpoint) -> tuple[str, int]:
        """The containerizer's word on a checkpointed task (Containerizer.recover)."""
        c = self.containers.get(task.container_id)
        if c is None:
            return "lost", 0
        return ("ended", 0) if c.ended else ("running", c.pid)

    async def crash(self) -> None:
        """The agent process dies (kill -9); containers run on."""
        if not self.up:
            return
        self.up = False
        self.registered = False
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        self._followed.clear()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.stream is not None:
            self.stream.close("UNAVAILABLE", "the agent died")
            self.stream = None
        self.core = None

    def stop_containers(self) -> None:
        """End of the simulation: no timer of ours may outlive it."""
        for c in self.containers.values():
            for timer in c.timers:
                timer.cancel()

    # -- effects (slave/agent.py's _execute) ----------------------------------------

    def _write(self, write: Write) -> None:
        if isinstance(write, SaveAgent):
            self.durable.agent_id = write.agent_id
        elif isinstance(write, SaveFramework):
            self.durable.journal.framework(write.info)
        else:
            self.durable.journal.task(write.task)

    def _execute(self, effects: list[Effect]) -> None:
        core = self.core
        assert core is not None
        journal = self.durable.journal
        for e in effects:
            if isinstance(e, Send):
                if self.stream is not None and self.registered:
                    self.stream.send_to_server(e.message)
            elif isinstance(e, JournalUpdate):
                journal.update(e.container_id, e.status)
            elif isinstance(e, JournalAck):
                journal.ack(e.container_id, e.uuid)
            elif isinstance(e, CompleteTask):
                journal.complete(e.container_id, e.now)
            elif isinstance(e, SaveAgent):
                self._write(e)
                core.saved_agent(e.agent_id)
            elif isinstance(e, SaveFramework | SaveTask):
                self._write(e)
            elif isinstance(e, RemoveSandbox):
                journal.forget(e.sandbox.name)
            elif isinstance(e, Launch):
                self._later(e.key, 0.0, self._starting)
            elif isinstance(e, Kill):
                self._kill(e.key, e.grace_s)
            elif isinstance(e, Follow):
                self._follow(e.key, e.lost)

    def _later(self, key: TaskKey, delay: float, fn: Callable[[TaskKey], None]) -> None:
        """What the runtime does in a task of its own: not if the process died meanwhile."""
        incarnation = self._incarnation

        def run() -> None:
            self._pending.pop(key, None)
            if self.up and self._incarnation == incarnation:
                fn(key)

        self._pending[key] = self.loop.call_later(delay, run) if delay else self.loop.call_soon(run)

    # -- containers (slave/task_runner.py) -------------------------------------------

    def _starting(self, key: TaskKey) -> None:
        core = self.core
        if core is None or key not in core.tasks:
            return
        self._execute(core.starting(key, self.loop.time()))
        self._later(key, self.net.rng.uniform(0.05, 0.5), self._started)

    def _started(self, key: TaskKey) -> None:
        core = self.core
        run = core.tasks.get(key) if core is not None else None
        if core is None or run is None:
            return
        now = self.loop.time()
        host = translate.Host(agent_id=core.agent_id, total_mem_milli=self.total.scalar("mem"))
        try:
            config = translate.container_config(
                run.info, run.framework_id, run.container_id, run.sandbox, host
            )
            resources = resources_from_proto(run.info.resources)
        except (ContainerError, ResourceError, ValueError) as e:
            self._execute(core.launch_failed(key, str(e), now))
            return
        run_s, exit_code, oom = self.model.outcome(run.info.task_id)
        self._pids += 1
        c = Container(key, run.container_id, resources, config.mem_bytes, exit_code, oom, self._pids)
        self.containers[c.container_id] = c
        self.observer.container_started(self.name, key, resources, self.total)
        self.record(f"container.start {self.name} {key[1]}")
        c.timers.append(self.loop.call_later(run_s, self._end, c, False))
        self._followed.add(c.container_id)
        self._execute(core.container_launched(key, c.pid, now))

    def _kill(self, key: TaskKey, grace_s: float) -> None:
        core = self.core
        run = core.tasks.get(key) if core is not None else None
        c = self.containers.get(run.container_id) if run is not None else None
        if c is None or c.ended or c.killing:
            return  # a kill in progress goes on
        c.killing = True
        grace = self.net.rng.uniform(0.01, min(grace_s, 3.0))
        c.timers.append(self.loop.call_later(grace, self._end, c, True))

    def _end(self, c: Container, killed: bool) -> None:
        """The container's processes are gone; its supervisor records how."""
        if c.ended:
            return
        for timer in c.timers:
            timer.cancel()
        c.timers = []
        c.ended = True
        if killed:
            c.termination = Termination(None, 15, None, True, "")
        elif c.oom:
            mib = c.mem_bytes // (1024 * 1024)
            limit = Limitation(
                "memory", f"the memory limit of {mib} MiB was reached", c.mem_bytes, c.mem_bytes
            )
            c.termination = Termination(None, 9, limit, False, "")
        else:
            c.termination = Termination(c.exit_code, None, None, False, "")
        self.observer.container_ended(self.name, c.key)
        self.record(f"container.end {self.name} {c.key[1]} killed={killed}")
        if self.up and c.container_id in self._followed:
            self._report_end(c.key)

    def _follow(self, key: TaskKey, lost: str) -> None:
        core = self.core
        assert core is not None
        cid = core.tasks[key].container_id
        self._followed.add(cid)
        c = self.containers.get(cid)
        if lost or c is None or c.ended:
            self._later(key, 0.0, lambda k: self._report_end(k, lost))

    def _report_end(self, key: TaskKey, lost: str = "") -> None:
        """The runner's end of a container: destroy it, then the core makes the update."""
        core = self.core
        run = core.tasks.get(key) if core is not None else None
        if core is None or run is None:
            return
        c = self.containers.pop(run.container_id, None)
        self._followed.discard(run.container_id)
        termination = c.termination if c is not None and c.termination is not None else None
        if termination is None:
            termination, lost = Termination(None, None, None, False, ""), lost or "no exit status"
        self._execute(core.container_ended(key, termination, lost, self.loop.time()))

    # -- the session (slave/master_link.py) -----------------------------------------

    async def _connection_loop(self) -> None:
        while not self.rejected:
            registered = await self._session()
            if self.rejected:
                return
            await asyncio.sleep(self.session.next_delay(registered))

    def _agent_info(self) -> pb.AgentInfo:
        return pb.AgentInfo(id=self.agent_id, hostname=self.name, resources=resources_to_proto(self.total))

    async def _session(self) -> bool:
        """One stream to the leader; True if it registered."""
        node = self.leader()
        core = self.core
        if node is None or core is None:
            return False
        from corral.sim.masters import MasterNode

        assert isinstance(node, MasterNode)
        first = core.register_message(self._agent_info(), self.loop.time())
        stream = self.net.open(self.name, node.name, node.accept_agent)
        if stream is None:
            await asyncio.sleep(DIAL_TIMEOUT_S)
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
        core.disconnected()
        self.session.ended()
        ended = outcome(stream.close_code, stream.close_message)
        if ended is Outcome.GONE:
            self._start_over()
        elif ended is Outcome.REJECTED:
            self.rejected = stream.close_message
            self.observer.violate("agent-rejected", f"the master refused {self.name}: {self.rejected}")
        return was_registered

    def _start_over(self) -> None:
        """The master says this agent is gone: kill everything, forget it, come back new
        (Agent.start_over: cancel the runner, close the containerizer, forget the checkpoints)."""
        self.record(f"agent.start_over {self.name}")
        assert self.core is not None
        self._followed.clear()
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        for c in list(self.containers.values()):
            self._end(c, killed=True)
        self.containers.clear()
        self.core.start_over()
        self.durable = Durable()

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            core = self.core
            if core is None:
                return
            now = self.loop.time()
            if self.stream is not None and self.registered and self.session.heartbeat_due(now):
                self.stream.send_to_server(AgentMessage(heartbeat=AgentMessage.Heartbeat(timestamp=now)))
            self._execute(core.tick(now))

    # -- messages from the master (Agent.handle) ------------------------------------

    def _receive(self, message: object) -> None:
        assert isinstance(message, MasterMessage)
        core = self.core
        if not self.up or core is None:
            return
        kind = message.WhichOneof("message")
        now = self.loop.time()
        if kind == "registered":
            self.registered = True  # the link sends on this stream from now
            self.session.registered(message.registered.heartbeat_interval_s)
            self._execute(core.registered(message.registered.agent_id, now))
        elif kind == "run_tasks":
            # Its own copy, as the wire gives it (the master keeps the message).
            run = MasterMessage.RunTasks()
            run.CopyFrom(message.run_tasks)
            plan = core.plan_launch(run)
            for write in plan.writes:
                self._write(write)  # the simulated disk does not fill up
            self._execute(core.launch(plan, None, now))
        elif kind == "kill_task":
            kill = message.kill_task
            self._execute(core.kill(kill.framework_id, kill.task_id, kill.grace_period_s, now))
        elif kind == "acknowledgements":
            for ack in message.acknowledgements.acks:
                self._acknowledge(core, ack, now)
        elif kind == "shutdown_framework":
            self._execute(core.shutdown_framework(message.shutdown_framework.framework_id, now))

    def _acknowledge(self, core: AgentCore, ack: MasterMessage.Acknowledgements.Ack, now: float) -> None:
        """One ack at a time (the core loops over them the same way), so the
        invariants see which update each one took off the queue."""
        key = (ack.framework_id, ack.task_id)
        head = core.updates.head(key)
        self._execute(core.acknowledge([ack], now))
        if head is not None and is_terminal(head.state) and core.updates.head(key) is not head:
            self.observer.terminal_acknowledged(self.name, head, ack.uuid)

    # -- views ----------------------------------------------------------------------

    def live_tasks(self) -> set[TaskKey]:
        """What this agent would report as not ended."""
        if self.core is not None:
            return {k for k, run in self.core.tasks.items() if not is_terminal(run.state)}
        out = set()
        for t in self.durable.journal.tasks.values():
            latest = t.updates.latest
            if t.completed_at is None and (latest is None or not is_terminal(latest.state)):
                out.add((t.framework_id, t.info.task_id))
        return out

    def unacknowledged(self) -> int:
        if self.core is not None:
            return sum(len(v) for v in self.core.updates.pending().values())
        return sum(len(t.updates.pending) for t in self.durable.journal.tasks.values())
