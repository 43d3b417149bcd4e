"""master/validation.py, issue 14: every number and string a peer controls is
bounded. One row per abuse; the expected text names the field path."""

from __future__ import annotations

import math
from typing import Any

import pytest

from corral.master.call_validation import (
    validate_call_size,
    validate_operator_request,
    validate_registration,
    validate_status_updates,
    validate_task_status,
)
from corral.master.validation import (
    MAX_KILL_GRACE_S,
    validate_agent_info,
    validate_framework_info,
    validate_task,
)
from corral.proto import agent_pb2, operator_pb2, scheduler_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

R = pb.Resource
Call = scheduler_pb2.Call
Op = scheduler_pb2.Operation
W = "accept.operations[0].launch.task_infos[0]"
OFFER = Resources.parse("cpus:2;mem:1024;zones:{a,b}")


def task(**fields: Any) -> pb.TaskInfo:
    base: dict[str, Any] = {
        "name": "t",
        "task_id": "t1",
        "command": pb.CommandInfo(shell=True, value="true"),
        "resources": [R(name="cpus", scalar=1), R(name="mem", scalar=128)],
    }
    base.update(fields)
    return pb.TaskInfo(**base)


def sh(value: str = "true", **fields: Any) -> pb.CommandInfo:
    return pb.CommandInfo(shell=True, value=value, **fields)


def hc(**fields: Any) -> pb.HealthCheck:
    return pb.HealthCheck(type=pb.HealthCheck.TCP, port=80, **fields)


BAD_TASKS = [
    (
        "infinite grace",
        task(kill_policy=pb.KillPolicy(grace_period_s=math.inf)),
        f"{W}.kill_policy.grace_period_s",
    ),
    (
        "nan grace",
        task(kill_policy=pb.KillPolicy(grace_period_s=math.nan)),
        f"{W}.kill_policy.grace_period_s",
    ),
    ("day-long grace", task(kill_policy=pb.KillPolicy(grace_period_s=86400)), "<= 3600 seconds, got 86400"),
    ("huge command", task(command=sh("x" * 200_000)), f"{W}.command.value: at most 131072 bytes"),
    ("nul in command", task(command=sh("true\0rm")), f"{W}.command.value: must not contain NUL"),
    (
        "too many arguments",
        task(command=pb.CommandInfo(arguments=["a"] * 5000)),
        f"{W}.command.arguments: at most 4096",
    ),
    (
        "argv too big",
        task(command=pb.CommandInfo(arguments=["a" * 100_000] * 6)),
        f"{W}.command.arguments: at most 524288 bytes",
    ),
    (
        "too many variables",
        task(command=sh(environment={f"V{i}": "x" for i in range(1100)})),
        f"{W}.command.environment: at most 1024",
    ),
    (
        "environment too big",
        task(command=sh(environment={f"V{i}": "x" * 100_000 for i in range(6)})),
        f"{W}.command.environment: at most 524288 bytes",
    ),
    ("bad variable name", task(command=sh(environment={"A=B": "x"})), f"{W}.command.environment: name 'A=B'"),
    ("nul in variable", task(command=sh(environment={"A": "x\0y"})), f"{W}.command.environment[A]"),
    ("long user", task(command=sh(user="u" * 33)), f"{W}.command.user: must be at most 32"),
    # A regex ending in $ also matches before a final newline: ids use fullmatch.
    ("id with a trailing newline", task(task_id="t1\n"), f"{W}.task_id: must be"),
    ("control in name", task(name="a\x1b[2Jb"), f"{W}.name: must be printable"),
    ("long name", task(name="n" * 256), f"{W}.name: must be at most 255"),
    ("too many labels", task(labels=[pb.Label(key=f"k{i}") for i in range(65)]), f"{W}.labels: at most 64"),
    ("empty label key", task(labels=[pb.Label(key="", value="v")]), f"{W}.labels[0].key: must not be empty"),
    (
        "newline in label",
        task(labels=[pb.Label(key="k", value="a\nb")]),
        f"{W}.labels[0].value: must be printable",
    ),
    (
        "health interval inf",
        task(health_check=hc(interval_s=math.inf)),
        f"{W}.health_check.interval_s",
    ),
    ("health timeout nan", task(health_check=hc(timeout_s=math.nan)), f"{W}.health_check.timeout_s"),
    (
        "health command too big",
        task(health_check=pb.HealthCheck(type=pb.HealthCheck.COMMAND, command=sh("x" * 200_000))),
        f"{W}.health_check.command.value: at most",
    ),
    (
        "too many resources",
        task(resources=[R(name="cpus", scalar=0.001)] * 300),
        f"{W}.resources: at most 256 resources",
    ),
    (
        "huge set",
        task(resources=[R(name="cpus", scalar=1), R(name="zones", set=pb.Value.Set(item=["a"] * 2000))]),
        f"{W}.resources[1]: at most 1024",
    ),
    ("inf in resources", task(resources=[R(name="mem", scalar=-math.inf)]), f"{W}.resources[0] (mem).scalar"),
]


