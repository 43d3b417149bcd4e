"""Invariants of a simulated history, checked as it happens.

The :class:`Observer` is told the ground truth by the simulated agents (a
container started or ended, an acknowledgement took an update off an
agent's queue) and what each framework saw (updates, acknowledgements). Each
check runs at the step that could break it, so a violation names the step
and the simulated time it happened at:

* ``task-twice``: a task id runs in two containers at once (on any agents).
* ``over-commit``: an agent's running containers hold more than it has.
* ``ack-undelivered``: an agent dropped a terminal update as acknowledged
  although its framework never acknowledged that update (by uuid). The
  master may acknowledge it for the framework (with the update's own uuid)
  only when the framework is told another terminal state of the task (the
  LOST of a set-aside task). That LOST can be lost with a broken stream and
  come again by reconciliation (or as UNKNOWN from a new leader, which does
  not know set-aside tasks), so this half is checked when it arrives or,
  failing that, at the end (:meth:`Observer.finish`).
* ``two-ends``: a framework received two different terminal updates (two
  uuids) from agents for one task: after dedup by uuid, once means once.
* ``finished-rerun``: a batch task whose success its framework heard of
  started again.

and at the end, once the faults are healed (see ``run.py``):

* ``disagree``: master and agents disagree on what runs where.
* ``no-progress``: submitted work did not finish within the bound, or
  updates were still unacknowledged on agents.

The checks are pure bookkeeping over plain values; the planted-violation
tests feed them hand-made histories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from corral.codec import is_terminal
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

TaskKey = tuple[str, str]  # (framework_id, task_id)


@dataclass(frozen=True)
class Violation:
    kind: str
    at_s: float
    message: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.at_s:.3f}s: {self.message}"


def batch_task(task_id: str) -> str:
    """The batch task an attempt id belongs to: ``JOB.GROUP.I.aN`` -> ``JOB.GROUP.I``."""
    head, sep, tail = task_id.rpartition(".a")
    return head if sep and tail.isdigit() else task_id


@dataclass
class Observer:
    clock: Callable[[], float]
    violations: list[Violation] = field(default_factory=list)
    #: task key -> the agent whose container runs it now
    running: dict[TaskKey, str] = field(default_factory=dict)
    #: agent -> task key -> what its container holds
    held: dict[str, dict[TaskKey, Resources]] = field(default_factory=dict)
    #: (framework, task) -> uuids of terminal updates from agents it received
    ends: dict[TaskKey, set[bytes]] = field(default_factory=dict)
    #: (framework, uuid) the framework acknowledged
    acked: set[tuple[str, bytes]] = field(default_factory=set)
    #: (framework, batch task) whose FINISHED the framework received
    finished: set[tuple[str, str]] = field(default_factory=set)
    #: (framework, task) told a terminal state by anyone (the master's LOST too)
    told_terminal: set[TaskKey] = field(default_factory=set)
    #: (framework, task) -> what the master acknowledged on the framework's
    #: behalf before the framework was told any terminal state of the task
    owed: dict[TaskKey, str] = field(default_factory=dict)
    started: int = 0

    def violate(self, kind: str, message: str) -> None:
        self.violations.append(Violation(kind, self.clock(), message))

    # -- agents -------------------------------------------------------------------

    def container_started(self, agent: str, key: TaskKey, resources: Resources, total: Resources) -> None:
        self.started += 1
        other = self.running.get(key)
        if other is not None:
            self.violate("task-twice", f"task {key[1]} starts on {agent} while it runs on {other}")
        if (key[0], batch_task(key[1])) in self.finished:
            self.violate(
                "finished-rerun", f"task {batch_task(key[1])} finished, yet {key[1]} starts on {agent}"
            )
        self.running[key] = agent
        mine = self.held.setdefault(agent, {})
        mine[key] = resources
        used = Resources()
        for r in mine.values():
            used = used + r
        if not total.contains(used):
            self.violate("over-commit", f"{agent} runs {used.format()}, more than its {total.format()}")

    def container_ended(self, agent: str, key: TaskKey) -> None:
        if self.running.get(key) == agent:
            del self.running[key]
        self.held.get(agent, {}).pop(key, None)

    def terminal_acknowledged(self, agent: str, status: pb.TaskStatus, ack_uuid: bytes) -> None:
        """An acknowledgement of ``ack_uuid`` took a terminal update off
        ``agent``'s queue. Its framework acknowledged that update, or the
        master did on its behalf, which is right only if the framework hears
        another terminal state of the task: the master's LOST of a task it set
        aside when the agent went unreachable (the framework is not
        partition-aware). That LOST may already have arrived, or be on its
        way, or have been lost with a broken stream and come again as a
        reconciliation answer (LOST, or UNKNOWN from a new leader, which does
        not know set-aside tasks): owed until then."""
        key = (status.framework_id, status.task_id)
        if (status.framework_id, status.uuid) in self.acked:
            return
        what = (
            f"{agent} dropped the {pb.TaskState.Name(status.state)} of {status.task_id} as "
            f"acknowledged; its framework never acknowledged uuid {status.uuid.hex()[:8]}"
        )
        if ack_uuid != status.uuid:
            # Nobody acknowledged this update: an ack of another one took it off.
            self.violate("ack-undelivered", f"{what} (the ack was of {ack_uuid.hex()[:8]})")
            return
        if key not in self.told_terminal:
            self.owed[key] = f"{what} (at {self.clock():.3f}s)"

    # -- frameworks ---------------------------------------------------------------

    def framework_update(self, framework_id: str, status: pb.TaskStatus) -> None:
        if status.state == pb.TASK_UNKNOWN:
            # A reconciliation answer of a master that never heard of the
            # task (a new leader does not know set-aside tasks): the framework
            # treats it as ended (the batch engine runs it again).
            self.owed.pop((framework_id, status.task_id), None)
            return
        if not is_terminal(status.state):
            return
        self.told_terminal.add((framework_id, status.task_id))
        self.owed.pop((framework_id, status.task_id), None)
        if status.state == pb.TASK_FINISHED:
            self.finished.add((framework_id, batch_task(status.task_id)))
        if status.source != pb.TaskStatus.SOURCE_AGENT or not status.uuid:
            return
        seen = self.ends.setdefault((framework_id, status.task_id), set())
        seen.add(status.uuid)
        if len(seen) == 2:
            self.violate("two-ends", f"{framework_id} received two different ends of {status.task_id}")

    def framework_acknowledged(self, framework_id: str, uuid: bytes) -> None:
        self.acked.add((framework_id, uuid))

    # -- after healing ------------------------------------------------------------

    def finish(self) -> None:
        """After healing: every end the master acknowledged for a framework
        has been made up for by a terminal state the framework heard."""
        for _key, what in sorted(self.owed.items()):
            self.violate("ack-undelivered", f"{what}, and it was never told the task ended")
        self.owed.clear()

    def compare(self, master_view: dict[str, set[TaskKey]], agent_view: dict[str, set[TaskKey]]) -> None:
        """Master and agents agree on what runs where (live tasks per agent)."""
        for agent in sorted(set(master_view) | set(agent_view)):
            m, a = master_view.get(agent, set()), agent_view.get(agent, set())
            if m != a:
                only_m = sorted(t for _, t in m - a)[:3]
                only_a = sorted(t for _, t in a - m)[:3]
                self.violate(
                    "disagree",
                    f"on {agent} the master has {len(m)} live tasks, the agent {len(a)} "
                    f"(master only: {only_m}; agent only: {only_a})",
                )
