"""Values exchanged between the agent and the containerizer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.slave.containerizer import network
from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.kernel import CAPABILITIES
from corral.slave.containerizer.overlay import Rootfs
from corral.slave.containerizer.volumes import Volume

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
_HOSTNAME_MAX = 63
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
_ID_MAX = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel

# Docker's default set (moby's oci/caps/defaults.go), names without CAP_.
DEFAULT_CAPABILITIES = frozenset(
    {
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    }
)
ALL_CAPABILITIES = frozenset(CAPABILITIES)


def default_hostname(container_id: str) -> str:
    """A valid hostname made from a container id: ``[._]`` become ``-``, at most 63 characters."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", container_id)[:_HOSTNAME_MAX].strip("-")
    return name or "container"


@dataclass(frozen=True)
class Isolation:
    """How a container is isolated from the host; the defaults isolate all this increment can.

    ``network``: ``"host"`` (share the host's) or ``"none"`` (loopback only).
    ``hostname``: None means :func:`default_hostname` of the container id.
    ``user``: ``(uid, gid)`` to run the command as; None stays root.
    ``capabilities``: names without ``CAP_``; None means
    :data:`DEFAULT_CAPABILITIES`; :data:`ALL_CAPABILITIES` drops none.
    Without an image (``ContainerConfig.rootfs``) the root filesystem is the
    host's; the user namespace is too unless ``user_namespace`` (see
    docs/architecture.md, Containerizer).
    """

    pid: bool = True
    mount: bool = True
    uts: bool = True
    ipc: bool = True
    network: str = "host"
    hostname: str | None = None
    user: tuple[int, int] | None = None
    #: supplementary groups with ``user`` (e.g. from an image's /etc/group)
    groups: tuple[int, ...] = ()
    capabilities: frozenset[str] | None = None
    no_new_privs: bool = True
    tmp_size_bytes: int = 64 << 20
    #: "default" (seccomp.DEFAULT_PROFILE), "unconfined", or a profile the
    #: containerizer was given (the agent checks what a task may ask for)
    seccomp_profile: str = "default"
    #: host device nodes (absolute paths) the task may use besides the minimal
    #: /dev: bound into its /dev and allowed by the devices cgroup
    devices: tuple[str, ...] = ()
    #: run in a user namespace of its own: its uid 0 is an unprivileged host
    #: uid (a range per container, isolators/userns.py); needs ``mount``
    user_namespace: bool = False

    @classmethod
    def none(cls) -> Isolation:
        """No namespaces, host network, every capability: the behaviour before isolation."""
        return cls(
            pid=False,
            mount=False,
            uts=False,
            ipc=False,
            network="host",
            capabilities=ALL_CAPABILITIES,
            no_new_privs=False,
            seccomp_profile="unconfined",
        )

    def validate(self) -> None:
        """Raise ContainerError naming the first bad field."""
        if self.network not in network.MODES:
            raise ContainerError(
                f"isolation.network: must be one of {', '.join(network.MODES)}, got {self.network!r}"
            )
        if self.hostname is not None and not _valid_hostname(self.hostname):
            raise ContainerError(
                "isolation.hostname: must be 1-63 characters of dot-separated labels of "
                f"[A-Za-z0-9-] not starting or ending with '-', got {self.hostname!r}"
            )
        if self.user is not None and (
            len(self.user) != 2 or not all(isinstance(i, int) and 0 <= i <= _ID_MAX for i in self.user)
        ):
            raise ContainerError(f"isolation.user: must be (uid, gid) in 0..{_ID_MAX}, got {self.user!r}")
        if len(self.groups) > 65536 or not all(isinstance(g, int) and 0 <= g <= _ID_MAX for g in self.groups):
            raise ContainerError(f"isolation.groups: must be at most 65536 gids in 0..{_ID_MAX}")
        if self.capabilities is not None:
            unknown = sorted(c for c in self.capabilities if c not in CAPABILITIES)
            if unknown:
                raise ContainerError(
                    f"isolation.capabilities: unknown capability {unknown[0]!r} "
                    "(use names like 'NET_ADMIN', without CAP_)"
                )
        for i, dev in enumerate(self.devices):
            if not dev.startswith("/dev/") or "\0" in dev or ".." in dev.split("/"):
                raise ContainerError(f"isolation.devices[{i}]: must be a path under /dev/, got {dev!r}")
        if self.devices and not self.mount:
            raise ContainerError("isolation.devices: needs the mount namespace")
        if self.user_namespace and not self.mount:
            # Its sandbox is an idmapped bind: without a mount namespace of its
            # own it could not write it (and /proc would show host ids).
            raise ContainerError("isolation.user_namespace: needs the mount namespace")
        if self.mount and self.tmp_size_bytes < 0:
            raise ContainerError(f"isolation.tmp_size_bytes: must be >= 0, got {self.tmp_size_bytes}")