@pytest.mark.parametrize(("t", "expected"), [r[1:] for r in BAD_TASKS], ids=[r[0] for r in BAD_TASKS])
def test_task_bounds(t: pb.TaskInfo, expected: str) -> None:
    errors, _ = validate_task(t, W, OFFER, ())
    assert any(expected in e for e in errors), errors


def test_bounds_admit_honest_tasks() -> None:
    t = task(
        kill_policy=pb.KillPolicy(grace_period_s=MAX_KILL_GRACE_S),
        command=sh("x" * 100_000, environment={"PATH": "/bin", "_X1": "é ü"}, user="nobody"),
        labels=[pb.Label(key="team", value="ml / prod")],
        name="train résumé 1",
    )
    assert validate_task(t, W, OFFER, ())[0] == []


BAD_FRAMEWORKS = [
    (
        "inf failover",
        pb.FrameworkInfo(name="x", failover_timeout_s=math.inf),
        "framework_info.failover_timeout_s",
    ),
    ("decade failover", pb.FrameworkInfo(name="x", failover_timeout_s=3.2e8), "<= 31536000 seconds"),
    ("control in name", pb.FrameworkInfo(name="a\rb"), "framework_info.name: must be printable"),
    ("long name", pb.FrameworkInfo(name="n" * 300), "framework_info.name: must be at most 255"),
    ("long user", pb.FrameworkInfo(name="x", user="u" * 40), "framework_info.user"),
    ("bad principal", pb.FrameworkInfo(name="x", principal="p\n"), "framework_info.principal"),
    (
        "too many roles",
        pb.FrameworkInfo(name="x", roles=[f"r{i}" for i in range(65)]),
        "framework_info.roles: at most 64",
    ),
    ("role with a trailing newline", pb.FrameworkInfo(name="x", roles=["ml\n"]), "framework_info.roles[0]"),
    ("long role", pb.FrameworkInfo(name="x", roles=["r" * 256]), "framework_info.roles[0]: at most 255"),
    ("unknown capability", pb.FrameworkInfo(name="x", capabilities=[42]), "framework_info.capabilities[0]"),
]


@pytest.mark.parametrize(
    ("info", "expected"), [r[1:] for r in BAD_FRAMEWORKS], ids=[r[0] for r in BAD_FRAMEWORKS]
)
def test_framework_bounds(info: pb.FrameworkInfo, expected: str) -> None:
    errors = validate_framework_info(info)
    assert any(expected in e for e in errors), errors


def _agent(**fields: Any) -> pb.AgentInfo:
    base: dict[str, Any] = {"hostname": "h1", "resources": [R(name="cpus", scalar=1)]}
    base.update(fields)
    return pb.AgentInfo(**base)


BAD_AGENTS = [
    ("control in hostname", _agent(hostname="h\x00"), "agent_info.hostname: must be printable"),
    ("long hostname", _agent(hostname="h" * 300), "agent_info.hostname: must be at most 255"),
    ("nul in work dir", _agent(work_dir="/var\0x"), "agent_info.work_dir"),
    (
        "too many attributes",
        _agent(attributes=[pb.Attribute(name=f"a{i}") for i in range(129)]),
        "agent_info.attributes: at most 128",
    ),
    (
        "control in attribute",
        _agent(attributes=[pb.Attribute(name="rack\t", value="1")]),
        "agent_info.attributes[0].name: must be printable",
    ),
    (
        "too many resources",
        _agent(resources=[R(name="cpus", scalar=1)] * 300),
        "agent_info.resources: at most 256",
    ),
    (
        "nan resource",
        _agent(resources=[R(name="cpus", scalar=math.nan)]),
        "agent_info.resources[0] (cpus).scalar",
    ),
]


@pytest.mark.parametrize(("info", "expected"), [r[1:] for r in BAD_AGENTS], ids=[r[0] for r in BAD_AGENTS])
def test_agent_bounds(info: pb.AgentInfo, expected: str) -> None:
    errors, _ = validate_agent_info(info)
    assert any(expected in e for e in errors), errors


def _accept(tasks: int, **filters: float) -> Call:
    return Call(
        type=Call.ACCEPT,
        accept=Call.Accept(
            offer_ids=["o1"],
            operations=[Op(type=Op.LAUNCH, launch=Op.Launch(task_infos=[pb.TaskInfo()] * tasks))],
            filters=pb.Filters(**filters),
        ),
    )


