"""master/validation.py: every bad message is rejected with the field path named.

Table-driven as Mesos' validation tests are: each row is one mistake, the
expected substring is the path the error must name.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from corral.master.validation import validate_agent_info, validate_framework_info, validate_id, validate_task
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

R = pb.Resource
V = pb.Value
WHERE = "accept.operations[0].launch.task_infos[2]"
OFFER = Resources.parse("cpus:2;mem:1024;disk:100;ports:[31000-31009]")


def _ports(*pairs: tuple[int, int]) -> R:
    return R(name="ports", ranges=V.Ranges(range=[V.Range(begin=b, end=e) for b, e in pairs]))


def task(**fields: Any) -> pb.TaskInfo:
    base: dict[str, Any] = {
        "name": "t",
        "task_id": "job.group.0",
        "command": pb.CommandInfo(shell=True, value="true"),
        "resources": [R(name="cpus", scalar=1), R(name="mem", scalar=128)],
    }
    base.update(fields)
    return pb.TaskInfo(**base)


def test_good_task_is_valid_and_returns_its_resources() -> None:
    t = task(resources=[R(name="cpus", scalar=0.5), R(name="mem", scalar=1024), _ports((31000, 31001))])
    errors, wanted = validate_task(t, WHERE, OFFER, active_task_ids={"other"})
    assert errors == []
    assert wanted == Resources.parse("cpus:0.5;mem:1024;ports:[31000-31001]")


def test_argv_task_is_valid() -> None:
    t = task(command=pb.CommandInfo(shell=False, arguments=["/bin/echo", "hi"]))
    assert validate_task(t, WHERE, OFFER, ())[0] == []


BAD_TASKS = [
    ("empty id", task(task_id=""), f"{WHERE}.task_id: must not be empty"),
    ("bad chars", task(task_id="a b/c"), f"{WHERE}.task_id: must be"),
    ("too long", task(task_id="x" * 201), f"{WHERE}.task_id"),
    ("duplicate id", task(task_id="live"), f"{WHERE}.task_id: 'live' is already in use"),
    ("empty shell", task(command=pb.CommandInfo(shell=True, value="  ")), f"{WHERE}.command.value"),
    ("argv without value", task(command=pb.CommandInfo(shell=False)), f"{WHERE}.command: needs a value"),
    (
        "negative kill grace",
        task(kill_policy=pb.KillPolicy(grace_period_s=-1)),
        f"{WHERE}.kill_policy.grace_period_s: must be finite, >= 0 and <= 3600 seconds, got -1",
    ),
    ("negative cpus", task(resources=[R(name="cpus", scalar=-1)]), f"{WHERE}.resources[0] (cpus).scalar"),
    (
        "nan mem",
        task(resources=[R(name="cpus", scalar=1), R(name="mem", scalar=math.nan)]),
        f"{WHERE}.resources[1] (mem).scalar: must be finite",
    ),
    ("inf cpus", task(resources=[R(name="cpus", scalar=math.inf)]), f"{WHERE}.resources[0] (cpus).scalar"),
    (
        # Rounding would make it 0: refused, not silently dropped (corral.resources.to_milli).
        "cpus below the resolution",
        task(resources=[R(name="cpus", scalar=0.0001), R(name="mem", scalar=32)]),
        f"{WHERE}.resources[0] (cpus).scalar: 0.0001 is below the resolution of 0.001",
    ),
    ("ports as scalar", task(resources=[R(name="ports", scalar=2)]), f"{WHERE}.resources[0] (ports)"),
    ("bad name", task(resources=[R(name="CPUS", scalar=2)]), f"{WHERE}.resources[0].name"),
    (
        "unknown resource",
        task(resources=[R(name="cpus", scalar=1), R(name="gpus", scalar=1)]),
        f"{WHERE}.resources.gpus: unknown resource",
    ),
    (
        "more cpus than offered",
        task(resources=[R(name="cpus", scalar=2.5), R(name="mem", scalar=1)]),
        f"{WHERE}.resources.cpus: asks for 2.5 but the offer has 2 left",
    ),
    (
        "reserved cpus not in offer",
        task(resources=[R(name="cpus", role="ml", scalar=1)]),
        f"{WHERE}.resources.cpus: asks for 1 but the offer has 0 left",
    ),
    (
        "ports outside offer",
        task(resources=[R(name="cpus", scalar=1), _ports((31009, 31010))]),
        f"{WHERE}.resources.ports: [31009-31010] is not in the offer ([31000-31009] left)",
    ),
    (
        "no cpus and no mem",
        task(resources=[R(name="disk", scalar=10)]),
        f"{WHERE}.resources: must ask for some cpus or mem",
    ),
    ("no resources at all", task(resources=[]), f"{WHERE}.resources: must ask for some cpus or mem"),
    (
        "bad image name",
        task(container=pb.ContainerInfo(image="bad name!")),
        f"{WHERE}.container.image: must be",
    ),
    (
        "image path with ..",
        task(container=pb.ContainerInfo(image="/srv/../etc/x.tar")),
        f"{WHERE}.container.image: a tarball path must be absolute",
    ),
    (
        "read-only root without image",
        task(container=pb.ContainerInfo(read_only_root=True)),
        f"{WHERE}.container.read_only_root: needs an image",
    ),
    (
        "volume without a path",
        task(container=pb.ContainerInfo(volumes=[pb.Volume(host_path="/srv")])),
        f"{WHERE}.container.volumes[0].container_path: must be a non-empty path",
    ),
    (
        "volume escaping",
        task(container=pb.ContainerInfo(volumes=[pb.Volume(container_path="a/../../b")])),
        f"{WHERE}.container.volumes[0].container_path: must not contain '..'",
    ),
    (
        "volume over /proc",
        task(container=pb.ContainerInfo(image="x", volumes=[pb.Volume(container_path="/proc/sys")])),
        f"{WHERE}.container.volumes[0].container_path: /proc/sys is managed by the containerizer",
    ),
    (
        "relative host path",
        task(container=pb.ContainerInfo(volumes=[pb.Volume(container_path="/d", host_path="srv")])),
        f"{WHERE}.container.volumes[0].host_path: must be an absolute path",
    ),
    (
        "tmpfs size on a bind",
        task(
            container=pb.ContainerInfo(
                volumes=[pb.Volume(container_path="/d", host_path="/s", tmpfs_size_bytes=1)]
            )
        ),
        f"{WHERE}.container.volumes[0].tmpfs_size_bytes: only for tmpfs volumes",
    ),
    (
        "huge tmpfs",
        task(container=pb.ContainerInfo(volumes=[pb.Volume(container_path="/d", tmpfs_size_bytes=1 << 50)])),
        f"{WHERE}.container.volumes[0].tmpfs_size_bytes: must be at most",
    ),
    (
        "same volume path twice",
        task(
            container=pb.ContainerInfo(
                volumes=[pb.Volume(container_path="/d"), pb.Volume(container_path="/d/")]
            )
        ),
        f"{WHERE}.container.volumes[1].container_path: '/d/' is used twice",
    ),
    (
        "registry ref with a bad digest",
        task(container=pb.ContainerInfo(image="registry:5000/team/app@sha256:abc")),
        f"{WHERE}.container.image: image 'registry:5000/team/app@sha256:abc': the digest must be sha256:",
    ),
    (
        "registry ref with an upper-case repository",
        task(container=pb.ContainerInfo(image="registry.example:5000/Team/App:v1")),
        "bad repository 'Team/App'",
    ),
    (
        "pull policy without a registry image",
        task(container=pb.ContainerInfo(image="busybox:1", pull_policy=pb.ContainerInfo.ALWAYS)),
        f"{WHERE}.container.pull_policy: only for a registry image",
    ),
    (
        "unknown pull policy",
        task(container=pb.ContainerInfo(image="localhost:5000/app", pull_policy=9)),  # type: ignore[arg-type]
        f"{WHERE}.container.pull_policy: unknown value 9",
    ),
]


def test_image_tasks_and_volumes_are_valid() -> None:
    volumes = [
        pb.Volume(container_path="/data", host_path="/srv", read_only=True),
        pb.Volume(container_path="t"),
    ]
    digest = "sha256:" + "ab" * 32
    for image in (
        "busybox",
        "busybox:1.35",
        "registry:5000/team/app:v1",
        f"localhost/app@{digest}",
        f"registry.example/team/app:v1@{digest}",
        "/srv/images/app.tar",
    ):
        t = task(container=pb.ContainerInfo(image=image, volumes=volumes, read_only_root=True))
        assert validate_task(t, WHERE, OFFER, ())[0] == [], image
    # With an image, no command runs its Entrypoint and Cmd.
    t = task(command=pb.CommandInfo(shell=True), container=pb.ContainerInfo(image="busybox"))
    assert validate_task(t, WHERE, OFFER, ())[0] == []


@pytest.mark.parametrize(("t", "expected"), [row[1:] for row in BAD_TASKS], ids=[row[0] for row in BAD_TASKS])
def test_bad_task_names_the_field(t: pb.TaskInfo, expected: str) -> None:
    errors, _ = validate_task(t, WHERE, OFFER, active_task_ids={"live"})
    assert errors, "expected the task to be rejected"
    assert any(expected in e for e in errors), errors


def test_errors_accumulate() -> None:
    t = task(task_id="", command=pb.CommandInfo(shell=True), kill_policy=pb.KillPolicy(grace_period_s=-2))
    errors, _ = validate_task(t, "tasks[0]", OFFER, ())
    assert len(errors) == 3
    assert [e.split(":")[0] for e in errors] == [
        "tasks[0].task_id",
        "tasks[0].command.value",
        "tasks[0].kill_policy.grace_period_s",
    ]


def test_ports_with_no_ports_in_offer() -> None:
    t = task(resources=[R(name="cpus", scalar=1), R(name="mem", scalar=10), _ports((1, 1))])
    errors, _ = validate_task(t, "tasks[0]", Resources.parse("cpus:1;mem:10"), ())
    assert errors == ["tasks[0].resources.ports: unknown resource, the offer has none"]


def test_nan_kill_grace_is_rejected() -> None:
    errors, _ = validate_task(task(kill_policy=pb.KillPolicy(grace_period_s=math.nan)), "t", OFFER, ())
    assert any("kill_policy.grace_period_s" in e for e in errors), errors


def test_set_item_not_in_offer_is_rejected() -> None:
    offer = OFFER + Resources.parse("zones:{a,b}")
    t = task(resources=[R(name="cpus", scalar=1), R(name="zones", set=V.Set(item=["c"]))])
    errors, _ = validate_task(t, "tasks[0]", offer, ())
    assert any("tasks[0].resources.zones" in e for e in errors), errors


def test_star_role_task_fits_unreserved_offer() -> None:
    t = task(resources=[R(name="cpus", role="*", scalar=1), R(name="mem", role="*", scalar=10)])
    assert validate_task(t, "tasks[0]", OFFER, ())[0] == []


def test_a_task_without_memory_is_refused() -> None:
    # The agent could only give it its whole memory, which no offer counted.
    t = task(resources=[R(name="cpus", scalar=1)])
    assert validate_task(t, "tasks[0]", OFFER, ())[0] == ["tasks[0].resources.mem: required (MiB), got none"]


# -- framework ----------------------------------------------------------------


def test_good_framework_info() -> None:
    info = pb.FrameworkInfo(name="batch", id="fw-1", roles=["ml", "web/prod", "*"], failover_timeout_s=60)
    assert validate_framework_info(info) == []


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (pb.FrameworkInfo(name=""), "framework_info.name: must not be empty"),
        (pb.FrameworkInfo(name="   "), "framework_info.name: must not be empty"),
        (pb.FrameworkInfo(name="x", id="bad id"), "framework_info.id: must be"),
        (
            pb.FrameworkInfo(name="x", failover_timeout_s=-1),
            "framework_info.failover_timeout_s: must be finite, >= 0",
        ),
        (pb.FrameworkInfo(name="x", failover_timeout_s=math.nan), "framework_info.failover_timeout_s"),
        (pb.FrameworkInfo(name="x", roles=["ok", "a b"]), "framework_info.roles[1]: role 'a b'"),
        (pb.FrameworkInfo(name="x", roles=["/lead"]), "framework_info.roles[0]"),
        (pb.FrameworkInfo(name="x", roles=["trail/"]), "framework_info.roles[0]"),
    ],
    ids=[
        "empty name",
        "blank name",
        "bad id",
        "negative failover",
        "nan failover",
        "bad role",
        "lead",
        "trail",
    ],
)
def test_bad_framework_info_names_the_field(info: pb.FrameworkInfo, expected: str) -> None:
    errors = validate_framework_info(info)
    assert any(expected in e for e in errors), errors


# -- agent --------------------------------------------------------------------


def test_good_agent_info_returns_total() -> None:
    info = pb.AgentInfo(
        hostname="h1",
        resources=[R(name="cpus", scalar=4), R(name="mem", scalar=4096), _ports((31000, 31999))],
        attributes=[pb.Attribute(name="rack", value="r1"), pb.Attribute(name="zone", value="a")],
    )
    errors, total = validate_agent_info(info)
    assert errors == []
    assert total == Resources.parse("cpus:4;mem:4096;ports:[31000-31999]")


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (pb.AgentInfo(hostname=""), "agent_info.hostname: must not be empty"),
        (pb.AgentInfo(hostname="h", id="a/b"), "agent_info.id: must be"),
        (
            pb.AgentInfo(hostname="h", resources=[R(name="cpus", scalar=-4)]),
            "agent_info.resources[0] (cpus).scalar: must be >= 0",
        ),
        (
            pb.AgentInfo(hostname="h", resources=[R(name="mem", scalar=1), R(name="ports", scalar=1)]),
            "agent_info.resources[1] (ports)",
        ),
        (
            pb.AgentInfo(hostname="h", resources=[R(name="cpus", ranges=V.Ranges())]),
            "agent_info.resources[0] (cpus): cpus must be a scalar",
        ),
        (pb.AgentInfo(hostname="h", resources=[R(name="Bad", scalar=1)]), "agent_info.resources[0].name"),
        (
            pb.AgentInfo(hostname="h", attributes=[pb.Attribute(name="", value="x")]),
            "agent_info.attributes[0].name: must not be empty",
        ),
        (
            pb.AgentInfo(
                hostname="h",
                attributes=[pb.Attribute(name="rack", value="1"), pb.Attribute(name="rack", value="2")],
            ),
            "agent_info.attributes[1].name: 'rack' given more than once",
        ),
    ],
    ids=[
        "empty hostname",
        "bad id",
        "negative",
        "ports scalar",
        "cpus ranges",
        "bad name",
        "attr",
        "dup attr",
    ],
)
def test_bad_agent_info_names_the_field(info: pb.AgentInfo, expected: str) -> None:
    errors, _ = validate_agent_info(info)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("good", ["a", "job.group.0", "fw-1:x@host_2", "x" * 200])
def test_validate_id_accepts(good: str) -> None:
    assert validate_id(good, "f") == []
