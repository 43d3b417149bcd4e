"""slave/agent_core.py: the agent's transitions, driven by inputs and the time, no I/O.

Each test plays the runtime: it feeds master messages, container starts and
ends, checkpoint-write results and ticks, and looks at the effects.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from corral.codec import is_terminal
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.slave import agent_core
from corral.slave.agent_core import AgentCore, LaunchPlan, WriteFailure
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
)
from corral.slave.checkpoints import TaskCheckpoint, UpdateStream
from corral.slave.containerizer import Termination
from corral.slave.recovery import CompletedTask, Recovered, RecoveredTask
from corral.slave.status_updates import RETRY_MAX_S

MasterMessage = agent_pb2.MasterMessage
TS = pb.TaskStatus
FW = pb.FrameworkInfo(id="f1", name="batch")
EXITED_0 = Termination(0, None, None, False, "")


def new_core(work_dir: Path = Path("/w")) -> AgentCore:
    counter = itertools.count()
    uuids = itertools.count()
    return AgentCore(
        work_dir,
        new_suffix=lambda: f"{next(counter):08x}",
        new_uuid=lambda: b"u%d" % next(uuids),
    )


def run_tasks(*task_ids: str, framework: pb.FrameworkInfo = FW) -> MasterMessage.RunTasks:
    return MasterMessage.RunTasks(
        framework_info=framework,
        tasks=[pb.TaskInfo(task_id=t, command=pb.CommandInfo(value="true", shell=True)) for t in task_ids],
    )


def launch(core: AgentCore, *task_ids: str, now: float = 1.0) -> list[Effect]:
    """Both steps of a launch, every checkpoint written."""
    plan = core.plan_launch(run_tasks(*task_ids))
    return core.launch(plan, None, now)


def sent(effects: Iterable[Effect]) -> list[pb.TaskStatus]:
    return [s for e in effects if isinstance(e, Send) for s in e.message.status_updates.statuses]


def states(effects: Iterable[Effect]) -> list[tuple[str, str]]:
    return [(s.task_id, pb.TaskState.Name(s.state)) for s in sent(effects)]


def ack(status: pb.TaskStatus) -> MasterMessage.Acknowledgements.Ack:
    return MasterMessage.Acknowledgements.Ack(
        framework_id=status.framework_id, task_id=status.task_id, uuid=status.uuid
    )


def registered(core: AgentCore, agent_id: str = "a1", now: float = 0.0) -> list[Effect]:
    effects = core.registered(agent_id, now)
    for e in effects:
        if isinstance(e, SaveAgent):
            core.saved_agent(e.agent_id)
    return effects


# -- launching ------------------------------------------------------------------


def test_a_launch_checkpoints_the_agent_id_framework_and_tasks_first() -> None:
    core = new_core()
    core.agent_id = "a1"  # learnt, not yet written by this process
    plan = core.plan_launch(run_tasks("t1", "t2"))
    assert [type(w) for w in plan.writes] == [SaveAgent, SaveFramework, SaveTask, SaveTask]
    assert [w.task.container_id for w in plan.writes if isinstance(w, SaveTask)] == [
        "t1-00000000",
        "t2-00000001",
    ]
    assert plan.tasks[0].sandbox == Path("/w/sandboxes/f1/t1-00000000")
    effects = core.launch(plan, None, 1.0)
    assert effects == [Launch(("f1", "t1")), Launch(("f1", "t2"))]
    assert core.agent_id_saved == "a1"
    assert core.frameworks["f1"] == FW
    # The same framework again needs no new write.
    assert [type(w) for w in core.plan_launch(run_tasks("t3")).writes] == [SaveTask]


def test_after_a_failed_write_the_rest_are_dropped_with_its_error() -> None:
    core = new_core()
    registered(core)
    plan = core.plan_launch(run_tasks("t1", "t2", "t3"))
    # writes: framework, t1, t2, t3; t2's failed (a full disk)
    effects = core.launch(plan, WriteFailure(2, "No space left on device"), 1.0)
    assert [e for e in effects if isinstance(e, Launch)] == [Launch(("f1", "t1"))]
    dropped = sent(effects)
    assert [(s.task_id, s.state, s.reason) for s in dropped] == [
        ("t2", pb.TASK_DROPPED, TS.REASON_CONTAINER_LAUNCH_FAILED),
        ("t3", pb.TASK_DROPPED, TS.REASON_CONTAINER_LAUNCH_FAILED),
    ]
    assert dropped[0].message == "the agent could not checkpoint the task: No space left on device"
    assert list(core.tasks) == [("f1", "t1")]
    assert not [e for e in effects if isinstance(e, JournalUpdate)]  # never checkpointed: not journaled


def test_a_failed_framework_write_drops_every_task_and_keeps_the_framework_unknown() -> None:
    core = new_core()
    registered(core)
    effects = core.launch(core.plan_launch(run_tasks("t1")), WriteFailure(0, "EIO"), 1.0)
    assert states(effects) == [("t1", "TASK_DROPPED")]
    assert "f1" not in core.frameworks
    assert not core.tasks


def test_a_launch_the_agent_has_already_is_ignored() -> None:
    core = new_core()
    launch(core, "t1")
    plan = core.plan_launch(run_tasks("t1", "t2", "t2"))
    assert plan.duplicates == ("t1", "t2")
    assert [t.info.task_id for t in plan.tasks] == ["t2"]


def test_a_task_goes_staging_starting_running_finished_with_the_journal_before_each_send() -> None:
    core = new_core()
    registered(core)
    launch(core, "t1")
    key = ("f1", "t1")
    effects = core.starting(key, 2.0) + core.container_launched(key, 4242, 3.0)
    assert states(effects) == [("t1", "TASK_STARTING")]
    assert [type(e) for e in effects] == [JournalUpdate, Send, JournalUpdate]
    assert core.tasks[key].pid == 4242
    assert core.tasks[key].state == pb.TASK_RUNNING
    # RUNNING waits behind the unacknowledged STARTING (one in flight per task).
    (starting,) = sent(effects)
    effects = core.acknowledge([ack(starting)], 4.0)
    assert isinstance(effects[0], JournalAck)
    assert states(effects) == [("t1", "TASK_RUNNING")]
    (running,) = sent(effects)
    core.acknowledge([ack(running)], 5.0)
    effects = core.container_ended(key, EXITED_0, "", 6.0)
    (finished,) = sent(effects)
    assert (finished.state, finished.message, finished.timestamp) == (
        pb.TASK_FINISHED,
        "command exited with status 0",
        6.0,
    )
    effects = core.acknowledge([ack(finished)], 7.0)
    assert effects[-1] == CompleteTask("t1-00000000", "t1", 7.0)
    assert key not in core.tasks
    assert core.completed[key] == Path("/w/sandboxes/f1/t1-00000000")
    assert core.completed_at[key] == 7.0
    assert core.sandbox(key) == core.completed[key]


def test_nothing_is_sent_while_disconnected_and_everything_when_registered() -> None:
    core = new_core()
    launch(core, "t1")
    assert not sent(core.starting(("f1", "t1"), 1.0))
    assert states(registered(core)) == [("t1", "TASK_STARTING")]
    core.disconnected()
    assert not sent(core.tick(1e9))


def test_the_registration_lists_every_task_with_its_latest_state() -> None:
    core = new_core()
    core.agent_id = "a1"
    core.frameworks["f1"] = FW
    launch(core, "t1", "t2")
    core.starting(("f1", "t1"), 1.0)
    message = core.register_message(pb.AgentInfo(id="a1"), now=9.0)
    reg = message.register
    assert [(s.task_id, s.state) for s in reg.tasks] == [("t1", pb.TASK_STARTING), ("t2", pb.TASK_STAGING)]
    assert reg.tasks[1].timestamp == 9.0
    assert reg.tasks[1].agent_id == "a1"
    assert [i.task_id for i in reg.task_infos] == ["t1", "t2"]
    assert list(reg.frameworks) == [FW]


def test_a_new_agent_id_is_checkpointed_and_a_failed_write_is_tried_again() -> None:
    core = new_core()
    assert SaveAgent("a1") in core.registered("a1", 0.0)  # the write fails: no saved_agent
    assert SaveAgent("a1") in core.registered("a1", 1.0)
    core.saved_agent("a1")
    assert SaveAgent("a1") not in core.registered("a1", 2.0)


# -- kills ------------------------------------------------------------------------


def test_a_kill_of_an_unknown_task_answers_lost() -> None:
    core = new_core()
    registered(core)
    (status,) = sent(core.kill("f1", "ghost", 0.0, 1.0))
    assert (status.state, status.reason, status.message) == (
        pb.TASK_LOST,
        TS.REASON_TASK_UNKNOWN,
        "the agent has no such task",
    )


def test_a_kill_before_the_container_started_waits_for_it_then_kills_it() -> None:
    core = new_core()
    registered(core)
    launch(core, "t1")
    key = ("f1", "t1")
    assert core.kill("f1", "t1", 0.0, 1.0) == []
    effects = core.container_launched(key, 7, 2.0)
    assert Kill(key, 3.0) in effects  # the agent's default grace period
    assert core.tasks[key].state == pb.TASK_KILLING
    assert (
        next(e for e in effects if isinstance(e, JournalUpdate)).status.message
        == "SIGTERM sent, SIGKILL after 3s"
    )


def test_a_kill_uses_the_masters_grace_then_the_tasks_policy() -> None:
    core = new_core()
    launch(core, "t1", "t2")
    core.tasks[("f1", "t2")].info.kill_policy.grace_period_s = 30.0
    for key in core.tasks:
        core.container_launched(key, 1, 1.0)
    assert Kill(("f1", "t1"), 5.0) in core.kill("f1", "t1", 5.0, 2.0)
    assert Kill(("f1", "t2"), 30.0) in core.kill("f1", "t2", 0.0, 2.0)
    # A second kill asks again (the runtime starts one only if none runs) but says KILLING once.
    again = core.kill("f1", "t1", 5.0, 3.0)
    assert again == [Kill(("f1", "t1"), 5.0)]


def test_shutting_a_framework_down_kills_its_live_tasks_only() -> None:
    core = new_core()
    launch(core, "t1", "t2")
    core.plan_launch(run_tasks("x", framework=pb.FrameworkInfo(id="f2")))
    for key in core.tasks:
        core.container_launched(key, 1, 1.0)
    core.container_ended(("f1", "t2"), EXITED_0, "", 2.0)
    effects = core.shutdown_framework("f1", 3.0)
    assert [e for e in effects if isinstance(e, Kill)] == [Kill(("f1", "t1"), 3.0)]


def test_an_unhealthy_task_is_killed_and_ends_killed_unhealthy() -> None:
    core = new_core()
    launch(core, "t1")
    key = ("f1", "t1")
    core.container_launched(key, 1, 1.0)
    changed = core.health_changed(key, False, "HTTP check answered 500", 2.0)
    (journaled,) = [e for e in changed if isinstance(e, JournalUpdate)]
    assert journaled.status.healthy is False
    assert journaled.status.state == pb.TASK_RUNNING
    assert Kill(key, 3.0) in core.unhealthy(key, "health check failed 3 times in a row", 3.0)
    effects = core.container_ended(key, Termination(None, 15, None, True, ""), "", 4.0)
    (journaled,) = [e for e in effects if isinstance(e, JournalUpdate)]
    assert (journaled.status.state, journaled.status.reason) == (pb.TASK_KILLED, TS.REASON_TASK_UNHEALTHY)
    assert core.health_changed(key, True, "ok", 5.0) == []  # ended: no more health updates


# -- garbage collection ------------------------------------------------------------


def _complete(core: AgentCore, task_id: str, now: float) -> list[Effect]:
    registered(core, now=now)
    launch(core, task_id, now=now)
    key = ("f1", task_id)
    core.container_launched(key, 1, now)
    core.container_ended(key, EXITED_0, "", now)
    effects: list[Effect] = []
    while core.updates.pending().get(key):
        effects = core.acknowledge([ack(core.updates.pending()[key][0])], now)
    return effects


def test_past_the_cap_the_oldest_finished_sandbox_goes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_core, "COMPLETED_SANDBOXES_KEPT", 2)
    core = new_core()
    for i, task_id in enumerate(["a", "b"]):
        assert not [e for e in _complete(core, task_id, float(i)) if isinstance(e, RemoveSandbox)]
    effects = _complete(core, "c", 2.0)
    assert RemoveSandbox(Path("/w/sandboxes/f1/a-00000000")) in effects
    assert effects[-1] == EmptyTrash()
    assert list(core.completed) == [("f1", "b"), ("f1", "c")]


def test_gc_removes_what_the_policy_names() -> None:
    core = new_core()
    for i, task_id in enumerate(["old", "new"]):
        _complete(core, task_id, float(i * 1000))
    # A week's delay, 10% headroom, the disk 85% full: kept 0.05 weeks (30,240 s).
    assert core.collect_garbage(30_000.0, 0.85, 7 * 86400.0, 0.1) == []
    effects = core.collect_garbage(31_000.0, 0.85, 7 * 86400.0, 0.1)
    assert effects == [RemoveSandbox(Path("/w/sandboxes/f1/old-00000000"))]
    assert list(core.completed) == [("f1", "new")]
    assert ("f1", "old") not in core.completed_at


# -- recovery ----------------------------------------------------------------------


def _checkpoint(task_id: str) -> TaskCheckpoint:
    info = pb.TaskInfo(task_id=task_id)
    return TaskCheckpoint(
        "f1", info, f"{task_id}-c", Path(f"/w/sandboxes/f1/{task_id}-c"), updates=UpdateStream()
    )


def test_recovery_follows_live_tasks_reports_ended_ones_and_launches_nothing() -> None:
    core = new_core()
    found = Recovered(
        agent_id="a1",
        frameworks={"f1": FW},
        completed=[CompletedTask(("f1", "done"), Path("/w/sandboxes/f1/done-c"), 5.0)],
        tasks=[
            RecoveredTask(_checkpoint("exec"), pb.TASK_STARTING, [], "running", pid=11),
            RecoveredTask(_checkpoint("stopping"), pb.TASK_KILLING, [], "running", pid=12),
            RecoveredTask(_checkpoint("gone"), pb.TASK_KILLING, [], "ended"),
            RecoveredTask(_checkpoint("vanished"), pb.TASK_RUNNING, [], "lost", lost="no exit status"),
            RecoveredTask(_checkpoint("reported"), pb.TASK_FINISHED, [], None),
        ],
    )
    effects = core.recovered(found, 10.0)
    assert not [e for e in effects if isinstance(e, Launch)]
    assert [e for e in effects if isinstance(e, Follow)] == [
        Follow(("f1", "exec"), ""),
        Follow(("f1", "stopping"), ""),
        Follow(("f1", "gone"), ""),
        Follow(("f1", "vanished"), "no exit status"),
    ]
    assert Kill(("f1", "stopping"), 3.0) in effects
    # It exec'd while the agent was down: RUNNING is made now (journaled, sent once registered).
    assert [e.status.task_id for e in effects if isinstance(e, JournalUpdate)] == ["exec"]
    assert core.tasks[("f1", "gone")].kill_requested
    assert core.tasks[("f1", "exec")].pid == 11
    assert core.agent_id == "a1"
    assert core.agent_id_saved == ""
    assert core.completed_at[("f1", "done")] == 5.0
    ended = core.container_ended(("f1", "gone"), Termination(None, 15, None, False, ""), "", 11.0)
    assert [e.status.state for e in ended if isinstance(e, JournalUpdate)] == [pb.TASK_KILLED]
    lost = core.container_ended(("f1", "vanished"), EXITED_0, "no exit status", 11.0)
    assert [(e.status.state, e.status.reason) for e in lost if isinstance(e, JournalUpdate)] == [
        (pb.TASK_LOST, TS.REASON_AGENT_RESTARTED)
    ]


def test_starting_over_forgets_every_task_and_the_id() -> None:
    core = new_core()
    registered(core)
    launch(core, "t1")
    core.starting(("f1", "t1"), 1.0)
    core.start_over()
    assert not core.tasks
    assert not core.updates.pending()
    assert core.agent_id == core.agent_id_saved == ""


# -- properties --------------------------------------------------------------------

TASK_IDS = ["t0", "t1", "t2"]


class AgentCoreMachine(RuleBasedStateMachine):
    """Random inputs; after each, the invariants below hold.

    The model is the master's side: what it received, and what it acknowledged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.core = new_core()
        #: the same inputs in the same order must give the same effects
        self.twin = new_core()
        self.now = 0.0
        self.live_launched: set[tuple[str, str]] = set()  # launched and not yet completed
        self.containers: set[tuple[str, str]] = set()  # a container started for the task
        self.journaled: set[bytes] = set()
        self.received: list[pb.TaskStatus] = []

    def step(self, transition: Callable[[AgentCore], list[Effect]]) -> list[Effect]:
        effects = transition(self.core)
        assert transition(self.twin) == effects, "the same inputs gave other effects"
        self.apply(effects)
        return effects

    def apply(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Launch):
                assert e.key not in self.live_launched, f"{e.key} launched twice"
                self.live_launched.add(e.key)
            elif isinstance(e, JournalUpdate):
                self.journaled.add(e.status.uuid)
            elif isinstance(e, CompleteTask):
                key = ("f1", e.task_id)
                self.live_launched.discard(key)
                self.containers.discard(key)
            elif isinstance(e, SaveAgent):
                self.core.saved_agent(e.agent_id)
                self.twin.saved_agent(e.agent_id)
            elif isinstance(e, Send):
                for s in e.message.status_updates.statuses:
                    # A task's update is journaled before it can be sent (those
                    # about tasks the agent does not run are not journaled).
                    untracked = s.state == pb.TASK_DROPPED or s.reason == TS.REASON_TASK_UNKNOWN
                    assert untracked or s.uuid in self.journaled, f"{s.task_id} sent before journaled"
                    self.received.append(s)

    @rule(dt=st.floats(0.0, 30.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.step(lambda c: c.tick(self.now))

    @rule()
    def master_registers_the_agent(self) -> None:
        self.step(lambda c: c.registered("a1", self.now))

    @rule()
    def stream_breaks(self) -> None:
        self.core.disconnected()
        self.twin.disconnected()

    @rule(
        ids=st.lists(st.sampled_from(TASK_IDS), min_size=1, max_size=3), fail_at=st.none() | st.integers(0, 4)
    )
    def master_launches(self, ids: list[str], fail_at: int | None) -> None:
        plans: dict[int, LaunchPlan] = {id(c): c.plan_launch(run_tasks(*ids)) for c in (self.core, self.twin)}
        plan = plans[id(self.core)]
        assert plans[id(self.twin)] == plan
        failure = None if fail_at is None or fail_at >= len(plan.writes) else WriteFailure(fail_at, "EIO")
        self.step(lambda c: c.launch(plans[id(c)], failure, self.now))

    @rule(data=st.data())
    def container_starts(self, data: st.DataObject) -> None:
        waiting = sorted(self.live_launched - self.containers)
        if waiting:
            key = data.draw(st.sampled_from(waiting))
            self.containers.add(key)
            self.step(lambda c: c.starting(key, self.now))
            self.step(lambda c: c.container_launched(key, 100, self.now))

    @rule(data=st.data(), exit_code=st.sampled_from([0, 1, None]))
    def container_ends(self, data: st.DataObject, exit_code: int | None) -> None:
        running = sorted(k for k in self.containers if not is_terminal(self.core.tasks[k].state))
        if running:
            key = data.draw(st.sampled_from(running))
            t = Termination(exit_code, None if exit_code is not None else 9, None, False, "")
            self.step(lambda c: c.container_ended(key, t, "", self.now))

    @rule(task_id=st.sampled_from(TASK_IDS))
    def master_kills(self, task_id: str) -> None:
        self.step(lambda c: c.kill("f1", task_id, 0.0, self.now))

    @precondition(lambda self: self.received)
    @rule(data=st.data())
    def framework_acknowledges(self, data: st.DataObject) -> None:
        # Any update it received: the latest, a stale one, a duplicate.
        status = data.draw(st.sampled_from(self.received))
        self.step(lambda c: c.acknowledge([ack(status)], self.now))

    @rule()
    def a_long_silence_while_registered(self) -> None:
        """Every unacknowledged head is sent again once its retry is due."""
        self.step(lambda c: c.registered("a1", self.now))
        self.now += RETRY_MAX_S + 1
        effects = self.step(lambda c: c.tick(self.now))
        heads = {q[0].uuid for q in self.core.updates.pending().values() if q}
        assert heads == {s.uuid for s in sent(effects)}, "an unacknowledged update was not retried"

    @invariant()
    def tasks_are_kept_under_their_key_and_completed_ones_with_their_end(self) -> None:
        assert all(run.key == key for key, run in self.core.tasks.items())
        assert set(self.core.completed) == set(self.core.completed_at)

    @invariant()
    def every_terminal_update_is_pending_until_acknowledged(self) -> None:
        for key, run in self.core.tasks.items():
            if is_terminal(run.state):
                pending = self.core.updates.pending().get(key, [])
                assert pending, f"{key} ended but its updates are gone"
                assert is_terminal(pending[-1].state), f"{key} ended but its terminal update is gone"


TestAgentCore = AgentCoreMachine.TestCase
TestAgentCore.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
