"""The master's transitions driven directly, without gRPC: outboxes stand in
for the streams, so each rule is checked in milliseconds."""

from __future__ import annotations

import pytest

from corral.codec import resources_to_proto
from corral.errors import CallError
from corral.master.master import Master, MasterConfig
from corral.master.streams import Outbox
from corral.proto import agent_pb2, scheduler_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

Event = scheduler_pb2.Event
Operation = scheduler_pb2.Operation


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(outbox: Outbox[object]) -> list[object]:
    out = []
    while not outbox._queue.empty():
        item = outbox._queue.get_nowait()
        if item is not None:
            out.append(item)
    return out


def _agent(master: Master, name: str) -> tuple[str, Outbox[object]]:
    outbox: Outbox[object] = Outbox()
    total = Resources.parse("cpus:2;mem:1024")
    info = pb.AgentInfo(hostname=name, resources=resources_to_proto(total))
    agent_id = master.register_agent(info, total, [], [], outbox)
    drain(outbox)
    return agent_id, outbox


def _offers(outbox: Outbox[object]) -> list[pb.Offer]:
    return [
        o for e in drain(outbox) if isinstance(e, Event) and e.type == Event.OFFERS for o in e.offers.offers
    ]


def _launch(master: Master, fw_id: str, offer: pb.Offer, task_id: str) -> None:
    task = pb.TaskInfo(
        task_id=task_id,
        name=task_id,
        resources=resources_to_proto(Resources.of(cpus=0.5, mem=64)),
        command=pb.CommandInfo(shell=True, value="true"),
    )
    op = Operation(type=Operation.LAUNCH, launch=Operation.Launch(task_infos=[task]))
    master.accept(fw_id, [offer.id], [op], refuse_s=None)


@pytest.fixture
def setup() -> tuple[Master, dict[str, tuple[str, Outbox[object]]], str, Outbox[object]]:
    master = Master(MasterConfig(agent_reregister_timeout_s=0), clock=Clock())
    agents = {name: _agent(master, name) for name in ("a", "b")}
    fw_box: Outbox[object] = Outbox()
    fw = master.subscribe(pb.FrameworkInfo(name="fw"), fw_box)
    drain(fw_box)
    return master, agents, fw.framework_id, fw_box


def test_updates_only_from_the_tasks_own_agent_and_never_reviving(setup) -> None:  # type: ignore[no-untyped-def]
    master, agents, fw_id, fw_box = setup
    master.run_allocation()
    offer = next(o for o in _offers(fw_box) if o.agent_id == agents["a"][0])
    _launch(master, fw_id, offer, "t1")
    a_id, b_id = agents["a"][0], agents["b"][0]

    def update(agent_id: str, state: int) -> None:
        status = pb.TaskStatus(task_id="t1", framework_id=fw_id, agent_id=agent_id, state=state, uuid=b"u")  # type: ignore[arg-type]
        master.agent_status_updates(agent_id, [status])

    update(b_id, pb.TASK_FINISHED)  # not b's task: ignored
    task = master.state.task(fw_id, "t1")
    assert task is not None
    assert task.status.state == pb.TASK_STAGING
    update(a_id, pb.TASK_FINISHED)
    assert task.status.state == pb.TASK_FINISHED
    free_after = master.allocator.free(a_id)
    update(a_id, pb.TASK_RUNNING)  # a replay after the end: ignored
    assert task.status.state == pb.TASK_FINISHED
    update(a_id, pb.TASK_FINISHED)  # a duplicate: resources not returned twice
    assert master.allocator.free(a_id) == free_after == Resources.parse("cpus:2;mem:1024")


def test_acknowledgements_go_to_the_tasks_agent(setup) -> None:  # type: ignore[no-untyped-def]
    master, agents, fw_id, fw_box = setup
    master.run_allocation()
    offer = next(o for o in _offers(fw_box) if o.agent_id == agents["a"][0])
    _launch(master, fw_id, offer, "t1")
    (_a_id, a_box), (b_id, b_box) = agents["a"], agents["b"]
    drain(a_box)
    drain(b_box)
    master.acknowledge(fw_id, [(b_id, "t1", b"uuid")])  # names the wrong agent
    assert drain(b_box) == []
    acks = [
        m for m in drain(a_box) if isinstance(m, agent_pb2.MasterMessage) and m.HasField("acknowledgements")
    ]
    assert [a.task_id for m in acks for a in m.acknowledgements.acks] == ["t1"]


def test_only_the_asked_agent_may_answer_a_file_read(setup) -> None:  # type: ignore[no-untyped-def]
    master, agents, _fw_id, _fw_box = setup
    fut_owner = "a"
    import asyncio

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        master.queries._pending[7] = (agents[fut_owner][0], fut)
        data = agent_pb2.AgentMessage.FileData(request_id=7, data=b"forged")
        master.file_data(agents["b"][0], data)
        assert not fut.done()
        master.file_data(agents["a"][0], agent_pb2.AgentMessage.FileData(request_id=7, data=b"real"))
        assert fut.result().data == b"real"

    asyncio.run(scenario())


