"""master/wire.py: the master core's values to and from the wire, exactly.

Every kind the core receives goes domain -> protobuf -> domain unchanged
(hypothesis draws the values); what it only sends is checked field by
field; a task's payload goes out as it came in, with the master's ids.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.codec import resources_to_proto
from corral.master import wire
from corral.master.core import domain as d
from corral.master.core import messages as m
from corral.master.core.records import AGENTS, FRAMEWORKS, MAINTENANCE, ROLES
from corral.master.registry import _parse
from corral.proto import messages_pb2 as pb
from corral.proto import scheduler_pb2
from corral.resources import RangeSet, Resources

# protobuf strings are unicode without lone surrogates
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
ids = st.text("abcxyz0189-_.", min_size=1, max_size=10)
int32 = st.integers(-(2**31), 2**31 - 1)
uint64 = st.integers(0, 2**64 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
roles = st.sampled_from(["", "ml", "eng/batch"])
milli = st.integers(1, 10**9)


@st.composite
def resources(draw: st.DrawFn) -> Resources:
    scalars = draw(st.dictionaries(st.tuples(st.sampled_from(["cpus", "mem", "disk", "gpus"]), roles), milli))
    ports = draw(st.lists(st.tuples(st.integers(1, 30000), st.integers(0, 100)), max_size=3))
    ranges = {("ports", ""): RangeSet.of((b, b + n) for b, n in ports)} if ports else {}
    return Resources(scalars=scalars, ranges=ranges)


statuses = st.builds(
    d.TaskStatus,
    task_id=ids,
    state=st.sampled_from(d.TaskState),
    reason=st.sampled_from(d.Reason),
    message=text,
    source=st.sampled_from(d.Source),
    agent_id=text,
    framework_id=ids,
    timestamp=finite,
    uuid=st.binary(max_size=64),
    exit_code=st.none() | int32,
    signal=st.none() | int32,
    stderr_tail=text,
    limit=st.none() | uint64,
    peak=st.none() | uint64,
    healthy=st.none() | st.booleans(),
    cpu_time_s=st.none() | st.floats(0, 1e9),
    mem_peak_bytes=st.none() | uint64,
    labels=st.lists(st.tuples(text, text), max_size=3).map(tuple),
)
frameworks = st.builds(
    d.FrameworkInfo,
    id=text,
    name=text,
    user=text,
    roles=st.lists(roles, max_size=3).map(tuple),
    failover_timeout_s=finite,
    # an unknown capability is kept as it came
    capabilities=st.lists(st.integers(0, 9), max_size=4).map(tuple),
    principal=text,
    hostname=text,
)
attributes = st.lists(st.tuples(text, text), max_size=3).map(tuple)
agents = st.builds(
    d.AgentInfo,
    id=text,
    hostname=text,
    resources=resources(),
    attributes=attributes,
    work_dir=text,
    version=text,
    principal=text,
)
quantities = st.dictionaries(st.sampled_from(["cpus", "mem", "gpus"]), st.integers(0, 10**9))
role_policies = st.builds(
    d.RolePolicy,
    role=ids,
    weight=st.floats(0.001, 1000.0),
    guarantee=resources(),
    limit=st.none() | quantities,
)
maintenance = st.builds(
    d.AgentMaintenance, draining=st.booleans(), reservations=resources(), unreachable_since=finite
)


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        (d.TaskStatus, pb.TaskStatus),
        (d.FrameworkInfo, pb.FrameworkInfo),
        (d.AgentInfo, pb.AgentInfo),
        (d.MasterInfo, pb.MasterInfo),
        (d.Offer, pb.Offer),
    ],
)
def test_the_domain_values_have_every_field_of_the_wire(domain: type, message: type) -> None:
    """A field added to the proto and not here would be dropped by the master
    on its way through (TaskStatus gained cpu_time_s while this was written)."""
    names = {f.name for f in dataclasses.fields(domain)}
    assert {f.name for f in message.DESCRIPTOR.fields} <= names


@given(statuses)
def test_a_task_status_comes_back_from_the_wire_as_it_went(status: d.TaskStatus) -> None:
    assert wire.status_from_pb(wire.status_to_pb(status)) == status


def test_an_unset_optional_field_stays_absent_and_a_zero_stays_set() -> None:
    absent = wire.status_to_pb(d.TaskStatus(task_id="t"))
    assert not absent.HasField("exit_code")
    assert not absent.HasField("healthy")
    zero = wire.status_to_pb(d.TaskStatus(task_id="t", exit_code=0, healthy=False))
    assert zero.HasField("exit_code")
    assert zero.HasField("healthy")
    assert wire.status_from_pb(zero).exit_code == 0


@given(frameworks)
def test_a_framework_info_comes_back_from_the_wire_as_it_went(info: d.FrameworkInfo) -> None:
    assert wire.framework_from_pb(wire.framework_to_pb(info)) == info


@given(agents)
def test_an_agent_info_comes_back_from_the_wire_as_it_went(info: d.AgentInfo) -> None:
    assert wire.agent_from_pb(wire.agent_to_pb(info)) == info


@given(role_policies)
def test_a_role_policy_comes_back_from_the_registry_as_it_went(policy: d.RolePolicy) -> None:
    data = wire.record_bytes(policy)
    assert data is not None
    parsed = _parse(ROLES, data)
    assert isinstance(parsed, type(wire.role_to_pb(policy)))
    assert wire.role_from_pb(parsed, _Log()) == policy  # type: ignore[arg-type]


@given(maintenance)
def test_a_maintenance_mark_comes_back_from_the_registry_as_it_went(mark: d.AgentMaintenance) -> None:
    parsed = _parse(MAINTENANCE, wire.record_bytes(mark) or b"")
    assert wire.maintenance_from_pb("a1", parsed, _Log()) == mark  # type: ignore[arg-type]


@given(agents, frameworks)
def test_registry_records_are_the_wire_messages_serialized(agent: d.AgentInfo, fw: d.FrameworkInfo) -> None:
    assert _parse(AGENTS, wire.record_bytes(agent) or b"") == wire.agent_to_pb(agent)
    assert _parse(FRAMEWORKS, wire.record_bytes(fw) or b"") == wire.framework_to_pb(fw)
    assert wire.record_bytes(None) is None


class _Log:
    def __init__(self) -> None:
        self.said: list[tuple[str, dict[str, object]]] = []

    def debug(self, event: str, **kw: object) -> None:
        self.said.append((event, kw))

    info = warning = debug


def test_a_registry_record_that_does_not_parse_is_dropped_and_said() -> None:
    log = _Log()
    bad = pb.AgentInfo(id="a1", resources=[pb.Resource(name="cpus", scalar=-1.0)])
    assert wire.agents_from_registry({"a1": bad, "a2": pb.AgentInfo(id="a2")}, log) == {
        "a2": d.AgentInfo(id="a2")
    }
    assert [e for e, _ in log.said] == ["registry.bad_agent"]


@st.composite
def task_infos(draw: st.DrawFn) -> pb.TaskInfo:
    container = pb.ContainerInfo(
        devices=draw(st.lists(st.sampled_from(["/dev/fuse", "/dev/null"]), max_size=2)),
        volumes=[
            pb.Volume(container_path="/data", host_path=p)
            for p in draw(st.lists(st.sampled_from(["", "/srv//x", "/tmp"]), max_size=3))
        ],
        seccomp_profile=draw(st.sampled_from(["", "unconfined"])),
    )
    for name in ("uid", "gid"):
        value = draw(st.none() | st.integers(0, 70000))
        if value is not None:
            setattr(container, name, value)
    if draw(st.booleans()):
        container.user_namespace = draw(st.booleans())
    task = pb.TaskInfo(
        task_id=draw(ids),
        name=draw(text),
        agent_id=draw(st.sampled_from(["", "a1"])),
        command=pb.CommandInfo(shell=True, value=draw(text)),
        kill_policy=pb.KillPolicy(grace_period_s=draw(st.floats(0, 3600))),
        labels=[pb.Label(key=k, value=v) for k, v in draw(st.lists(st.tuples(ids, text), max_size=2))],
    )
    if draw(st.booleans()):
        task.container.CopyFrom(container)
    task.resources.extend(resources_to_proto(draw(resources())))
    return task


@given(task_infos())
def test_a_task_goes_out_as_it_came_in(task: pb.TaskInfo) -> None:
    info = wire.task_from_pb(task)
    assert wire.task_to_pb(info) == task
    assert wire.task_from_pb(wire.task_to_pb(info)) == info
    c = task.container
    uid = c.uid if c.HasField("uid") else 0
    assert info.access.uid == uid
    assert info.access.gid == (c.gid if c.HasField("gid") else uid)
    assert info.access.user_namespace == (c.HasField("user_namespace") and c.user_namespace)
    assert info.access.host_paths == tuple((i, v.host_path) for i, v in enumerate(c.volumes) if v.host_path)
    assert info.kill_grace_s == task.kill_policy.grace_period_s
    assert info.labels == tuple((x.key, x.value) for x in task.labels)


def test_a_task_the_master_only_heard_of_goes_out_with_its_ids() -> None:
    stub = d.TaskInfo(task_id="t1", name="t1", agent_id="a1")
    assert wire.task_to_pb(stub) == pb.TaskInfo(task_id="t1", name="t1", agent_id="a1")
    labelled = d.TaskInfo(task_id="t1", labels=(("k", "v"), ("k", "w")))
    out = wire.task_to_pb(labelled)
    assert [(x.key, x.value) for x in out.labels] == [("k", "v"), ("k", "w")]
    assert wire.task_from_pb(out).labels == labelled.labels


def test_the_task_info_has_the_fields_the_master_reads_of_the_wire() -> None:
    """The rest of a TaskInfo rides in the payload unread; these the core uses."""
    names = {f.name for f in dataclasses.fields(d.TaskInfo)}
    assert {"task_id", "name", "agent_id", "labels"} <= names
    assert {"task_id", "name", "agent_id", "labels"} <= {f.name for f in pb.TaskInfo.DESCRIPTOR.fields}


def test_an_operation_keeps_its_field_paths_and_its_parse_error() -> None:
    Op = scheduler_pb2.Operation
    bad = Op(type=Op.RESERVE, reserve=Op.Reserve(resources=[pb.Resource(name="cpus", role="ml", scalar=-1)]))
    op = wire.operation_from_pb(bad, 2)
    assert op.where == "accept.operations[2].reserve.resources"
    assert op.problem is not None
    assert op.problem.startswith("accept.operations[2].reserve.resources[0]")
    launch = Op(type=Op.LAUNCH, launch=Op.Launch(task_infos=[pb.TaskInfo(task_id="bad id!")]))
    (task,) = wire.operation_from_pb(launch, 0).tasks
    assert task.where == "accept.operations[0].launch.task_infos[0]"
    assert task.check.id_problems
    assert task.check.id_problems[0].startswith(task.where + ".task_id")
    assert wire.operation_from_pb(Op(type=9), 1).type_name == "type 9"


@given(st.lists(statuses, min_size=1, max_size=3))
def test_updates_go_out_as_one_event(items: list[d.TaskStatus]) -> None:
    event = wire.event_to_pb(m.Updates(tuple(items)))
    sent = [event.update.status] if event.HasField("update") else [u.status for u in event.updates]
    assert event.HasField("update") == (len(items) == 1)
    assert [wire.status_from_pb(s) for s in sent] == items


def test_offers_and_commands_carry_every_field() -> None:
    master = d.MasterInfo(id="m1", address="h:1", hostname="h", version="v", start_time=5.0)
    offer = d.Offer("o1", "f1", "a1", "h1", Resources.of(cpus=1), (("rack", "r1"),), "ml")
    event = wire.event_to_pb(m.Offers((offer,)))
    assert event.offers.offers[0] == pb.Offer(
        id="o1",
        framework_id="f1",
        agent_id="a1",
        hostname="h1",
        resources=[pb.Resource(name="cpus", scalar=1.0)],
        attributes=[pb.Attribute(name="rack", value="r1")],
        role="ml",
    )
    subscribed = wire.event_to_pb(m.Subscribed("f1", 2.0, master)).subscribed
    assert subscribed.master_info == pb.MasterInfo(
        id="m1", address="h:1", hostname="h", version="v", start_time=5.0
    )
    kill = wire.command_to_pb(m.KillTask("f1", "t1", 3.0)).kill_task
    assert (kill.framework_id, kill.task_id, kill.grace_period_s) == ("f1", "t1", 3.0)
    acks = wire.command_to_pb(m.Acknowledgements((m.Ack("t1", b"u", "f1"),))).acknowledgements.acks
    assert [(a.task_id, a.uuid, a.framework_id) for a in acks] == [("t1", b"u", "f1")]
    assert wire.command_to_pb(m.ShutdownFramework("f1")).shutdown_framework.framework_id == "f1"
