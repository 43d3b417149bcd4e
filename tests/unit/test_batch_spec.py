"""frameworks/batch/spec.py: TOML job specs, errors that name the key, expansion into tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.frameworks.batch.spec import MAX_TASKS, JobSpec, JobSpecError, TaskGroup, load_job, parse_job
from corral.frameworks.types import Volume
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

REPO = Path(__file__).resolve().parents[2]


def job(*groups: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "squares", **top, "tasks": list(groups)}


def test_parse_good_job_with_defaults() -> None:
    spec = parse_job(job({"command": "true"}, {"name": "b", "command": "x", "cpus": 1, "mem": 0, "count": 2}))
    assert spec == JobSpec(
        "squares",
        (
            TaskGroup(name="task0", command="true"),
            TaskGroup(name="b", command="x", cpus=1.0, mem=0.0, count=2),
        ),
    )


def test_name_defaults_to_file_stem() -> None:
    assert parse_job({"tasks": [{"command": "true"}]}, default_name="nightly").name == "nightly"


def test_count_expands_into_indexed_tasks() -> None:
    spec = parse_job(
        job(
            {"name": "sq", "command": "echo $CORRAL_TASK_INDEX", "count": 3, "cpus": 0.1, "mem": 32},
            {"name": "one", "command": "true", "env": {"GREETING": "hi", "N": 5}, "kill_grace_s": 1},
        )
    )
    tasks = spec.tasks("J1")
    assert [t.task_id for t in tasks] == ["J1.sq.0", "J1.sq.1", "J1.sq.2", "J1.one.0"]
    assert [t.name for t in tasks] == ["sq[0]", "sq[1]", "sq[2]", "one"]
    assert [t.env["CORRAL_TASK_INDEX"] for t in tasks] == ["0", "1", "2", "0"]
    assert all(t.env["CORRAL_JOB"] == "squares" for t in tasks)
    assert tasks[3].env["GREETING"] == "hi"
    assert tasks[3].env["N"] == "5"
    assert tasks[3].kill_grace_s == 1.0
    assert tasks[0].resources == Resources.of(cpus=0.1, mem=32)
    assert tasks[0].command == "echo $CORRAL_TASK_INDEX"


BAD = [
    ("unknown top key", job({"command": "x"}, priority=1), "unknown key(s) at the top level: ['priority']"),
    ("bad job name", job({"command": "x"}, name="a b"), "name: must be"),
    ("no tasks", {"name": "x"}, "tasks: needs at least one"),
    ("empty tasks", job(), "tasks: needs at least one"),
    ("group not a table", {"tasks": ["echo"]}, "tasks[0]: must be a table"),
    ("unknown group key", job({"command": "x", "cpu": 1}), "tasks[0]: unknown key(s) ['cpu']"),
    ("bad group name", job({"command": "x", "name": "a/b"}), "tasks[0].name: must be"),
    ("no command", job({"name": "a"}), "tasks[0].command: must be a non-empty string"),
    ("empty command", job({"command": "   "}), "tasks[0].command: must be a non-empty string"),
    ("command list", job({"command": ["echo"]}), "tasks[0].command"),
    ("cpus string", job({"command": "x", "cpus": "1"}), "tasks[0].cpus: must be a number, got '1'"),
    ("cpus bool", job({"command": "x", "cpus": True}), "tasks[0].cpus: must be a number"),
    ("negative mem", job({"command": "x", "mem": -1}), "tasks[0].mem: must be >= 0, got -1"),
    ("nan cpus", job({"command": "x", "cpus": float("nan")}), "tasks[0].cpus"),
    ("inf disk", job({"command": "x", "disk": float("inf")}), "tasks[0].disk"),
    ("negative grace", job({"command": "x", "kill_grace_s": -1}), "tasks[0].kill_grace_s"),
    ("no cpus or mem", job({"command": "x", "cpus": 0, "mem": 0}), "tasks[0]: needs cpus > 0 or mem > 0"),
    ("count zero", job({"command": "x", "count": 0}), "tasks[0].count: must be an integer >= 1, got 0"),
    ("count float", job({"command": "x", "count": 2.5}), "tasks[0].count"),
    ("count string", job({"command": "x", "count": "3"}), "tasks[0].count"),
    ("count bool", job({"command": "x", "count": True}), "tasks[0].count"),
    ("env not table", job({"command": "x", "env": "A=1"}), "tasks[0].env: must be a table of strings"),
    ("env nested", job({"command": "x", "env": {"A": {"b": 1}}}), "tasks[0].env"),
    (
        "duplicate group",
        job({"name": "a", "command": "x"}, {"name": "b", "command": "x"}, {"name": "a", "command": "y"}),
        "tasks[0].name: 'a' is used by more than one group",
    ),
    ("second group bad", job({"command": "x"}, {"command": "x", "mem": "lots"}), "tasks[1].mem"),
    ("too many tasks", job({"command": "x", "count": MAX_TASKS + 1}), f"at most {MAX_TASKS} tasks"),
    ("image not a string", job({"command": "x", "image": 3}), "tasks[0].image: must be a string"),
    (
        "read-only root alone",
        job({"command": "x", "read_only_root": True}),
        "tasks[0].read_only_root: needs an image",
    ),
    ("volumes not a list", job({"command": "x", "volumes": {"a": 1}}), "tasks[0].volumes: must be an array"),
    (
        "volume no path",
        job({"command": "x", "volumes": [{"host_path": "/s"}]}),
        "tasks[0].volumes[0].container_path",
    ),
    (
        "volume relative host",
        job({"command": "x", "volumes": [{"container_path": "/d", "host_path": "s"}]}),
        "tasks[0].volumes[0].host_path: must be an absolute path",
    ),
    (
        "volume unknown key",
        job({"command": "x", "volumes": [{"container_path": "/d", "ro": True}]}),
        "tasks[0].volumes[0]: unknown key(s) ['ro']",
    ),
    (
        "tmpfs size on bind",
        job({"command": "x", "volumes": [{"container_path": "/d", "host_path": "/s", "tmpfs_size_mib": 1}]}),
        "tasks[0].volumes[0].tmpfs_size_mib: only for tmpfs volumes",
    ),
    (
        "unknown concurrency policy",
        job({"command": "x"}, schedule="@daily", concurrency_policy="skip"),
        "concurrency_policy: must be one of allow, forbid, replace, got 'skip'",
    ),
    (
        "concurrency policy not a string",
        job({"command": "x"}, schedule="@daily", concurrency_policy=1),
        "concurrency_policy: must be one of",
    ),
    (
        "concurrency policy without a schedule",
        job({"command": "x"}, concurrency_policy="allow"),
        "concurrency_policy: only for a periodic job (one with a schedule)",
    ),
]


def test_concurrency_policy_defaults_to_forbid_and_ignores_case() -> None:
    assert parse_job(job({"command": "x"}, schedule="@daily")).concurrency_policy == "forbid"
    for given, policy in [("Allow", "allow"), ("REPLACE", "replace"), ("forbid", "forbid")]:
        spec = parse_job(job({"command": "x"}, schedule="@daily", concurrency_policy=given))
        assert spec.concurrency_policy == policy


def test_a_bad_concurrency_policy_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('schedule = "@daily"\nconcurrency_policy = "never"\n[[tasks]]\ncommand = "true"\n')
    with pytest.raises(JobSpecError, match=r"p.toml:2: concurrency_policy: must be one of"):
        load_job(path)


def test_image_and_volumes_reach_the_tasks() -> None:
    spec = parse_job(
        job(
            {
                "name": "img",
                "image": "busybox:test",
                "read_only_root": True,
                "volumes": [
                    {"container_path": "/data", "host_path": "/srv", "read_only": True},
                    {"container_path": "scratch", "tmpfs_size_mib": 16},
                ],
            }
        )
    )
    (task,) = spec.tasks("J")
    assert task.image == "busybox:test"
    assert task.read_only_root
    assert task.command == ""  # the image's Entrypoint and Cmd
    assert task.volumes == (Volume("/data", "/srv", True, 0), Volume("scratch", "", False, 16 << 20))
    info = task.to_proto("agent")
    assert info.container.image == "busybox:test"
    assert info.container.volumes[1].tmpfs_size_bytes == 16 << 20


def test_a_registry_image_and_its_pull_policy_reach_the_tasks() -> None:
    spec = parse_job(
        job({"name": "r", "image": "registry.example:5000/team/app:v1", "pull_policy": "always"})
    )
    (task,) = spec.tasks("J")
    assert task.to_proto("agent").container.pull_policy == pb.ContainerInfo.ALWAYS
    with pytest.raises(JobSpecError, match=r"tasks\[0\].pull_policy: only for a registry image"):
        parse_job(job({"name": "r", "image": "busybox:1", "pull_policy": "always"}))
    with pytest.raises(JobSpecError, match=r"tasks\[0\].pull_policy: one of if-not-present, always, never"):
        parse_job(job({"name": "r", "image": "localhost/app", "pull_policy": "sometimes"}))


@pytest.mark.parametrize(("data", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_job_names_the_key(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(JobSpecError) as err:
        parse_job(data)
    assert expected in str(err.value)


def test_load_job_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(JobSpecError, match="no such file") as err:
        load_job(missing)
    assert str(missing) in str(err.value)


def test_load_job_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[tasks]\ncommand = \n')
    with pytest.raises(JobSpecError, match="not valid TOML") as err:
        load_job(bad)
    assert str(bad) in str(err.value)


def test_load_job_uses_stem_as_default_name(tmp_path: Path) -> None:
    path = tmp_path / "nightly-etl.toml"
    path.write_text('[[tasks]]\ncommand = "true"\ncount = 2\n')
    spec = load_job(path)
    assert spec.name == "nightly-etl"
    assert [t.task_id for t in spec.tasks("J")] == ["J.task0.0", "J.task0.1"]


def test_demo_example_loads() -> None:
    spec = load_job(REPO / "examples" / "jobs" / "demo.toml")
    assert spec.name == "demo"
    assert [(g.name, g.count) for g in spec.groups] == [("prime-count", 12), ("hello", 1)]
    tasks = spec.tasks("demo-1")
    assert len(tasks) == 13
    assert tasks[11].task_id == "demo-1.prime-count.11"
    assert tasks[11].env["CORRAL_TASK_INDEX"] == "11"
    assert tasks[0].resources == Resources.of(cpus=0.2, mem=64)


def test_network_and_user_options() -> None:
    from corral.frameworks.batch.spec import parse_user

    spec = parse_job({"tasks": [{"command": "true", "network": "none", "user": "1000:100"}]})
    (task,) = spec.tasks("j")
    assert (task.network, task.user) == ("none", (1000, 100))
    assert parse_user(65534) == (65534, 65534)
    for bad in ["nobody", "1:x", "-1", True]:
        with pytest.raises(JobSpecError, match="user"):
            parse_user(bad)
    with pytest.raises(JobSpecError, match=r"tasks\[0\]\.network"):
        parse_job({"tasks": [{"command": "true", "network": "bridge"}]})