BAD_CALLS = [
    ("accept over the cap", _accept(1001), "accept.operations: at most 1000 tasks per ACCEPT"),
    ("accept refuse inf", _accept(1, refuse_seconds=math.inf), "accept.filters.refuse_seconds"),
    ("accept refuse negative", _accept(1, refuse_seconds=-1), "accept.filters.refuse_seconds"),
    (
        "decline refuse nan",
        Call(type=Call.DECLINE, decline=Call.Decline(filters=pb.Filters(refuse_seconds=math.nan))),
        "decline.filters.refuse_seconds",
    ),
    (
        "decline refuse two years",
        Call(type=Call.DECLINE, decline=Call.Decline(filters=pb.Filters(refuse_seconds=2 * 365 * 86400))),
        "<= 31536000 seconds",
    ),
    (
        "many offers",
        Call(type=Call.DECLINE, decline=Call.Decline(offer_ids=["o"] * 1001)),
        "decline.offer_ids: at most 1000",
    ),
    (
        "unknown operation",
        Call(type=Call.ACCEPT, accept=Call.Accept(offer_ids=["o"], operations=[Op(type=42)])),
        "accept.operations[0].type: unknown operation type 42",
    ),
    (
        "reserve too many resources",
        Call(
            type=Call.ACCEPT,
            accept=Call.Accept(
                offer_ids=["o"],
                operations=[
                    Op(type=Op.RESERVE, reserve=Op.Reserve(resources=[R(name="cpus", scalar=1)] * 300))
                ],
            ),
        ),
        "accept.operations[0].reserve.resources: at most 256",
    ),
    (
        "ack bad task id",
        Call(type=Call.ACKNOWLEDGE, acknowledges=[Call.Acknowledge(task_id="a b", uuid=b"u")]),
        "acknowledges[0].task_id: must be",
    ),
    (
        "ack huge uuid",
        Call(type=Call.ACKNOWLEDGE, acknowledge=Call.Acknowledge(task_id="t", uuid=b"u" * 65)),
        "acknowledges[0].uuid: at most 64 bytes",
    ),
    (
        "reconcile bad id",
        Call(type=Call.RECONCILE, reconcile=Call.Reconcile(tasks=[Call.Reconcile.Task(task_id="t\n")])),
        "reconcile.tasks[0].task_id: must be",
    ),
    ("kill bad id", Call(type=Call.KILL, kill=Call.Kill(task_id="a\nb")), "kill.task_id: must be"),
    ("revive many roles", Call(type=Call.REVIVE, revive=Call.Revive(roles=["r"] * 65)), "roles: at most 64"),
]


@pytest.mark.parametrize(("call", "expected"), [r[1:] for r in BAD_CALLS], ids=[r[0] for r in BAD_CALLS])
def test_call_bounds(call: Call, expected: str) -> None:
    errors = validate_call_size(call, max_tasks_per_accept=1000)
    assert any(expected in e for e in errors), errors


def test_accept_at_the_cap_is_fine() -> None:
    assert validate_call_size(_accept(1000), max_tasks_per_accept=1000) == []
    assert validate_call_size(_accept(10, refuse_seconds=5), max_tasks_per_accept=10) == []


def _status(**fields: Any) -> pb.TaskStatus:
    base: dict[str, Any] = {
        "task_id": "t1",
        "framework_id": "fw-1",
        "state": pb.TASK_RUNNING,
        "uuid": b"u" * 16,
    }
    base.update(fields)
    return pb.TaskStatus(**base)


BAD_STATUSES = [
    ("bad task id", _status(task_id="t 1"), "u[0].task_id: must be"),
    ("no framework", _status(framework_id=""), "u[0].framework_id: must not be empty"),
    ("unknown state", _status(state=99), "u[0].state: unknown state 99"),
    ("unspecified state", _status(state=0), "u[0].state"),
    ("unknown reason", _status(reason=999), "u[0].reason: unknown reason"),
    ("huge message", _status(message="m" * 70_000), "u[0].message: at most 65536"),
    ("nan time", _status(timestamp=math.nan), "u[0].timestamp: must be finite"),
    ("huge uuid", _status(uuid=b"u" * 100), "u[0].uuid: at most 64 bytes"),
]


@pytest.mark.parametrize(("s", "expected"), [r[1:] for r in BAD_STATUSES], ids=[r[0] for r in BAD_STATUSES])
def test_status_bounds(s: pb.TaskStatus, expected: str) -> None:
    errors = validate_task_status(s, "u[0]")
    assert any(expected in e for e in errors), errors