def _valid_hostname(name: str) -> bool:
    return 0 < len(name) <= _HOSTNAME_MAX and all(_LABEL_RE.fullmatch(label) for label in name.split("."))


@dataclass(frozen=True)
class ContainerConfig:
    """What to run and within which limits.

    ``argv`` is exec'd directly (the agent passes ``("/bin/sh", "-c", cmd)`` for
    shell commands); a bare ``argv[0]`` is looked up in ``env["PATH"]``.
    ``rootfs``: an image's layers to run on (None: the host's tree);
    ``workdir``: the working directory inside it ("" is the sandbox, mounted at
    /mnt/sandbox). Both, and ``volumes``, need ``isolation.mount``.
    """

    container_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    sandbox: Path
    cpus_milli: int
    mem_bytes: int
    cpu_hard_cap: bool = False
    pids_max: int | None = None
    isolation: Isolation = field(default_factory=Isolation)
    rootfs: Rootfs | None = None
    volumes: tuple[Volume, ...] = ()
    workdir: str = ""
    disk_bytes: int | None = None  # the sandbox's limit; None means unlimited

    def validate(self) -> None:
        """Raise ContainerError naming the first bad field."""
        if not _ID_RE.fullmatch(self.container_id) or self.container_id in {".", ".."}:
            raise ContainerError(
                f"container_id: must be 1-200 characters of [A-Za-z0-9._-], got {self.container_id!r}"
            )
        if not self.argv or not self.argv[0]:
            raise ContainerError(f"argv: must name a program, got {self.argv!r}")
        if self.cpus_milli <= 0:
            raise ContainerError(f"cpus_milli: must be > 0, got {self.cpus_milli}")
        if self.mem_bytes <= 0:
            raise ContainerError(f"mem_bytes: must be > 0, got {self.mem_bytes}")
        if self.pids_max is not None and self.pids_max <= 0:
            raise ContainerError(f"pids_max: must be > 0 or None, got {self.pids_max}")
        if self.disk_bytes is not None and self.disk_bytes <= 0:
            raise ContainerError(f"disk_bytes: must be > 0 or None, got {self.disk_bytes}")
        if any("\0" in a for a in self.argv) or any(
            "\0" in k or "=" in k or "\0" in v for k, v in self.env.items()
        ):
            raise ContainerError("argv/env: must not contain NUL bytes or '=' in names")
        self.isolation.validate()
        if (self.rootfs is not None or self.volumes) and not self.isolation.mount:
            raise ContainerError("isolation.mount: an image or volumes need the mount namespace")
        if self.rootfs is not None:
            self.rootfs.validate()
        for i, volume in enumerate(self.volumes):
            volume.validate(f"volumes[{i}]")
        if self.workdir and (self.rootfs is None or not self.workdir.startswith("/") or "\0" in self.workdir):
            raise ContainerError(
                f"workdir: must be an absolute path and needs an image, got {self.workdir!r}"
            )


@dataclass(frozen=True)
class Limitation:
    """A resource limit the container ran into (Mesos' ContainerLimitation)."""

    kind: str  # "memory" | "pids" | "disk"
    message: str
    limit: int
    peak: int


@dataclass(frozen=True)
class Termination:
    """How a task ended, with the forensics a user needs to learn why."""

    exit_code: int | None
    signal: int | None
    limitation: Limitation | None
    killed: bool
    stderr_tail: str
    # One sentence for the task's status message, e.g. "killed by signal 9 (SIGKILL)".
    message: str = ""
    #: what its cgroup used, read as it ended (None: could not be read)
    cpu_time_s: float | None = None
    mem_peak_bytes: int | None = None


@dataclass(frozen=True)
class Usage:
    """A container's live statistics; a limit of 0 means none."""

    cpu_time_s: float
    mem_bytes: int
    mem_peak_bytes: int
    pids: int
    mem_limit_bytes: int = 0
    pids_limit: int = 0
    disk_bytes: int = 0
    disk_limit_bytes: int = 0
    state: str = "running"
