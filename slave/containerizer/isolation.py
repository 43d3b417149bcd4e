"""Turn a container's :class:`Isolation` into what the launcher applies.

Pure: the kernel calls themselves run in the launcher's child (launcher.py,
through kernel.py and network.py).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from corral.slave.containerizer import kernel, launcher, network
from corral.slave.containerizer.etc_files import etc_files
from corral.slave.containerizer.isolator import IdRange, Prepared
from corral.slave.containerizer.launcher import IsolationSpec
from corral.slave.containerizer.model import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    ContainerConfig,
    Isolation,
    default_hostname,
)


def capability_mask(names: frozenset[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << kernel.CAPABILITIES[name]
    return mask


def launch_isolation(
    iso: Isolation,
    container_id: str,
    seccomp: bytes = b"",
    cgroup_version: str = "v1",
    cgroup_mounts: tuple[tuple[bytes, bytes, bytes], ...] = (),
    *,
    userns: IdRange | None = None,
) -> IsolationSpec:
    """The launcher's view of ``iso`` (already validated) for ``container_id``;
    ``seccomp`` is the compiled filter (seccomp.py), b"" for none; ``userns``
    the host ids of its user namespace (isolators/userns.py), None for none."""
    flags = 0
    if iso.mount:
        flags |= kernel.CLONE_NEWNS
    if iso.uts:
        flags |= kernel.CLONE_NEWUTS
    if iso.ipc:
        flags |= kernel.CLONE_NEWIPC
    flags |= network.clone_flags(iso.network)
    if iso.mount and iso.pid:
        # The task sees only its own cgroup (mounted read-only by the launcher);
        # unshared after it joined its cgroups, so that is the namespace's root.
        flags |= kernel.CLONE_NEWCGROUP
    caps = DEFAULT_CAPABILITIES if iso.capabilities is None else iso.capabilities
    if cgroup_version == "v2" and iso.capabilities is None:
        # Kept with v2's device program (cgroups/device_program.py) as a second
        # layer: without CAP_MKNOD a task cannot make any node at all.
        caps = caps - {"MKNOD"}
    hostname = container_hostname(iso, container_id)
    uid, gid = iso.user if iso.user is not None else (-1, -1)
    return IsolationSpec(
        pid_ns=iso.pid,
        clone_flags=flags,
        hostname=hostname.encode() if iso.uts else b"",
        network=iso.network,
        tmp_bytes=iso.tmp_size_bytes if iso.mount else 0,
        uid=uid,
        gid=gid,
        groups=iso.groups if iso.user is not None else (),
        # Every capability we know of: drop nothing (not even ones newer than our table).
        cap_keep=-1 if caps >= ALL_CAPABILITIES else capability_mask(caps),
        no_new_privs=iso.no_new_privs,
        seccomp=seccomp,
        harden=iso.mount,
        devices=tuple(os.fsencode(d) for d in iso.devices),
        cgroup_mounts=cgroup_mounts if flags & kernel.CLONE_NEWCGROUP else (),
        userns_base=-1 if userns is None else userns.base,
        userns_size=0 if userns is None else userns.size,
    )


def container_hostname(iso: Isolation, container_id: str) -> str:
    """The hostname the task sees: its UTS namespace's, or the host's without one."""
    if not iso.uts:
        return socket.gethostname()
    return iso.hostname if iso.hostname is not None else default_hostname(container_id)


def image_etc_files(iso: Isolation, container_id: str) -> tuple[tuple[bytes, bytes], ...]:
    """What an image container gets in /etc (see etc_files.py)."""
    return etc_files(container_hostname(iso, container_id), iso.network)


def launch_spec(
    config: ContainerConfig,
    join: tuple[Path, ...],
    meta_dir: Path,
    prepared: Prepared,
    cgroup_version: str = "v1",
    cgroup_mounts: tuple[tuple[bytes, bytes, bytes], ...] = (),
) -> launcher.LaunchSpec:
    """What the launcher needs to start ``config``: ``join`` the cgroups'
    procs files, ``prepared`` what the isolators added (composition.py)."""
    return launcher.LaunchSpec(
        exec_paths=launcher.exec_candidates(config.argv[0], config.env.get("PATH")),
        argv=tuple(os.fsencode(a) for a in config.argv),
        env={os.fsencode(k): os.fsencode(v) for k, v in config.env.items()},
        cwd=prepared.cwd if prepared.cwd is not None else os.fsencode(config.sandbox),
        stdout=os.fsencode(config.sandbox / "stdout"),
        stderr=os.fsencode(config.sandbox / "stderr"),
        cgroup_procs=tuple(os.fsencode(p) for p in join),
        status_path=os.fsencode(meta_dir / "exit_status.json"),
        status_dir=os.fsencode(meta_dir),
        isolation=launch_isolation(
            config.isolation,
            config.container_id,
            prepared.seccomp,
            cgroup_version,
            cgroup_mounts,
            userns=prepared.userns,
        ),
        rootfs=prepared.rootfs,
        mounts=prepared.mounts,
        sandbox=os.fsencode(config.sandbox),
    )
