"""TaskInfo → ContainerConfig: the container a task runs in on this host. Pure.

What the host contributes (its agent id, memory, environment, the devices
and seccomp profiles it offers, the pids cap) comes in as a :class:`Host`
value; nothing here reads the environment, the clock or the disk. Making
the sandbox (and handing it to the task's user) is the runtime's job, done
before this translation (slave/task_runner.py). The task's image and
volumes are applied afterwards by slave/task_image.py, which does I/O.

A TaskInfo the host cannot honour raises ContainerError (or ResourceError
for its resources) with a sentence naming the field, which becomes the
task's TASK_FAILED message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.codec import resources_from_proto
from corral.proto import messages_pb2 as pb
from corral.resources import MILLI
from corral.slave.containerizer import ContainerConfig, ContainerError, Isolation

#: at most this many characters of port numbers go into CORRAL_PORTS
PORTS_ENV_MAX = 4096


def _any_profile(name: str) -> str:
    return name


@dataclass(frozen=True)
class Host:
    """What a task's container takes from the agent it runs on."""

    agent_id: str
    #: the agent's total memory (milli-MiB), the limit of a task that asks for none
    total_mem_milli: int
    #: PATH and LANG as the agent has them (tasks inherit these two only)
    env: Mapping[str, str] = field(default_factory=dict)
    #: host device nodes tasks may ask for (``--allowed-devices``)
    allowed_devices: tuple[str, ...] = ()
    task_pids_max: int | None = None
    #: whether a task that does not say runs in a user namespace (``--user-namespaces``)
    user_namespaces: bool = False
    #: a task's ``seccomp_profile`` → the profile it runs under; raises
    #: ContainerError for one the agent does not allow (SeccompPolicy.resolve)
    resolve_seccomp: Callable[[str], str] = _any_profile


def task_user(info: pb.TaskInfo) -> tuple[int, int] | None:
    """The (uid, gid) a task asks to run as; None: the agent's own."""
    container = info.container
    if not container.HasField("uid"):
        return None
    return (container.uid, container.gid if container.HasField("gid") else container.uid)


def task_argv(command: pb.CommandInfo) -> tuple[str, ...]:
    """What is exec'd: a shell command goes through ``/bin/sh -c``."""
    if command.shell:
        return ("/bin/sh", "-c", command.value)
    return tuple(command.arguments) or (command.value,)


def task_env(info: pb.TaskInfo, framework_id: str, sandbox: Path, host: Host) -> dict[str, str]:
    """The task's environment: the host's PATH and LANG, corral's ``CORRAL_*``
    variables, then the task's own (which win)."""
    wanted = resources_from_proto(info.resources)
    env = {
        "PATH": host.env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": host.env.get("LANG", "C.UTF-8"),
        "HOME": str(sandbox),
        "CORRAL_SANDBOX": str(sandbox),
        "CORRAL_TASK_ID": info.task_id,
        "CORRAL_FRAMEWORK_ID": framework_id,
        "CORRAL_AGENT_ID": host.agent_id,
        "CORRAL_CPUS": f"{wanted.scalar('cpus') / MILLI:g}",
        "CORRAL_MEM_MIB": f"{wanted.scalar('mem') / MILLI:g}",
    }
    ports = wanted.range("ports")
    if ports:
        numbers = ",".join(str(p) for b, e in ports.intervals for p in range(b, e + 1))
        env["CORRAL_PORTS"] = numbers[:PORTS_ENV_MAX]
    env.update(info.command.environment)
    return env


def container_config(
    info: pb.TaskInfo, framework_id: str, container_id: str, sandbox: Path, host: Host
) -> ContainerConfig:
    """The container ``info`` runs in (before its image and volumes are applied)."""
    wanted = resources_from_proto(info.resources)
    env = task_env(info, framework_id, sandbox, host)
    mem_milli = wanted.scalar("mem") or host.total_mem_milli
    container = info.container
    for i, device in enumerate(container.devices):
        if device not in host.allowed_devices:
            raise ContainerError(
                f"container.devices[{i}]: {device!r} is not offered by this agent "
                f"(--allowed-devices: {', '.join(host.allowed_devices) or 'none'})"
            )
    isolation = Isolation(
        network="none" if container.network == pb.ContainerInfo.NONE else "host",
        hostname=container.hostname or None,
        user=task_user(info),
        seccomp_profile=host.resolve_seccomp(container.seccomp_profile),
        devices=tuple(container.devices),
        user_namespace=(
            container.user_namespace if container.HasField("user_namespace") else host.user_namespaces
        ),
    )
    return ContainerConfig(
        container_id=container_id,
        argv=task_argv(info.command),
        env=env,
        sandbox=sandbox,
        cpus_milli=wanted.scalar("cpus") or 10,
        mem_bytes=mem_milli * 1024 * 1024 // MILLI,
        isolation=isolation,
        pids_max=host.task_pids_max,
        # A task that asked for no disk is not limited (as in Mesos).
        disk_bytes=(wanted.scalar("disk") * 1024 * 1024 // MILLI) or None,
    )