def test_bad_updates_are_split_from_good_ones() -> None:
    good, errors = validate_status_updates([_status(), _status(state=99), _status(task_id="t2")], "updates")
    assert [s.task_id for s in good] == ["t1", "t2"]
    assert errors == ["updates[1].state: unknown state 99"]


def test_registration_checks_what_the_agent_reports() -> None:
    reg = agent_pb2.AgentMessage.Register(
        agent_info=_agent(),
        tasks=[_status(task_id="bad id")],
        task_infos=[pb.TaskInfo(task_id="ok", resources=[R(name="cpus", scalar=1)] * 300)],
        frameworks=[pb.FrameworkInfo(id="fw 1", name="x")],
    )
    errors, _ = validate_registration(reg)
    assert any(e.startswith("register.tasks[0].task_id") for e in errors), errors
    assert any(e.startswith("register.task_infos[0].resources: at most 256") for e in errors), errors
    assert any(e.startswith("register.frameworks[0].id") for e in errors), errors
    assert validate_registration(agent_pb2.AgentMessage.Register(agent_info=_agent()))[0] == []


BAD_OPERATOR_REQUESTS = [
    (operator_pb2.KillTaskRequest(task_id="x" * 300), "task_id: must be"),
    (operator_pb2.ReadFileRequest(task_id="t", framework_id="f\n"), "framework_id: must be"),
    (operator_pb2.ReadFileRequest(task_id="t", path="p" * 5000), "path: at most 4096"),
    (operator_pb2.DrainAgentRequest(agent_id="a b"), "agent_id: must be"),
    (operator_pb2.SetQuotaRequest(role="r\x00"), "role: must be printable"),
    (
        operator_pb2.ReserveResourcesRequest(agent_id="a", resources=[R(name="cpus", scalar=1)] * 300),
        "resources: at most 256",
    ),
    (
        operator_pb2.SetWeightsRequest(weights=[operator_pb2.SetWeightsRequest.Weight(role="\t", weight=1)]),
        "weights[0].role",
    ),
]


@pytest.mark.parametrize(("request_", "expected"), BAD_OPERATOR_REQUESTS, ids=lambda x: type(x).__name__)
def test_operator_request_bounds(request_: object, expected: str) -> None:
    errors = validate_operator_request(request_)  # type: ignore[arg-type]
    assert any(expected in e for e in errors), errors


def test_good_operator_requests_pass() -> None:
    assert validate_operator_request(operator_pb2.KillTaskRequest(task_id="t1", framework_id="fw-1")) == []
    assert validate_operator_request(operator_pb2.ListTasksRequest()) == []


def test_reconcile_and_acknowledge_are_capped_per_call() -> None:
    # One RECONCILE of 100,000 ids held the master's loop 1.7 s (security
    # review); a framework with more tasks sends several calls.
    many = [Call.Reconcile.Task(task_id=f"t{i}") for i in range(10_001)]
    errors = validate_call_size(Call(type=Call.RECONCILE, reconcile=Call.Reconcile(tasks=many)), 1000)
    assert any("reconcile.tasks: at most 10000" in e for e in errors), errors[:3]
    ok = Call(type=Call.RECONCILE, reconcile=Call.Reconcile(tasks=many[:10_000]))
    assert validate_call_size(ok, 1000) == []
    acks = [Call.Acknowledge(task_id=f"t{i}", uuid=b"u") for i in range(10_001)]
    errors = validate_call_size(Call(type=Call.ACKNOWLEDGE, acknowledges=acks), 1000)
    assert any("acknowledges: at most 10000" in e for e in errors), errors[:3]


def test_the_sdk_sends_acknowledgements_and_reconciliations_in_calls_the_master_takes() -> None:
    from corral.frameworks.driver import CALL_ITEMS
    from corral.master.validation import MAX_FRAMEWORK_ITEMS_PER_CALL

    assert CALL_ITEMS == MAX_FRAMEWORK_ITEMS_PER_CALL


def test_the_sdk_splits_a_big_reconciliation_into_calls_under_the_cap() -> None:
    from corral.frameworks.driver import CALL_ITEMS, SchedulerDriver
    from corral.frameworks.scheduler import Scheduler

    driver = SchedulerDriver(Scheduler(), name="t", master="127.0.0.1:1")
    sent: list[Call] = []
    driver._call = sent.append  # type: ignore[method-assign]  # capture instead of sending
    driver.reconcile([(f"t{i}", "a") for i in range(2 * CALL_ITEMS + 1)])
    assert [len(c.reconcile.tasks) for c in sent] == [CALL_ITEMS, CALL_ITEMS, 1]
    sent.clear()
    driver.reconcile()  # implicit: one call with no tasks
    assert [len(c.reconcile.tasks) for c in sent] == [0]
    for call in sent:
        assert validate_call_size(call, 1000) == []
