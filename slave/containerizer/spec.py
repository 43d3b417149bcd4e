"""What the launcher is asked to start, as plain values (and as JSON for the fork server).

Standard library only, like every module the fork server loads (launcher.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import network
from . import rootfs as fs


@dataclass(frozen=True)
class IsolationSpec:
    """The isolation of one task, as the launcher applies it; the defaults isolate nothing."""

    pid_ns: bool = False  # the supervisor unshares CLONE_NEWPID; an init runs as PID 1
    clone_flags: int = 0  # other namespaces, unshared by the task child (CLONE_NEWNS, ...)
    hostname: bytes = b""  # set when clone_flags has CLONE_NEWUTS
    network: str = "host"  # network.MODES
    tmp_bytes: int = 0  # size of the private tmpfs on /tmp; 0 for none
    uid: int = -1  # -1: stay root
    gid: int = -1
    groups: tuple[int, ...] = ()  # supplementary groups besides gid (with uid >= 0)
    cap_keep: int = -1  # capability mask to keep; -1: drop nothing
    no_new_privs: bool = False
    #: a raw BPF program (seccomp.py compiles it) loaded just before exec; b"": none
    seccomp: bytes = b""
    #: without an image too: minimal /dev, read-only /sys with the container's
    #: own cgroups, masked and read-only /proc paths (hardening.py)
    harden: bool = False
    devices: tuple[bytes, ...] = ()  # host device nodes to bind into /dev
    #: (dir under /sys/fs/cgroup or b"", fstype, options) to mount read-only
    cgroup_mounts: tuple[tuple[bytes, bytes, bytes], ...] = ()
    #: a user namespace of its own: container ids 0..userns_size-1 are host
    #: ids userns_base.. (the supervisor makes it, the command enters it); -1: none
    userns_base: int = -1
    userns_size: int = 0

    @property
    def userns(self) -> bool:
        return self.userns_base >= 0


@dataclass(frozen=True)
class LaunchSpec:
    """All the task child needs, already encoded, so the child only makes system calls."""

    exec_paths: tuple[bytes, ...]  # candidates for argv[0], PATH already searched
    argv: tuple[bytes, ...]
    env: dict[bytes, bytes]
    cwd: bytes
    stdout: bytes
    stderr: bytes
    cgroup_procs: tuple[bytes, ...]
    status_path: bytes
    status_dir: bytes
    isolation: IsolationSpec = field(default_factory=IsolationSpec)
    # An image to pivot into (needs CLONE_NEWNS); None keeps the host's tree.
    rootfs: fs.RootfsSpec | None = None
    mounts: tuple[fs.MountSpec, ...] = ()  # volumes
    sandbox: bytes = b""  # host path; volumes without an image may be created under it


@dataclass(frozen=True)
class Spawned:
    supervisor_pid: int
    exec_fd: int  # read end of the exec pipe
    done_fd: int  # read end of the done pipe
    # A pidfd of the supervisor when it was opened by its parent before any
    # reaping could happen (the fork server does), so the pid cannot have been
    # reused; -1 when the caller is the parent and opens one itself.
    pidfd: int = -1


def spec_to_json(spec: LaunchSpec) -> dict[str, object]:
    """``spec`` as JSON values for the fork server; latin-1 maps bytes to str losslessly."""

    def s(b: bytes) -> str:
        return b.decode("latin-1")

    return {
        "exec_paths": [s(p) for p in spec.exec_paths],
        "argv": [s(a) for a in spec.argv],
        "env": [[s(k), s(v)] for k, v in spec.env.items()],
        "cwd": s(spec.cwd),
        "stdout": s(spec.stdout),
        "stderr": s(spec.stderr),
        "cgroup_procs": [s(p) for p in spec.cgroup_procs],
        "status_path": s(spec.status_path),
        "status_dir": s(spec.status_dir),
        "isolation": {
            "pid_ns": spec.isolation.pid_ns,
            "clone_flags": spec.isolation.clone_flags,
            "hostname": s(spec.isolation.hostname),
            "network": spec.isolation.network,
            "tmp_bytes": spec.isolation.tmp_bytes,
            "uid": spec.isolation.uid,
            "gid": spec.isolation.gid,
            "groups": list(spec.isolation.groups),
            "cap_keep": spec.isolation.cap_keep,
            "no_new_privs": spec.isolation.no_new_privs,
            "seccomp": s(spec.isolation.seccomp),
            "harden": spec.isolation.harden,
            "devices": [s(d) for d in spec.isolation.devices],
            "cgroup_mounts": [[s(x) for x in m] for m in spec.isolation.cgroup_mounts],
            "userns_base": spec.isolation.userns_base,
            "userns_size": spec.isolation.userns_size,
        },
        "rootfs": None if spec.rootfs is None else fs.rootfs_spec_to_json(spec.rootfs),
        "mounts": [fs.mount_spec_to_json(m) for m in spec.mounts],
        "sandbox": s(spec.sandbox),
    }


def spec_from_json(data: dict[str, object]) -> LaunchSpec:
    """The inverse of ``spec_to_json``; raises ValueError on anything malformed."""

    def b(value: object) -> bytes:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return value.encode("latin-1")

    def seq(value: object) -> list[object]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return value

    def integer(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected an integer, got {type(value).__name__}")
        return value

    def flag(value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean, got {type(value).__name__}")
        return value

    iso = data.get("isolation", {})
    if not isinstance(iso, dict):
        raise ValueError(f"isolation: expected an object, got {type(iso).__name__}")
    network_mode = iso.get("network", "host")
    if network_mode not in network.MODES:
        raise ValueError(f"isolation.network: unknown mode {network_mode!r}")
    isolation = IsolationSpec(
        pid_ns=flag(iso.get("pid_ns", False)),
        clone_flags=integer(iso.get("clone_flags", 0)),
        hostname=b(iso.get("hostname", "")),
        network=str(network_mode),
        tmp_bytes=integer(iso.get("tmp_bytes", 0)),
        uid=integer(iso.get("uid", -1)),
        gid=integer(iso.get("gid", -1)),
        groups=tuple(integer(g) for g in seq(iso.get("groups", []))),
        cap_keep=integer(iso.get("cap_keep", -1)),
        no_new_privs=flag(iso.get("no_new_privs", False)),
        seccomp=b(iso.get("seccomp", "")),
        harden=flag(iso.get("harden", False)),
        devices=tuple(b(d) for d in seq(iso.get("devices", []))),
        cgroup_mounts=tuple(_triple([b(x) for x in seq(m)]) for m in seq(iso.get("cgroup_mounts", []))),
        userns_base=integer(iso.get("userns_base", -1)),
        userns_size=integer(iso.get("userns_size", 0)),
    )
    env: dict[bytes, bytes] = {}
    for pair in seq(data.get("env")):
        key, value = seq(pair)
        env[b(key)] = b(value)
    return LaunchSpec(
        exec_paths=tuple(b(p) for p in seq(data.get("exec_paths"))),
        argv=tuple(b(a) for a in seq(data.get("argv"))),
        env=env,
        cwd=b(data.get("cwd")),
        stdout=b(data.get("stdout")),
        stderr=b(data.get("stderr")),
        cgroup_procs=tuple(b(p) for p in seq(data.get("cgroup_procs"))),
        status_path=b(data.get("status_path")),
        status_dir=b(data.get("status_dir")),
        isolation=isolation,
        rootfs=None if data.get("rootfs") is None else fs.rootfs_spec_from_json(data.get("rootfs")),
        mounts=tuple(fs.mount_spec_from_json(m) for m in seq(data.get("mounts", []))),
        sandbox=b(data.get("sandbox", "")),
    )


def _triple(items: list[bytes]) -> tuple[bytes, bytes, bytes]:
    if len(items) != 3:
        raise ValueError("isolation.cgroup_mounts: expected [dir, fstype, options] triples")
    return items[0], items[1], items[2]


def exec_candidates(argv0: str, path_env: str | None) -> tuple[bytes, ...]:
    """Where execvp(3) would look for ``argv0``."""
    if "/" in argv0:
        return (os.fsencode(argv0),)
    dirs = (path_env if path_env is not None else os.defpath).split(":")
    return tuple(os.fsencode(os.path.join(d or ".", argv0)) for d in dirs)
