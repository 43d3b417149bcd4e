"""Agents that stop answering, driven through the master core with a fake clock:
unreachable (rate-limited), back again, gone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_master_core import Clock, _agent, _launch, _offers, _RegistryStub, drain

from corral.codec import resources_from_proto
from corral.master import wire
from corral.master.core.liveness import unreachable_budget
from corral.master.master import Master, MasterConfig
from corral.master.streams import Outbox
from corral.proto import agent_pb2, scheduler_pb2
from corral.proto import messages_pb2 as pb

Event = scheduler_pb2.Event
CONFIG = MasterConfig(
    agent_reregister_timeout_s=0,
    agent_heartbeat_interval_s=1.0,
    agent_heartbeat_misses=3,
    agent_gone_timeout_s=100.0,
    agent_unreachable_fraction=0.5,
    agent_unreachable_window_s=60.0,
)


def test_the_budget_table() -> None:
    # 10 agents, half may go per minute: 5 at once, then none until the window moves on.
    assert unreachable_budget([], 0.0, 10, 0.5, 60.0) == 5
    assert unreachable_budget([0.0] * 5, 30.0, 10, 0.5, 60.0) == 0
    assert unreachable_budget([0.0] * 5, 60.0, 10, 0.5, 60.0) == 5
    assert unreachable_budget([], 0.0, 3, 0.1, 60.0) == 1  # always at least one
    assert unreachable_budget([0.0] * 50, 1.0, 10, 1.0, 60.0) == 10  # 1.0: no limit


@given(
    st.lists(st.floats(0, 1000), max_size=30),
    st.floats(0, 1000),
    st.integers(1, 100),
    st.floats(0.01, 0.99),
)
def test_never_more_than_the_fraction_in_a_window(marks: list[float], now: float, n: int, f: float) -> None:
    budget = unreachable_budget(marks, now, n, f, 60.0)
    recent = sum(1 for t in marks if now - t < 60.0)
    assert budget >= 0
    assert budget + recent <= max(1, int(f * n)) or budget == 0


def _states(box: Outbox[object], task_id: str) -> list[int]:
    out = []
    for e in drain(box):
        if isinstance(e, Event) and e.type == Event.UPDATE:
            for s in [e.update.status] if e.HasField("update") else [u.status for u in e.updates]:
                if s.task_id == task_id:
                    out.append(s.state)
    return out


def _cluster(
    aware: bool, registry: object = None
) -> tuple[Master, Clock, list[tuple[str, Outbox[object]]], str, Outbox[object]]:
    clock = Clock()
    master = Master(CONFIG, clock=clock)
    master.registry = registry  # type: ignore[assignment]
    agents = [_agent(master, f"a{i}") for i in range(4)]
    fw_box: Outbox[object] = Outbox()
    caps = [pb.FrameworkInfo.PARTITION_AWARE] if aware else []
    fw = master.subscribe(pb.FrameworkInfo(name="fw", capabilities=caps), fw_box)  # type: ignore[arg-type]
    drain(fw_box)
    master.run_allocation()
    for offer in _offers(fw_box):
        n = [a for a, _ in agents].index(offer.agent_id)
        _launch(master, fw.framework_id, offer, f"t{n}")
    for n, (agent_id, _) in enumerate(agents):
        running = pb.TaskStatus(
            task_id=f"t{n}", framework_id=fw.framework_id, agent_id=agent_id, state=pb.TASK_RUNNING, uuid=b"r"
        )
        master.agent_status_updates(agent_id, [running])
    drain(fw_box)
    return master, clock, agents, fw.framework_id, fw_box


def _silence(master: Master, clock: Clock, agents: list[tuple[str, Outbox[object]]], seconds: float) -> None:
    """Every agent but the first stops answering for ``seconds``."""
    clock.now += seconds
    master.agent_heartbeat(agents[0][0])
    master.housekeeping()


@pytest.mark.parametrize("aware", [True, False])
def test_silent_agents_become_unreachable_at_the_rate_limit(aware: bool) -> None:
    master, clock, agents, fw_id, fw_box = _cluster(aware)
    _silence(master, clock, agents, 3.5)
    # 3 silent agents, fraction 0.5 of 4: two now, the third after the window.
    told = {}
    for e in drain(fw_box):
        if isinstance(e, Event) and e.type == Event.UPDATE:
            s = e.update.status
            told[s.task_id] = s.state
    expected = pb.TASK_UNREACHABLE if aware else pb.TASK_LOST
    assert sorted(told.items()) == [("t1", expected), ("t2", expected)]
    assert [master.state.agents[a].unreachable for a, _ in agents] == [False, True, True, False]
    record = master.state.agents[agents[1][0]]
    task = master.state.task(fw_id, "t1") if aware else record.lost_tasks[(fw_id, "t1")]
    assert task is not None
    assert task.status.state == pb.TASK_UNREACHABLE
    # Told LOST, a task steps aside (its id is free) but keeps its resources.
    assert (master.state.task(fw_id, "t1") is None) is not aware
    assert master.state.used_on_agent(record.agent_id) == task.resources
    _silence(master, clock, agents, 30.0)
    assert not master.state.agents[agents[3][0]].unreachable
    _silence(master, clock, agents, 30.0)
    assert master.state.agents[agents[3][0]].unreachable


@pytest.mark.parametrize("aware", [True, False])
def test_an_unreachable_agent_that_comes_back(aware: bool) -> None:
    master, clock, agents, fw_id, fw_box = _cluster(aware)
    _silence(master, clock, agents, 3.5)
    drain(fw_box)
    agent_id = agents[1][0]
    record = master.state.agents[agent_id]
    outbox: Outbox[object] = Outbox()
    running = pb.TaskStatus(task_id="t1", framework_id=fw_id, agent_id=agent_id, state=pb.TASK_RUNNING)
    master.register_agent(wire.agent_to_pb(record.info), record.total, [running], [], outbox)
    kills = [
        m.kill_task.task_id
        for m in drain(outbox)
        if isinstance(m, agent_pb2.MasterMessage) and m.HasField("kill_task")
    ]
    if aware:
        assert _states(fw_box, "t1") == [pb.TASK_RUNNING]  # its real state again
        assert kills == []
    else:
        assert kills == ["t1"]  # told LOST, perhaps replaced: Mesos kills it
    assert not record.unreachable


@pytest.mark.parametrize("aware", [True, False])
def test_an_agent_unreachable_for_too_long_is_gone(aware: bool) -> None:
    master, clock, agents, fw_id, fw_box = _cluster(aware)
    _silence(master, clock, agents, 3.5)
    drain(fw_box)
    _silence(master, clock, agents, 101.0)
    master.housekeeping()
    assert _states(fw_box, "t1") == ([pb.TASK_GONE] if aware else [])
    assert master.state.task(fw_id, "t1") is None
    record = master.state.agents[agents[1][0]]
    assert record.gone
    with pytest.raises(Exception, match="is gone"):
        master.register_agent(wire.agent_to_pb(record.info), record.total, [], [], Outbox())


@pytest.mark.parametrize("aware", [True, False])
def test_reconciliation_answers_what_each_framework_was_told(aware: bool) -> None:
    master, clock, agents, fw_id, fw_box = _cluster(aware)
    _silence(master, clock, agents, 3.5)
    drain(fw_box)
    master.reconcile(fw_id, [("t1", agents[1][0])])
    assert _states(fw_box, "t1") == [pb.TASK_UNREACHABLE if aware else pb.TASK_LOST]


def test_a_framework_told_lost_may_reuse_the_task_id_and_the_old_task_is_killed_apart() -> None:
    master, clock, agents, fw_id, fw_box = _cluster(aware=False)
    _silence(master, clock, agents, 3.5)
    drain(fw_box)
    away = agents[1][0]
    # The framework replaces the lost t1 under the same id, on the agent that answers.
    master.run_allocation()
    offers = [o for o in _offers(fw_box) if o.agent_id == agents[0][0]]
    assert offers
    _launch(master, fw_id, offers[0], "t1")
    new = master.state.task(fw_id, "t1")
    assert new is not None
    assert new.agent_id == agents[0][0]
    assert not [s for s in _states(fw_box, "t1") if s in (pb.TASK_ERROR, pb.TASK_DROPPED)]

    # The old agent comes back, still running the old t1: that one (only) is killed.
    record = master.state.agents[away]
    outbox: Outbox[object] = Outbox()
    running = pb.TaskStatus(task_id="t1", framework_id=fw_id, agent_id=away, state=pb.TASK_RUNNING)
    master.register_agent(wire.agent_to_pb(record.info), record.total, [running], [], outbox)
    kills = [m for m in drain(outbox) if isinstance(m, agent_pb2.MasterMessage) and m.HasField("kill_task")]
    assert [m.kill_task.task_id for m in kills] == ["t1"]
    others = [m for m in drain(agents[0][1]) if isinstance(m, agent_pb2.MasterMessage)]
    assert not [m for m in others if m.HasField("kill_task")]
    assert master.state.task(fw_id, "t1") is new  # not adopted over the new one

    # Relaunching t1 there before the old one has ended is refused, naming why.
    master.run_allocation()
    there = [o for o in _offers(fw_box) if o.agent_id == away]
    assert there
    _launch(master, fw_id, there[0], "t1")
    refused = [e for e in drain(fw_box) if isinstance(e, Event) and e.type == Event.UPDATE]
    assert any("still being killed" in e.update.status.message for e in refused)

    # Its end, from its own agent, is acknowledged for the framework (which was
    # told LOST), gives its resources back and does not touch the new t1.
    killed = pb.TaskStatus(task_id="t1", framework_id=fw_id, agent_id=away, state=pb.TASK_KILLED, uuid=b"k")
    master.agent_status_updates(away, [killed])
    acks = [
        m for m in drain(outbox) if isinstance(m, agent_pb2.MasterMessage) and m.HasField("acknowledgements")
    ]
    assert [a.uuid for m in acks for a in m.acknowledgements.acks] == [b"k"]
    assert _states(fw_box, "t1") == []
    assert new.status.state != pb.TASK_KILLED
    assert not record.lost_tasks
    assert not master.state.used_on_agent(away)


def test_set_aside_tasks_of_a_gone_agent_give_their_resources_back() -> None:
    master, clock, agents, _, _ = _cluster(aware=False)
    _silence(master, clock, agents, 3.5)
    record = master.state.agents[agents[1][0]]
    assert record.lost_tasks
    _silence(master, clock, agents, 101.0)
    master.housekeeping()
    assert record.gone
    assert not record.lost_tasks


def test_after_a_failover_a_returning_duplicate_of_a_live_task_is_killed_not_adopted() -> None:
    # The new leader knows t0 on a0; an agent it never saw reports a t0 of the
    # same framework (told lost before the failover, since replaced).
    master, _, agents, fw_id, fw_box = _cluster(aware=False)
    outbox: Outbox[object] = Outbox()
    total = master.state.agents[agents[0][0]].total
    stale = pb.TaskStatus(task_id="t0", framework_id=fw_id, state=pb.TASK_RUNNING)
    other = master.register_agent(pb.AgentInfo(hostname="back"), total, [stale], [], outbox)
    kills = [m for m in drain(outbox) if isinstance(m, agent_pb2.MasterMessage) and m.HasField("kill_task")]
    assert [m.kill_task.task_id for m in kills] == ["t0"]
    task = master.state.task(fw_id, "t0")
    assert task is not None
    assert task.agent_id == agents[0][0]
    assert not master.state.used_on_agent(other)
    assert _states(fw_box, "t0") == []


def test_a_set_aside_task_is_killed_again_at_every_return_until_it_ends() -> None:
    master, clock, agents, fw_id, _ = _cluster(aware=False)
    _silence(master, clock, agents, 3.5)
    away = agents[1][0]
    record = master.state.agents[away]
    running = pb.TaskStatus(task_id="t1", framework_id=fw_id, agent_id=away, state=pb.TASK_RUNNING)
    for _ in range(2):  # the first kill is lost with the stream; it comes back still running
        outbox: Outbox[object] = Outbox()
        master.register_agent(wire.agent_to_pb(record.info), record.total, [running], [], outbox)
        kills = [
            m for m in drain(outbox) if isinstance(m, agent_pb2.MasterMessage) and m.HasField("kill_task")
        ]
        assert [m.kill_task.task_id for m in kills] == ["t1"]
        master.agent_disconnected(away, outbox)
    # Back once more without it (it ended while away): its resources return.
    master.register_agent(wire.agent_to_pb(record.info), record.total, [], [], Outbox())
    assert not record.lost_tasks
    assert not master.state.used_on_agent(away)


def test_implicit_reconciliation_repeats_lost_for_set_aside_tasks() -> None:
    master, clock, agents, fw_id, fw_box = _cluster(aware=False)
    _silence(master, clock, agents, 3.5)
    drain(fw_box)  # as if the framework missed the TASK_LOST (it was disconnected)
    master.reconcile(fw_id, [])
    told = {}
    for e in drain(fw_box):
        if isinstance(e, Event) and e.type == Event.UPDATE:
            for u in [e.update] if e.HasField("update") else list(e.updates):
                told[u.status.task_id] = u.status.state
    assert told["t1"] == pb.TASK_LOST
    assert told["t0"] == pb.TASK_RUNNING


def test_the_unreachable_mark_survives_a_failover_and_the_stale_copy_is_killed_whoever_returns_first() -> (
    None
):
    stub = _RegistryStub()
    master, clock, agents, fw_id, fw_box = _cluster(aware=False, registry=stub)
    _silence(master, clock, agents, 3.5)  # a1 and a2 unreachable; t1 and t2 told LOST
    drain(fw_box)
    master.run_allocation()
    offer = next(o for o in _offers(fw_box) if o.agent_id == agents[0][0])
    _launch(master, fw_id, offer, "t1")  # the replacement, on a0
    state = stub.registry.load()
    stale, fresh = agents[1][0], agents[0][0]
    assert state.maintenance[stale].unreachable_since > 0

    successor = Master(CONFIG, clock=clock)  # the old leader died; this one knows only the registry
    successor.recover(state)
    fw_info = state.frameworks[fw_id]

    def comes_back(agent_id: str, tasks: list[str]) -> list[str]:
        info = state.agents[agent_id]
        reported = [
            pb.TaskStatus(task_id=t, framework_id=fw_id, agent_id=agent_id, state=pb.TASK_RUNNING)
            for t in tasks
        ]
        box: Outbox[object] = Outbox()
        successor.register_agent(info, resources_from_proto(info.resources), reported, [fw_info], box)
        sent = [m for m in drain(box) if isinstance(m, agent_pb2.MasterMessage)]
        return [m.kill_task.task_id for m in sent if m.HasField("kill_task")]

    assert comes_back(stale, ["t1"]) == ["t1"]  # first back, and still killed: not adopted
    assert successor.state.task(fw_id, "t1") is None
    assert comes_back(fresh, ["t0", "t1"]) == []  # the replacement is adopted, untouched
    task = successor.state.task(fw_id, "t1")
    assert task is not None
    assert task.agent_id == fresh
    # The stale copy's end is acknowledged for the framework and frees its resources.
    killed = pb.TaskStatus(task_id="t1", framework_id=fw_id, agent_id=stale, state=pb.TASK_KILLED, uuid=b"k")
    successor.agent_status_updates(stale, [killed])
    assert not successor.state.agents[stale].lost_tasks
    assert not successor.state.used_on_agent(stale)
    assert task.status.state == pb.TASK_RUNNING
