"""The master core's transitions on their own: inputs in, effects out.

No runtime, no outboxes, no event loop: each test hands ``MasterCore`` an
input with the time and looks at the effects it returns, as the allocator's
tests look at its decisions. A hypothesis state machine drives random
histories (agents and frameworks coming and going, offers, launches,
updates, ticks) and checks what must hold after every step.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from corral.codec import resources_to_proto
from corral.errors import CallError
from corral.master import wire
from corral.master.config import MasterConfig
from corral.master.core.context import Refused
from corral.master.core.domain import MasterInfo
from corral.master.core.effects import (
    AgentLeft,
    AllocateSoon,
    CloseStream,
    Effect,
    SendToAgent,
    SendToFramework,
    WriteRegistry,
)
from corral.master.core.master_core import MasterCore
from corral.master.core.records import AGENTS, FRAMEWORKS, MAINTENANCE
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2, scheduler_pb2
from corral.resources import Resources

Event = scheduler_pb2.Event
Operation = scheduler_pb2.Operation
TOTAL = Resources.parse("cpus:2;mem:1024")
CONFIG = MasterConfig(agent_reregister_timeout_s=0, agent_heartbeat_interval_s=1.0, agent_gone_timeout_s=50.0)


def _core() -> MasterCore:
    ids = (f"id{n}" for n in itertools.count(1))
    return MasterCore(CONFIG, MasterInfo(id="m", start_time=1000.0), lambda prefix: prefix + next(ids))


def _events(effects: list[Effect], stream: int) -> list[Event]:
    return [
        wire.event_to_pb(e.event) for e in effects if isinstance(e, SendToFramework) and e.stream == stream
    ]


def _offers(effects: list[Effect]) -> list[pb.Offer]:
    return [
        o for e in effects if isinstance(e, SendToFramework) for o in wire.event_to_pb(e.event).offers.offers
    ]


def _task(task_id: str, cpus: float = 0.5, mem: int = 64) -> pb.TaskInfo:
    return pb.TaskInfo(
        task_id=task_id,
        name=task_id,
        resources=resources_to_proto(Resources.of(cpus=cpus, mem=mem)),
        command=pb.CommandInfo(shell=True, value="true"),
    )


def _launch(task: pb.TaskInfo) -> Operation:
    return Operation(type=Operation.LAUNCH, launch=Operation.Launch(task_infos=[task]))


def test_subscribe_answers_on_its_stream_and_records_the_framework() -> None:
    core = _core()
    fw, effects = core.subscribe(1000.0, wire.framework_from_pb(pb.FrameworkInfo(name="fw")), stream=7)
    assert [e.type for e in _events(effects, 7)] == [Event.SUBSCRIBED]
    assert WriteRegistry(FRAMEWORKS, fw.framework_id, fw.info) in effects
    assert AllocateSoon() in effects
    assert all(dataclasses.is_dataclass(e) and e.__dataclass_params__.frozen for e in effects)  # type: ignore[attr-defined]


def test_a_second_subscription_ends_the_first_stream() -> None:
    core = _core()
    fw, _ = core.subscribe(1000.0, wire.framework_from_pb(pb.FrameworkInfo(name="fw")), stream=1)
    info = pb.FrameworkInfo(name="fw", id=fw.framework_id)
    _, effects = core.subscribe(1001.0, wire.framework_from_pb(info), stream=2)
    old = _events(effects, 1)
    assert [e.error.code for e in old] == ["ABORTED"]
    sent = next(i for i, e in enumerate(effects) if isinstance(e, SendToFramework) and e.stream == 1)
    assert effects.index(CloseStream(1)) > sent
    assert [e.type for e in _events(effects, 2)] == [Event.SUBSCRIBED]
    # the old stream's end, reported later, changes nothing
    assert core.framework_disconnected(1002.0, fw.framework_id, stream=1) == []
    assert core.state.frameworks[fw.framework_id].connected


def test_offers_are_made_at_now_and_a_lost_agent_rescinds_them() -> None:
    core = _core()
    agent_id, effects = core.register_agent(
        1000.0, wire.agent_from_pb(pb.AgentInfo(hostname="a")), TOTAL, [], [], stream=3
    )
    assert any(isinstance(e, WriteRegistry) and e.kind == AGENTS and e.key == agent_id for e in effects)
    assert any(
        isinstance(e, SendToAgent) and e.stream == 3 and wire.command_to_pb(e.message).HasField("registered")
        for e in effects
    )
    core.subscribe(1000.0, wire.framework_from_pb(pb.FrameworkInfo(name="fw")), stream=4)
    count, effects = core.allocate(1005.0)
    (offer,) = _offers(effects)
    assert count == 1
    assert core.state.offers[offer.id].created_at == 1005.0
    effects = core.agent_disconnected(1006.0, agent_id, stream=3)
    assert CloseStream(3) in effects
    assert AgentLeft(agent_id) in effects
    assert [e.rescind.offer_id for e in _events(effects, 4)] == [offer.id]
    assert core.state.offers == {}
    # a stream the agent no longer uses: nothing happens
    assert core.agent_disconnected(1007.0, agent_id, stream=3) == []


def test_a_refused_call_carries_the_effects_made_before_the_refusal() -> None:
    core = _core()
    fw, _ = core.subscribe(1000.0, wire.framework_from_pb(pb.FrameworkInfo(name="fw")), stream=1)
    with pytest.raises(Refused) as refused:
        core.accept(1001.0, fw.framework_id, ["no-such-offer"], [], None)
    assert isinstance(refused.value, CallError)
    assert refused.value.code == "INVALID_ARGUMENT"
    assert refused.value.effects == [AllocateSoon()]
    assert core.take_effects() == []  # nothing left over for the next transition


def test_a_launch_on_a_rescinded_offer_is_dropped_not_sent() -> None:
    core = _core()
    agent_id, _ = core.register_agent(
        1000.0, wire.agent_from_pb(pb.AgentInfo(hostname="a")), TOTAL, [], [], stream=3
    )
    fw, _ = core.subscribe(1000.0, wire.framework_from_pb(pb.FrameworkInfo(name="fw")), stream=4)
    (offer,) = _offers(core.allocate(1001.0)[1])
    core.drain_agent(1002.0, agent_id)  # rescinds the offer
    effects = core.accept(
        1003.0, fw.framework_id, [offer.id], [wire.operation_from_pb(_launch(_task("t1")), 0)], None
    )
    (update,) = _events(effects, 4)
    assert update.update.status.state == pb.TASK_DROPPED
    assert not [e for e in effects if isinstance(e, SendToAgent)]
    assert core.state.task(fw.framework_id, "t1") is None


def test_updates_carry_the_labels_the_task_was_launched_with_not_the_agents() -> None:
    core = _core()
    agent_id, _ = core.register_agent(
        1000.0, wire.agent_from_pb(pb.AgentInfo(hostname="a")), TOTAL, [], [], stream=3
    )
    fw, _ = core.subscribe(1000.0, wire.framework_from_pb(pb.FrameworkInfo(name="fw")), stream=4)
    (offer,) = _offers(core.allocate(1001.0)[1])
    task = _task("t1")
    task.labels.extend([pb.Label(key="team", value="ml"), pb.Label(key="team", value="infra")])
    core.accept(1002.0, fw.framework_id, [offer.id], [wire.operation_from_pb(_launch(task), 0)], None)
    running = pb.TaskStatus(
        task_id="t1",
        framework_id=fw.framework_id,
        agent_id=agent_id,
        state=pb.TASK_RUNNING,
        source=pb.TaskStatus.SOURCE_AGENT,
        uuid=b"u1",
        labels=[pb.Label(key="agent", value="says")],
    )
    (update,) = _events(core.agent_status_updates(1003.0, agent_id, [wire.status_from_pb(running)]), 4)
    launched = [("team", "ml"), ("team", "infra")]
    assert [(x.key, x.value) for x in update.update.status.labels] == launched
    record = core.state.task(fw.framework_id, "t1")
    assert record is not None
    assert record.status.labels == (("agent", "says"),)  # stored as the agent sent it
    (answer,) = _events(core.reconcile(1004.0, fw.framework_id, [("t1", agent_id)]), 4)
    assert [(x.key, x.value) for x in answer.update.status.labels] == launched


def test_update_framework_changes_roles_name_and_timeout_and_rescinds_old_offers() -> None:
    core = _core()
    core.register_agent(1000.0, wire.agent_from_pb(pb.AgentInfo(hostname="a")), TOTAL, [], [], stream=3)
    info = pb.FrameworkInfo(name="fw", user="u")
    fw, _ = core.subscribe(1000.0, wire.framework_from_pb(info), stream=4, principal="p")
    (offer,) = _offers(core.allocate(1001.0)[1])
    new = pb.FrameworkInfo(
        name="renamed",
        roles=["ml"],
        failover_timeout_s=60.0,
        capabilities=[pb.FrameworkInfo.PARTITION_AWARE],
    )
    effects = core.update_framework(1002.0, fw.framework_id, wire.framework_from_pb(new))
    assert [e.rescind.offer_id for e in _events(effects, 4)] == [offer.id]
    updated = core.state.frameworks[fw.framework_id].info
    assert (updated.roles, updated.name, updated.failover_timeout_s) == (("ml",), "renamed", 60.0)
    assert updated.capabilities == (pb.FrameworkInfo.PARTITION_AWARE,)
    assert (updated.id, updated.principal, updated.user) == (fw.framework_id, "p", "u")
    assert WriteRegistry(FRAMEWORKS, fw.framework_id, updated) in effects
    assert AllocateSoon() in effects
    # the same roles again: nothing to rescind (the new offers are in role ml)
    assert _events(core.update_framework(1003.0, fw.framework_id, updated), 4) == []
    with pytest.raises(Refused) as refused:
        core.update_framework(1004.0, fw.framework_id, dataclasses.replace(updated, id="fw-other"))
    assert refused.value.code == "INVALID_ARGUMENT"
    assert core.state.frameworks[fw.framework_id].info == updated


class MasterCoreMachine(RuleBasedStateMachine):
    """Random histories of one master; the invariants hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.core = _core()
        self.now = 1000.0
        self.streams = itertools.count(1)
        self.open: set[int] = set()
        self.closed: set[int] = set()
        self.agents: list[str] = []
        self.fw_id = ""
        self.offers: list[pb.Offer] = []
        self.task_n = itertools.count(1)
        self.running: list[tuple[str, str]] = []  # (agent_id, task_id) sent to agents
        #: the registry as the WriteRegistry effects left it: (kind, key) -> data
        self.registry: dict[tuple[str, str], bytes] = {}

    def _apply(self, effects: list[Effect]) -> list[Effect]:
        for e in effects:
            if isinstance(e, SendToFramework | SendToAgent):
                assert e.stream not in self.closed, f"sent on closed stream {e.stream}: {e}"
                if isinstance(e, SendToFramework):
                    self.offers += list(wire.event_to_pb(e.event).offers.offers)
                elif (message := wire.command_to_pb(e.message)).HasField("run_tasks"):
                    agent_id = message.run_tasks.tasks[0].agent_id
                    self.running += [(agent_id, t.task_id) for t in message.run_tasks.tasks]
            elif isinstance(e, CloseStream):
                self.open.discard(e.stream)
                self.closed.add(e.stream)
            elif isinstance(e, WriteRegistry):
                if e.data is None:
                    self.registry.pop((e.kind, e.key), None)
                else:
                    data = wire.record_bytes(e.data)
                    assert data is not None
                    self.registry[(e.kind, e.key)] = data
        return effects

    def _stream(self) -> int:
        stream = next(self.streams)
        self.open.add(stream)
        return stream

    @rule(dt=st.floats(0.0, 20.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self._apply(self.core.tick(self.now))

    @precondition(lambda self: len(self.agents) < 4)
    @rule()
    def agent_registers(self) -> None:
        agent_id, effects = self.core.register_agent(
            self.now,
            wire.agent_from_pb(pb.AgentInfo(hostname=f"h{len(self.agents)}")),
            TOTAL,
            [],
            [],
            self._stream(),
        )
        self._apply(effects)
        self.agents.append(agent_id)

    @precondition(lambda self: bool(self.agents))
    @rule(data=st.data())
    def agent_comes_back_or_drops(self, data: st.DataObject) -> None:
        agent = self.core.state.agents[data.draw(st.sampled_from(self.agents))]
        if agent.stream is not None and data.draw(st.booleans()):
            self._apply(self.core.agent_disconnected(self.now, agent.agent_id, agent.stream))
        elif not agent.gone:
            reported = [
                wire.status_from_pb(
                    pb.TaskStatus(task_id=t, framework_id=self.fw_id, agent_id=a, state=pb.TASK_RUNNING)
                )
                for a, t in self.running
                if a == agent.agent_id and self.core.state.task(self.fw_id, t) is not None
            ]
            _, effects = self.core.register_agent(self.now, agent.info, TOTAL, reported, [], self._stream())
            self._apply(effects)

    @rule()
    def framework_subscribes(self) -> None:
        info = pb.FrameworkInfo(name="fw", id=self.fw_id, failover_timeout_s=30.0)
        try:
            fw, effects = self.core.subscribe(self.now, wire.framework_from_pb(info), self._stream())
        except Refused as e:  # torn down after its failover timeout
            code = e.code
            self.fw_id = ""
            assert code == "NOT_FOUND"
            return
        self._apply(effects)
        self.fw_id = fw.framework_id

    @precondition(lambda self: bool(self.fw_id))
    @rule()
    def framework_drops(self) -> None:
        fw = self.core.state.frameworks.get(self.fw_id)
        if fw is not None and fw.stream is not None:
            self._apply(self.core.framework_disconnected(self.now, self.fw_id, fw.stream))

    @rule()
    def allocation(self) -> None:
        self._apply(self.core.allocate(self.now)[1])

    @precondition(lambda self: bool(self.offers) and bool(self.fw_id))
    @rule(data=st.data(), cpus=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
    def accept_an_offer(self, data: st.DataObject, cpus: float) -> None:
        offer = data.draw(st.sampled_from(self.offers))
        task = _task(f"t{next(self.task_n)}", cpus=cpus)
        try:
            self._apply(
                self.core.accept(
                    self.now, self.fw_id, [offer.id], [wire.operation_from_pb(_launch(task), 0)], None
                )
            )
        except Refused as e:  # the framework is not subscribed now
            self._apply(e.effects)

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data(), state=st.sampled_from([pb.TASK_RUNNING, pb.TASK_FINISHED, pb.TASK_FAILED]))
    def agent_reports(self, data: st.DataObject, state: int) -> None:
        agent_id, task_id = data.draw(st.sampled_from(self.running))
        status = pb.TaskStatus(
            task_id=task_id,
            framework_id=self.fw_id,
            agent_id=agent_id,
            state=state,
            uuid=b"u",  # type: ignore[arg-type]
        )
        self._apply(self.core.agent_status_updates(self.now, agent_id, [wire.status_from_pb(status)]))

    @precondition(lambda self: bool(self.agents))
    @rule(data=st.data(), draining=st.booleans())
    def operator_drains(self, data: st.DataObject, draining: bool) -> None:
        agent_id = data.draw(st.sampled_from(self.agents))
        try:
            self._apply(self.core.drain_agent(self.now, agent_id, draining))
        except Refused as e:  # a gone agent
            self._apply(e.effects)

    @rule()
    def a_new_leader_recovers_what_the_registry_effects_wrote(self) -> None:
        """Only the registry survives a failover: what the effects wrote must
        be enough for a new core to know every agent, framework and mark."""

        def kind(k: str) -> dict[str, bytes]:
            return {key: data for (kd, key), data in self.registry.items() if kd == k}

        successor = _core()
        successor.recover(
            self.now,
            {k: wire.agent_from_pb(pb.AgentInfo.FromString(v)) for k, v in kind(AGENTS).items()},
            {k: wire.framework_from_pb(pb.FrameworkInfo.FromString(v)) for k, v in kind(FRAMEWORKS).items()},
            {},
            {
                k: wire.maintenance_from_pb(k, operator_pb2.AgentMaintenance.FromString(v), successor.log)
                for k, v in kind(MAINTENANCE).items()
            },
        )
        state = self.core.state
        assert set(successor.state.agents) == {a for a, r in state.agents.items() if not r.gone}
        assert set(successor.state.frameworks) == set(state.frameworks)
        for agent_id, agent in successor.state.agents.items():
            old = state.agents[agent_id]
            assert agent.unreachable == old.unreachable
            assert successor.allocator.draining(agent_id) == self.core.allocator.draining(agent_id)

    @invariant()
    def no_agent_is_over_committed(self) -> None:
        for agent in self.core.state.agents.values():
            assert (
                self.core.state.used_on_agent(agent.agent_id)
                + self.core.state.offered_on_agent(agent.agent_id)
                <= agent.total
                or agent.gone
            )

    @invariant()
    def offers_are_indexed_both_ways(self) -> None:
        state = self.core.state
        for offer_id, offer in state.offers.items():
            assert offer_id in state.frameworks[offer.framework_id].offers
            assert offer_id in state.agents[offer.agent_id].offers
        assert {o for a in state.agents.values() for o in a.offers} == set(state.offers)

    @invariant()
    def records_name_only_open_streams(self) -> None:
        state = self.core.state
        for record in [*state.agents.values(), *state.frameworks.values()]:
            assert record.stream is None or record.stream in self.open
            assert (record.stream is not None) == record.connected or not record.connected

    @invariant()
    def nothing_is_left_between_transitions(self) -> None:
        assert self.core.take_effects() == []


MasterCoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_master_core_machine = MasterCoreMachine.TestCase
