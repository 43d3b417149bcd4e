"""The agent's core: task bookkeeping as transitions that return effects. Pure.

:class:`AgentCore` holds what the agent knows (its id, frameworks, tasks,
finished sandboxes, the status update manager) and changes only through its
transitions. Each takes an input (a master message, a container's start or
end, a timer tick, a recovery result, the result of checkpoint writes) and
the time, and returns the effects the runtime must carry out, in order:
send to the master, write a checkpoint, launch, kill or follow a container,
remove a sandbox. It does no I/O, reads no clock and draws no random ids
(``new_uuid`` and ``new_suffix`` are injected), so the same inputs give the
same effects; slave/agent.py is the runtime that carries them out.

Launching is two steps, because nothing may run that a restarted agent could
not find again: :meth:`AgentCore.plan_launch` says which checkpoints to
write, the runtime writes them in order and stops at the first that fails,
and :meth:`AgentCore.launch` takes that result: the tasks whose checkpoints
were written are launched, the others are dropped (TASK_DROPPED).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from corral.codec import Reason, State, is_terminal
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.slave import gc as sandbox_gc
from corral.slave import task_status
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
)
from corral.slave.checkpoints import TaskCheckpoint
from corral.slave.containerizer import Termination
from corral.slave.recovery import Recovered
from corral.slave.status_updates import StatusUpdateManager, TaskKey

AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage
TS = pb.TaskStatus

COMPLETED_SANDBOXES_KEPT = 2000
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class TaskRun:
    """A task this agent runs (or ran, until its terminal update is acknowledged)."""

    framework_id: str
    info: pb.TaskInfo
    container_id: str
    sandbox: Path
    state: State = pb.TASK_STAGING
    kill_requested: bool = False
    #: its container was started (or re-attached)
    launched: bool = False
    pid: int = 0
    #: re-attached after an agent restart
    recovered: bool = False
    #: why the agent itself killed it (a failed health check), for the terminal update
    kill_reason: tuple[Reason, str] | None = None

    @property
    def key(self) -> TaskKey:
        return (self.framework_id, self.info.task_id)


@dataclass(frozen=True)
class LaunchPlan:
    """What :meth:`AgentCore.launch` needs written first, and the tasks it would launch."""

    framework: pb.FrameworkInfo
    #: checkpoints to write in this order (the agent id, the framework, then a task each)
    writes: tuple[Write, ...]
    #: the new tasks, in the order of their SaveTask writes
    tasks: tuple[TaskRun, ...]
    #: task ids the master sent again although they run here already (ignored)
    duplicates: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteFailure:
    """The first checkpoint write of a plan that failed, and why."""

    index: int
    error: str


@dataclass(eq=False)
class AgentCore:
    """The agent's state and transitions (see the module docstring)."""

    work_dir: Path
    #: the random part of a container id (the runtime: 8 hex digits of a uuid4)
    new_suffix: Callable[[], str]
    agent_id: str = ""
    #: the agent id as last checkpointed ("" until written by this process)
    agent_id_saved: str = ""
    default_kill_grace_s: float = 3.0
    #: an update's uuid (None: uuid4, StatusUpdateManager's default)
    new_uuid: Callable[[], bytes] | None = None
    #: told each acknowledged status update's round trip in seconds (the metrics)
    observe_round_trip: Callable[[float], None] | None = None
    tasks: dict[TaskKey, TaskRun] = field(default_factory=dict)
    frameworks: dict[str, pb.FrameworkInfo] = field(default_factory=dict)
    completed: OrderedDict[TaskKey, Path] = field(default_factory=OrderedDict)
    #: when each completed task ended (its sandbox's age for GC)
    completed_at: dict[TaskKey, float] = field(default_factory=dict)
    #: registered with a master: sends go out (else updates wait for resend_all)
    connected: bool = False
    #: unacknowledged updates, retried until acknowledged
    updates: StatusUpdateManager = field(init=False, repr=False)
    #: what the transition under way has asked for so far
    _effects: list[Effect] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.updates = self._new_updates()

    def _new_updates(self) -> StatusUpdateManager:
        observe = self.observe_round_trip
        if self.new_uuid is None:
            return StatusUpdateManager(self._send_updates, journal=self, observe_round_trip=observe)
        return StatusUpdateManager(
            self._send_updates, journal=self, new_uuid=self.new_uuid, observe_round_trip=observe
        )

    def _take(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    # -- the status update manager's ports (effects, in the order they happen) --

    def _send_updates(self, statuses: list[pb.TaskStatus]) -> bool:
        if not self.connected:
            return False
        self._effects.append(Send(AgentMessage(status_updates=AgentMessage.StatusUpdates(statuses=statuses))))
        return True

    def updated(self, status: pb.TaskStatus) -> None:
        """Journal: an update about a task this agent never had is not kept."""
        run = self.tasks.get((status.framework_id, status.task_id))
        if run is not None:
            self._effects.append(JournalUpdate(run.container_id, status))

    def acknowledged(self, key: TaskKey, uuid: bytes) -> None:
        run = self.tasks.get(key)
        if run is not None:
            self._effects.append(JournalAck(run.container_id, uuid, key[1]))

    # -- helpers of transitions ---------------------------------------------------

    def _report(self, run: TaskRun, change: task_status.Change, now: float) -> None:
        run.state = change.state
        status = task_status.status(run.info.task_id, run.framework_id, self.agent_id, change, now)
        self.updates.update(status, now)

    def _report_untracked(
        self, framework_id: str, task_id: str, change: task_status.Change, now: float
    ) -> None:
        """A terminal update about a task this agent does not run (so not journaled)."""
        self.updates.update(task_status.status(task_id, framework_id, self.agent_id, change, now), now)

    def _kill(self, framework_id: str, task_id: str, grace_s: float, now: float) -> None:
        run = self.tasks.get((framework_id, task_id))
        if run is None:
            # Unknown here: say so with a terminal update so the framework is
            # not left waiting for a task the master thinks exists.
            change = task_status.Change(pb.TASK_LOST, TS.REASON_TASK_UNKNOWN, "the agent has no such task")
            self._report_untracked(framework_id, task_id, change, now)
            return
        run.kill_requested = True
        if not run.launched or is_terminal(run.state):
            return  # killed right after its launch (container_launched)
        grace = grace_s or run.info.kill_policy.grace_period_s or self.default_kill_grace_s
        if run.state != pb.TASK_KILLING:
            message = f"SIGTERM sent, SIGKILL after {grace:g}s"
            self._report(
                run, task_status.Change(pb.TASK_KILLING, TS.REASON_TASK_KILLED_BY_REQUEST, message), now
            )
        # The runtime starts a kill unless one is in progress.
        self._effects.append(Kill(run.key, grace))

    def _forget_completed(self, key: TaskKey) -> None:
        path = self.completed.pop(key, None)
        self.completed_at.pop(key, None)
        if path is not None:
            self._effects.append(RemoveSandbox(path))

    # -- the session ------------------------------------------------------------

    def register_message(self, agent_info: pb.AgentInfo, now: float) -> AgentMessage:
        """The registration: every task with its latest state, frameworks, TaskInfos."""
        statuses, infos = [], []
        for key, run in self.tasks.items():
            latest = self.updates.latest(key)
            statuses.append(
                latest
                or task_status.status(
                    run.info.task_id, run.framework_id, self.agent_id, task_status.Change(run.state), now
                )
            )
            infos.append(run.info)
        register = AgentMessage.Register(
            agent_info=agent_info, tasks=statuses, frameworks=list(self.frameworks.values()), task_infos=infos
        )
        return AgentMessage(register=register)

    def registered(self, agent_id: str, now: float) -> list[Effect]:
        """The master accepted the registration under ``agent_id``: every
        unacknowledged update goes again (after the id is checkpointed)."""
        if agent_id != self.agent_id or agent_id != self.agent_id_saved:
            self.agent_id = agent_id
            self._effects.append(SaveAgent(agent_id))
        self.connected = True
        self.updates.resend_all(now)
        return self._take()

    def saved_agent(self, agent_id: str) -> None:
        """Input: a SaveAgent write succeeded."""
        self.agent_id_saved = agent_id

    def disconnected(self) -> None:
        """The stream to the master ended; updates wait for the next registration."""
        self.connected = False

    def start_over(self) -> None:
        """The master declared this agent gone: forget every task and the id
        (the runtime has killed the containers)."""
        self.tasks.clear()
        self.updates = self._new_updates()
        self.agent_id = self.agent_id_saved = ""

    # -- master messages --------------------------------------------------------

    def plan_launch(self, run: MasterMessage.RunTasks) -> LaunchPlan:
        """Step one of a launch: the checkpoints to write (see the module docstring)."""
        fw = run.framework_info
        writes: list[Write] = []
        if self.agent_id != self.agent_id_saved:
            writes.append(SaveAgent(self.agent_id))
        if self.frameworks.get(fw.id) != fw:
            writes.append(SaveFramework(fw))
        tasks, duplicates, keys = [], [], set()
        for info in run.tasks:
            key = (fw.id, info.task_id)
            if key in self.tasks or key in keys:
                # The master re-sent a launch we already have (e.g. after a
                # reconnect): running it twice would be worse than ignoring it.
                duplicates.append(info.task_id)
                continue
            keys.add(key)
            container_id = f"{_SAFE.sub('_', info.task_id)[:80]}-{self.new_suffix()}"
            sandbox = self.work_dir / "sandboxes" / _SAFE.sub("_", fw.id) / container_id
            task = TaskRun(fw.id, info, container_id, sandbox)
            tasks.append(task)
            writes.append(SaveTask(TaskCheckpoint(fw.id, info, container_id, sandbox)))
        return LaunchPlan(fw, tuple(writes), tuple(tasks), tuple(duplicates))

    def launch(self, plan: LaunchPlan, failure: WriteFailure | None, now: float) -> list[Effect]:
        """Step two: launch what was checkpointed, drop the rest with the write's error."""
        failed_at = len(plan.writes) if failure is None else failure.index
        first_task = len(plan.writes) - len(plan.tasks)
        for write in plan.writes[:failed_at]:
            if isinstance(write, SaveAgent):
                self.saved_agent(write.agent_id)
        if failed_at >= first_task:
            self.frameworks[plan.framework.id] = plan.framework
        for i, task in enumerate(plan.tasks):
            if first_task + i >= failed_at:
                assert failure is not None
                message = f"the agent could not checkpoint the task: {failure.error}"
                change = task_status.Change(pb.TASK_DROPPED, TS.REASON_CONTAINER_LAUNCH_FAILED, message)
                self._report_untracked(task.framework_id, task.info.task_id, change, now)
                continue
            self.tasks[task.key] = task
            self._effects.append(Launch(task.key))
        return self._take()

    def kill(self, framework_id: str, task_id: str, grace_s: float, now: float) -> list[Effect]:
        """KillTask (``grace_s`` 0: the task's kill policy, else the agent's default)."""
        self._kill(framework_id, task_id, grace_s, now)
        return self._take()

    def shutdown_framework(self, framework_id: str, now: float) -> list[Effect]:
        """Kill every live task of the framework."""
        for (fw_id, task_id), run in list(self.tasks.items()):
            if fw_id == framework_id and not is_terminal(run.state):
                self._kill(fw_id, task_id, 0.0, now)
        return self._take()

    def acknowledge(self, acks: Iterable[MasterMessage.Acknowledgements.Ack], now: float) -> list[Effect]:
        """Acknowledgements: the next update of each task goes; a task whose
        terminal update is acknowledged is complete (its sandbox is kept for
        logs, at most COMPLETED_SANDBOXES_KEPT of them)."""
        for ack in acks:
            # The ack names its task exactly: no scan of every pending update,
            # which made acknowledging n tasks cost O(n^2).
            key = (ack.framework_id, ack.task_id)
            acked = self.updates.acknowledge(key, ack.uuid, now)
            if acked is None or not is_terminal(acked.state):
                continue
            run = self.tasks.pop(key, None)
            if run is None:
                continue
            self._effects.append(CompleteTask(run.container_id, run.info.task_id, now))
            self.completed[key] = run.sandbox
            self.completed_at[key] = now
            if len(self.completed) > COMPLETED_SANDBOXES_KEPT:
                while len(self.completed) > COMPLETED_SANDBOXES_KEPT:
                    self._forget_completed(next(iter(self.completed)))
                self._effects.append(EmptyTrash())
        return self._take()

    def sandbox(self, key: TaskKey) -> Path | None:
        """A live or completed task's sandbox (for reads of its files)."""
        run = self.tasks.get(key)
        return run.sandbox if run is not None else self.completed.get(key)

    # -- containers -------------------------------------------------------------

    def starting(self, key: TaskKey, now: float) -> list[Effect]:
        """The runtime begins to start the task's container."""
        self._report(self.tasks[key], task_status.Change(pb.TASK_STARTING), now)
        return self._take()

    def container_launched(self, key: TaskKey, pid: int, now: float) -> list[Effect]:
        """Its container runs: RUNNING, or killed at once if a kill came meanwhile."""
        run = self.tasks[key]
        run.pid = pid
        run.launched = True
        if run.kill_requested:
            self._kill(run.framework_id, run.info.task_id, 0.0, now)
        else:
            self._report(run, task_status.Change(pb.TASK_RUNNING), now)
        return self._take()

    def launch_failed(self, key: TaskKey, error: str, now: float) -> list[Effect]:
        self._report(self.tasks[key], task_status.launch_failed(error), now)
        return self._take()

    def container_ended(self, key: TaskKey, termination: Termination, lost: str, now: float) -> list[Effect]:
        """Every process of the task is gone: its terminal update (LOST with
        ``lost`` if its end cannot be known)."""
        run = self.tasks[key]
        if lost:
            change = task_status.lost(lost)
        else:
            change = task_status.terminal(
                termination, recovered=run.recovered, state=run.state, kill_reason=run.kill_reason
            )
        self._report(run, change, now)
        return self._take()

    def agent_error(self, key: TaskKey, error: str, now: float) -> list[Effect]:
        """The runtime failed unexpectedly while running the task."""
        run = self.tasks.get(key)
        if run is not None and not is_terminal(run.state):
            self._report(run, task_status.agent_error(error), now)
        return self._take()

    def health_changed(self, key: TaskKey, healthy: bool, message: str, now: float) -> list[Effect]:
        """A changed health verdict of a RUNNING task (ignored in any other state)."""
        run = self.tasks.get(key)
        if run is not None and run.state == pb.TASK_RUNNING:
            change = task_status.Change(
                pb.TASK_RUNNING, TS.REASON_TASK_HEALTH_CHECK_STATUS_UPDATED, message, {"healthy": healthy}
            )
            self._report(run, change, now)
        return self._take()

    def unhealthy(self, key: TaskKey, message: str, now: float) -> list[Effect]:
        """Too many failed health checks: kill a RUNNING task, TASK_KILLED with REASON_TASK_UNHEALTHY."""
        run = self.tasks.get(key)
        if run is not None and run.state == pb.TASK_RUNNING:
            run.kill_reason = (TS.REASON_TASK_UNHEALTHY, f"killed: {message}")
            self._kill(run.framework_id, run.info.task_id, 0.0, now)
        return self._take()

    # -- timers -----------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        """Resend updates whose retry time has come."""
        self.updates.tick(now)
        return self._take()

    def collect_garbage(
        self, now: float, disk_usage: float, gc_delay_s: float, headroom: float
    ) -> list[Effect]:
        """Remove the finished sandboxes the GC policy names (slave/gc.py)."""
        for key in sandbox_gc.collectable(
            self.completed, self.completed_at, now, gc_delay_s, disk_usage, headroom
        ):
            self._forget_completed(key)
        return self._take()

    # -- recovery ---------------------------------------------------------------

    def recovered(self, found: Recovered, now: float) -> list[Effect]:
        """Take back what an earlier run left (slave/recovery.py found it):
        live tasks are followed again, ended ones reported, none launched again."""
        self.agent_id = found.agent_id
        self.frameworks.update(found.frameworks)
        for done in found.completed:
            self.completed[done.key] = done.sandbox
            self.completed_at[done.key] = done.completed_at
        for task in found.tasks:
            cp = task.checkpoint
            run = TaskRun(
                cp.framework_id, cp.info, cp.container_id, cp.sandbox, recovered=True, launched=True
            )
            if task.state is not None:
                run.state = task.state
            self.tasks[run.key] = run
            self.updates.restore(run.key, task.pending)
            if task.kind is None:
                continue  # its terminal update (if not acknowledged) is all that is left
            if task.kind == "running":
                run.pid = task.pid
                if run.state in (pb.TASK_STAGING, pb.TASK_STARTING):
                    # It exec'd; the update was not made yet.
                    self._report(run, task_status.Change(pb.TASK_RUNNING), now)
                elif run.state == pb.TASK_KILLING:
                    self._kill(run.framework_id, cp.info.task_id, 0.0, now)
            elif run.state == pb.TASK_KILLING:
                run.kill_requested = True
            self._effects.append(Follow(run.key, task.lost))
        return self._take()
