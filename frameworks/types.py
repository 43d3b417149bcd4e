"""The values a framework author sees: plain frozen dataclasses, no protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.codec import attributes_from_proto, resources_from_proto, resources_to_proto
from corral.frameworks.health import HealthCheck
from corral.frameworks.states import Reason, Source, TaskState
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

# TaskState lived here first; it stays importable from here.
__all__ = ["MasterInfo", "Offer", "Reason", "Source", "Task", "TaskState", "TaskStatus", "Volume"]


@dataclass(frozen=True)
class MasterInfo:
    id: str
    address: str
    version: str


@dataclass(frozen=True)
class Offer:
    """Resources of one agent offered to this framework until used, declined,
    rescinded or expired."""

    id: str
    agent_id: str
    hostname: str
    resources: Resources
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: the role the resources are allocated to (one of the framework's roles)
    role: str = "*"

    @classmethod
    def from_proto(cls, offer: pb.Offer) -> Offer:
        return cls(
            id=offer.id,
            agent_id=offer.agent_id,
            hostname=offer.hostname,
            resources=resources_from_proto(offer.resources),
            attributes=attributes_from_proto(offer.attributes),
            role=offer.role or "*",
        )


@dataclass(frozen=True)
class TaskStatus:
    """One status update of a task: its new ``state``, and why.

    Updates of one task arrive in order, at least once (``uuid`` tells a
    duplicate); the driver acknowledges each after ``status_update`` returns.
    """

    task_id: str
    state: TaskState
    #: why the state changed (a ``Reason``, a string enum; UNSPECIFIED is "")
    reason: Reason = Reason.UNSPECIFIED
    #: a sentence for people, e.g. "command exited with status 1"
    message: str = ""
    agent_id: str = ""
    #: who said so: MASTER or AGENT
    source: Source = Source.UNSPECIFIED
    #: the command's exit status, when it exited
    exit_code: int | None = None
    #: the signal that ended the command, when one did
    signal: int | None = None
    #: the last lines of the command's stderr, on terminal updates
    stderr_tail: str = ""
    #: the limit a CONTAINER_LIMITATION_* reason hit (bytes, or a count of processes)
    limit: int | None = None
    #: the peak usage against that limit
    peak: int | None = None
    #: when the update was made (seconds since the epoch, the sender's clock)
    timestamp: float = 0.0
    #: set on updates that need an acknowledgement (empty on reconciliation answers)
    uuid: bytes = b""
    #: the agent's health check verdict (None: no check, or no verdict yet)
    healthy: bool | None = None
    #: a terminal update from the agent: CPU seconds (user + system) and the
    #: memory high-water mark of the task's cgroup (None: not measured)
    cpu_time_s: float | None = None
    mem_peak_bytes: int | None = None
    #: the task's labels, as it was launched with them
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, s: pb.TaskStatus) -> TaskStatus:
        return cls(
            task_id=s.task_id,
            state=TaskState.from_proto(s.state),
            reason=Reason.from_proto(s.reason),
            message=s.message,
            agent_id=s.agent_id,
            source=Source.from_proto(s.source),
            exit_code=s.exit_code if s.HasField("exit_code") else None,
            signal=s.signal if s.HasField("signal") else None,
            stderr_tail=s.stderr_tail,
            limit=s.limit if s.HasField("limit") else None,
            peak=s.peak if s.HasField("peak") else None,
            timestamp=s.timestamp,
            uuid=s.uuid,
            healthy=s.healthy if s.HasField("healthy") else None,
            cpu_time_s=s.cpu_time_s if s.HasField("cpu_time_s") else None,
            mem_peak_bytes=s.mem_peak_bytes if s.HasField("mem_peak_bytes") else None,
            labels={label.key: label.value for label in s.labels},
        )


@dataclass(frozen=True)
class Volume:
    """A volume of a task's container.

    ``container_path``: absolute (in the image; without an image, an existing
    path on the agent) or relative to the sandbox. With ``host_path`` it is a
    bind mount of that path on the agent, else a tmpfs of ``tmpfs_size_bytes``
    (0: 64 MiB).

    >>> Volume("/data", "/srv/shared", read_only=True)
    Volume(container_path='/data', host_path='/srv/shared', read_only=True, tmpfs_size_bytes=0)
    """

    container_path: str
    host_path: str = ""
    read_only: bool = False
    tmpfs_size_bytes: int = 0

    def to_proto(self) -> pb.Volume:
        return pb.Volume(
            container_path=self.container_path,
            host_path=self.host_path,
            read_only=self.read_only,
            tmpfs_size_bytes=self.tmpfs_size_bytes,
        )


@dataclass(frozen=True)
class Task:
    """A task to launch.

    >>> Task("hello-1", "echo hello", Resources.of(cpus=0.1, mem=32))
    ... # doctest: +ELLIPSIS
    Task(task_id='hello-1', ...)
    """

    task_id: str
    command: str | tuple[str, ...]
    resources: Resources
    name: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    kill_grace_s: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    #: "host" (share the node's network) or "none" (loopback only)
    network: str = "host"
    #: (uid, gid) to run as; None runs as root inside the container
    user: tuple[int, int] | None = None
    hostname: str = ""
    health_check: HealthCheck | None = None
    #: NAME[:TAG] in the agent's image store, HOST[:PORT]/REPO[:TAG|@DIGEST] of
    #: a registry (the agent pulls it), or an absolute tarball path under
    #: one of the agent's ``--image-import-dir`` (none by default); "" runs on
    #: the host's filesystem. With an image, an empty ``command`` runs the image's Entrypoint and Cmd.
    image: str = ""
    #: for a registry image: "" or "if-not-present" (pull only when the agent
    #: has none of that name), "always" (ask the registry at each launch), "never"
    pull_policy: str = ""
    volumes: tuple[Volume, ...] = ()
    #: the image's root is read-only (/tmp, the sandbox and volumes stay writable)
    read_only_root: bool = False
    #: "" is the agent's default seccomp filter; "unconfined" only where the
    #: agent allows it (--allow-unconfined-seccomp); else a profile it was given
    seccomp_profile: str = ""
    #: host device nodes (e.g. "/dev/kvm") the agent offers (--allowed-devices)
    devices: tuple[str, ...] = ()
    #: run in a user namespace of its own (its root an unprivileged host uid);
    #: None is the agent's default (--user-namespaces)
    user_namespace: bool | None = None

    def to_proto(self, agent_id: str) -> pb.TaskInfo:
        if isinstance(self.command, str):
            command = pb.CommandInfo(shell=True, value=self.command, environment=dict(self.env))
        else:
            command = pb.CommandInfo(
                shell=False,
                value=self.command[0] if self.command else "",
                arguments=list(self.command),
                environment=dict(self.env),
            )
        container = pb.ContainerInfo(
            hostname=self.hostname,
            network=pb.ContainerInfo.NONE if self.network == "none" else pb.ContainerInfo.HOST,
            image=self.image,
            volumes=[v.to_proto() for v in self.volumes],
            read_only_root=self.read_only_root,
            seccomp_profile=self.seccomp_profile,
            devices=list(self.devices),
            pull_policy=_pull_policy(self.pull_policy),
        )
        if self.user is not None:
            container.uid, container.gid = self.user
        if self.user_namespace is not None:
            container.user_namespace = self.user_namespace
        info = pb.TaskInfo(
            container=container,
            name=self.name or self.task_id,
            task_id=self.task_id,
            agent_id=agent_id,
            resources=resources_to_proto(self.resources),
            command=command,
            kill_policy=pb.KillPolicy(grace_period_s=self.kill_grace_s),
            labels=[pb.Label(key=k, value=v) for k, v in sorted(self.labels.items())],
        )
        if self.health_check is not None:
            info.health_check.CopyFrom(self.health_check.to_proto())
        return info


_PULL_POLICIES = {
    "": pb.ContainerInfo.PULL_POLICY_UNSPECIFIED,
    "if-not-present": pb.ContainerInfo.IF_NOT_PRESENT,
    "always": pb.ContainerInfo.ALWAYS,
    "never": pb.ContainerInfo.NEVER,
}


def _pull_policy(name: str) -> pb.ContainerInfo.PullPolicy:
    try:
        return _PULL_POLICIES[name]
    except KeyError:
        raise ValueError(f"pull_policy: one of if-not-present, always, never; got {name!r}") from None