def test_calls_for_unknown_frameworks_are_not_found(setup) -> None:  # type: ignore[no-untyped-def]
    master, _agents, _fw_id, _fw_box = setup
    with pytest.raises(CallError) as err:
        master.kill("no-such-framework", "t1")
    assert err.value.code == "NOT_FOUND"


class _RegistryStub:
    """Stands in for the RegistryWriter: applies writes at once."""

    def __init__(self) -> None:
        from corral.master.registry import InMemoryRegistry

        self.registry = InMemoryRegistry()

    def put(self, kind: str, key: str, data: bytes | None) -> None:
        from corral.master.registry import Write

        self.registry.apply(Write(kind, key, data))


def test_weights_and_quota_are_recorded_and_a_new_leader_keeps_them() -> None:
    master = Master(MasterConfig(), clock=Clock())
    stub = _RegistryStub()
    master.registry = stub  # type: ignore[assignment]
    _agent(master, "a1")
    master.set_weights([("eng/ml", 2.0), ("ops", 1.0)])
    master.set_quota("eng", Resources.parse("cpus:1"), Resources.parse("cpus:2"))
    with pytest.raises(CallError, match=r"weights\[1\]: weight of role 'x'"):
        master.set_weights([("ops", 3.0), ("x", 0.0)])  # all or nothing: ops stays 1
    state = stub.registry.load()
    assert sorted(r.role for r in state.roles.values()) == ["eng", "eng/ml"]  # ops has the default
    successor = Master(MasterConfig(), clock=Clock())
    successor.recover(state)
    roles = {r.role: r for r in successor.roles()}
    assert roles["eng/ml"].weight == 2.0
    assert roles["eng"].guarantee == Resources.parse("cpus:1")
    assert roles["eng"].limit == Resources.parse("cpus:2")
    master.set_quota("eng", Resources(), None)  # removed: the record goes too
    master.set_weights([("eng/ml", 1.0)])
    assert stub.registry.load().roles == {}


def test_drain_marks_and_dynamic_reservations_are_recorded_and_a_new_leader_keeps_them() -> None:
    master = Master(MasterConfig(), clock=Clock())
    stub = _RegistryStub()
    master.registry = stub  # type: ignore[assignment]
    agent_id, _ = _agent(master, "a1")
    _agent(master, "a2")
    fw_box: Outbox[object] = Outbox()
    fw = master.subscribe(pb.FrameworkInfo(name="ml", roles=["ml"]), fw_box)
    master.run_allocation()
    offer = next(o for o in _offers(fw_box) if o.agent_id == agent_id)
    wanted = Resources.parse("cpus(ml):1;mem(ml):256")
    items = resources_to_proto(wanted)
    reserve = Operation(type=Operation.RESERVE, reserve=Operation.Reserve(resources=items))
    master.accept(fw.framework_id, [offer.id], [reserve], refuse_s=None)
    master.drain_agent(agent_id)
    total = master.allocator.agent_total(agent_id)
    assert total.scalar("cpus", "ml") == wanted.scalar("cpus", "ml")  # the RESERVE took

    state = stub.registry.load()
    assert set(state.maintenance) == {agent_id}  # a2 has nothing to keep
    successor = Master(MasterConfig(), clock=Clock())
    successor.recover(state)
    assert successor.allocator.draining(agent_id)
    assert successor.allocator.agent_total(agent_id) == total

    # Undone, the record goes.
    master.drain_agent(agent_id, draining=False)
    master.run_allocation()
    offer = next(o for o in _offers(fw_box) if o.agent_id == agent_id)
    unreserve = Operation(type=Operation.UNRESERVE, unreserve=Operation.Unreserve(resources=items))
    master.accept(fw.framework_id, [offer.id], [unreserve], refuse_s=None)
    assert stub.registry.load().maintenance == {}


def test_an_operator_reservation_is_offered_to_its_role_only_and_kept_by_a_new_leader() -> None:
    master = Master(MasterConfig(), clock=Clock())
    stub = _RegistryStub()
    master.registry = stub  # type: ignore[assignment]
    agent_id, _ = _agent(master, "a1")
    ml_box: Outbox[object] = Outbox()
    ml = master.subscribe(pb.FrameworkInfo(name="ml", roles=["ml"]), ml_box)
    master.run_allocation()
    assert _offers(ml_box)  # an outstanding offer: rescinded to make room
    wanted = Resources.parse("cpus(ml):1;mem(ml):512")
    master.reserve(agent_id, wanted)
    assert master.allocator.agent_total(agent_id).scalar("cpus", "ml") == 1000
    assert any(isinstance(e, scheduler_pb2.Event) and e.type == Event.RESCIND for e in drain(ml_box))
    master.run_allocation()
    (offer,) = _offers(ml_box)
    assert any(r.role == "ml" and r.name == "cpus" for r in offer.resources)

    # A framework of another role is never offered them.
    other_box: Outbox[object] = Outbox()
    master.decline(ml.framework_id, [offer.id], 3600.0)
    master.subscribe(pb.FrameworkInfo(name="web", roles=["web"]), other_box)
    master.run_allocation()
    for o in _offers(other_box):
        assert not any(r.role == "ml" for r in o.resources), o

    successor = Master(MasterConfig(), clock=Clock())
    successor.recover(stub.registry.load())
    assert successor.allocator.agent_total(agent_id).scalar("cpus", "ml") == 1000

    master.reserve(agent_id, wanted, unreserve=True)
    assert master.allocator.agent_total(agent_id).scalar("cpus", "ml") == 0
    assert stub.registry.load().maintenance == {}


