"""slave/task_config.py: TaskInfo → ContainerConfig, with the host passed in."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.codec import resources_to_proto
from corral.proto import messages_pb2 as pb
from corral.resources import MILLI, RangeSet, Resources
from corral.slave import task_config
from corral.slave.containerizer import ContainerError

SANDBOX = Path("/work/sandboxes/f1/web-1234abcd")
HOST = task_config.Host(
    agent_id="a1",
    total_mem_milli=4096 * MILLI,
    env={"PATH": "/opt/bin:/usr/bin", "LANG": "en_GB.UTF-8", "SECRET": "not for tasks"},
    allowed_devices=("/dev/fuse",),
    task_pids_max=128,
)


def task(command: str = "echo hi", shell: bool = True, **resources: float) -> pb.TaskInfo:
    info = pb.TaskInfo(task_id="web", resources=resources_to_proto(Resources.of(**resources)))
    info.command.shell = shell
    if shell:
        info.command.value = command
    else:
        info.command.arguments.extend(command.split())
    return info


def config(info: pb.TaskInfo, host: task_config.Host = HOST) -> task_config.ContainerConfig:
    return task_config.container_config(info, "f1", "web-1234abcd", SANDBOX, host)


def test_a_shell_command_runs_through_sh_and_arguments_as_they_are() -> None:
    assert config(task("echo hi")).argv == ("/bin/sh", "-c", "echo hi")
    assert config(task("python3 -m http.server", shell=False)).argv == ("python3", "-m", "http.server")
    bare = pb.TaskInfo(task_id="t", command=pb.CommandInfo(value="/bin/true"))
    assert config(bare).argv == ("/bin/true",)


def test_limits_come_from_the_resources_and_the_host() -> None:
    c = config(task(cpus=1.5, mem=256, disk=100))
    assert (c.cpus_milli, c.mem_bytes, c.disk_bytes, c.pids_max) == (1500, 256 << 20, 100 << 20, 128)
    # Asking for nothing: the smallest CPU share, the host's memory, no disk limit.
    c = config(task())
    assert (c.cpus_milli, c.mem_bytes, c.disk_bytes) == (10, 4096 << 20, None)


def test_the_environment_is_the_hosts_path_and_lang_corrals_then_the_tasks() -> None:
    info = task(cpus=0.5, mem=64, ranges={"ports": RangeSet.of([(31000, 31002)])})
    info.command.environment["LANG"] = "C"
    env = config(info).env
    assert env["PATH"] == "/opt/bin:/usr/bin"
    assert env["LANG"] == "C"
    assert "SECRET" not in env
    assert env["HOME"] == env["CORRAL_SANDBOX"] == str(SANDBOX)
    assert (env["CORRAL_TASK_ID"], env["CORRAL_FRAMEWORK_ID"], env["CORRAL_AGENT_ID"]) == ("web", "f1", "a1")
    assert (env["CORRAL_CPUS"], env["CORRAL_MEM_MIB"], env["CORRAL_PORTS"]) == (
        "0.5",
        "64",
        "31000,31001,31002",
    )
    bare_host = task_config.Host(agent_id="a1", total_mem_milli=MILLI)
    assert config(task(), bare_host).env["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_isolation_follows_the_container_info() -> None:
    info = task()
    info.container.network = pb.ContainerInfo.NONE
    info.container.hostname = "box"
    info.container.uid = 1000
    info.container.devices.append("/dev/fuse")
    iso = config(info).isolation
    assert (iso.network, iso.hostname, iso.user, iso.devices) == ("none", "box", (1000, 1000), ("/dev/fuse",))
    assert task_config.task_user(info) == (1000, 1000)
    info.container.gid = 50
    assert task_config.task_user(info) == (1000, 50)
    assert task_config.task_user(task()) is None


def test_a_device_the_host_does_not_offer_is_refused_naming_the_field() -> None:
    info = task()
    info.container.devices.extend(["/dev/fuse", "/dev/kvm"])
    with pytest.raises(ContainerError, match=r"container\.devices\[1\]: '/dev/kvm' is not offered"):
        config(info)


def test_the_seccomp_profile_is_resolved_by_the_host() -> None:
    def strict_only(name: str) -> str:
        if name not in ("", "strict"):
            raise ContainerError(f"container.seccomp_profile: {name!r} is not allowed here")
        return name or "default"

    host = task_config.Host(agent_id="a1", total_mem_milli=MILLI, resolve_seccomp=strict_only)
    info = task()
    assert config(info, host).isolation.seccomp_profile == "default"
    info.container.seccomp_profile = "lax"
    with pytest.raises(ContainerError, match="'lax' is not allowed"):
        config(info, host)


@given(st.integers(1, 64_000), st.integers(1, 1 << 20), st.integers(0, 1 << 20), st.text(max_size=30))
def test_any_valid_task_gives_a_valid_container(cpus_milli: int, mem: int, disk: int, command: str) -> None:
    info = task(command or "true", cpus=cpus_milli / MILLI, mem=mem, disk=disk)
    c = config(info)
    if "\0" not in command:
        c.validate()
    assert c.cpus_milli == cpus_milli
    assert c.mem_bytes == mem << 20
    assert c.disk_bytes == ((disk << 20) or None)