@pytest.mark.parametrize(
    ("agent", "spec", "code", "words"),
    [
        ("nope", "cpus(ml):1", "NOT_FOUND", "not known"),
        (None, "", "INVALID_ARGUMENT", "at least one"),
        (None, "cpus:1", "INVALID_ARGUMENT", "must name a role"),
        (None, "cpus(a/./b):1", "INVALID_ARGUMENT", "are not role names"),
        (None, "cpus(ml):64", "FAILED_PRECONDITION", "not there to reserve"),
    ],
)
def test_bad_operator_reservations_are_refused_naming_the_problem(
    agent: str | None, spec: str, code: str, words: str
) -> None:
    master = Master(MasterConfig(), clock=Clock())
    agent_id, _ = _agent(master, "a1")
    with pytest.raises(CallError) as e:
        master.reserve(agent or agent_id, Resources.parse(spec))
    assert e.value.code == code
    assert words in str(e.value)
    assert master.allocator.agent_total(agent_id) == Resources.parse("cpus:2;mem:1024")


def test_only_dynamic_reservations_can_be_unreserved_and_they_survive_a_new_total() -> None:
    master = Master(MasterConfig(), clock=Clock())
    agent_id, _ = _agent(master, "a1")
    with pytest.raises(CallError, match="not dynamically reserved") as e:
        master.reserve(agent_id, Resources.parse("cpus(ml):1"), unreserve=True)
    assert e.value.code == "FAILED_PRECONDITION"
    master.reserve(agent_id, Resources.parse("cpus(ml):1"))
    # The agent restarts with more CPUs: the reservation is made again on the new total.
    record = master.state.agents[agent_id]
    bigger = Resources.parse("cpus:3;mem:1024")
    info = pb.AgentInfo(id=agent_id, hostname="a1", resources=resources_to_proto(bigger))
    master.register_agent(info, bigger, [], [], Outbox())
    total = master.allocator.agent_total(agent_id)
    assert total.scalar("cpus", "ml") == 1000
    assert total.scalar("cpus") == 3000
    assert record.dynamic_reserved == Resources.parse("cpus(ml):1")


def test_host_path_volumes_are_asked_of_the_policy_per_tenant() -> None:
    from corral.master.authz import Authorizer, parse_policy

    clock = Clock()
    master = Master(MasterConfig(agent_reregister_timeout_s=0), clock=clock)
    master.authorizer = Authorizer(
        parse_policy(
            'default = "deny"\n'
            '[[rules]]\nallow = true\nprincipals = ["framework:a"]\n'
            'actions = ["register_framework", "run_task"]\n'
            '[[rules]]\nallow = true\nprincipals = ["framework:a"]\nactions = ["use_host_path"]\n'
            'objects = ["path:/data/a/*"]\n'
        )
    )
    _, agent_box = _agent(master, "a")
    fw_box: Outbox[object] = Outbox()
    fw = master.subscribe(pb.FrameworkInfo(name="a"), fw_box, principal="framework:a")
    master.run_allocation()

    def launch(task_id: str, host_path: str) -> list[object]:
        (offer,) = _offers(fw_box)
        task = pb.TaskInfo(
            task_id=task_id,
            name=task_id,
            resources=resources_to_proto(Resources.of(cpus=0.5, mem=64)),
            command=pb.CommandInfo(shell=True, value="true"),
            container=pb.ContainerInfo(
                uid=1000, volumes=[pb.Volume(container_path="/d", host_path=host_path)]
            ),
        )
        op = Operation(type=Operation.LAUNCH, launch=Operation.Launch(task_infos=[task]))
        master.accept(fw.framework_id, [offer.id], [op], refuse_s=0)
        events = drain(fw_box)
        clock.now += 10  # past any filter on the leftover: the next offer waits in the box
        master.run_allocation()
        return events

    # Normalised before it is asked: /data/a/../b is b's directory.
    for task_id, path in (("other", "/data/b/x"), ("sneaky", "/data/a/../b/x")):
        events = launch(task_id, path)
        (status,) = [e.update.status for e in events if isinstance(e, Event) and e.type == Event.UPDATE]
        assert status.state == pb.TASK_ERROR
        assert "may not use_host_path path:/data/b/x" in status.message
    events = launch("own", "/data/a/x")
    assert not [e for e in events if isinstance(e, Event) and e.type == Event.UPDATE]
    assert any(
        isinstance(m, agent_pb2.MasterMessage) and m.WhichOneof("message") == "run_tasks"
        for m in drain(agent_box)
    )
