"""The devices controller: which device nodes a container may open or create.

cgroup v1 has the ``devices`` controller (``devices.deny`` / ``devices.allow``,
Documentation/admin-guide/cgroup-v1/devices.rst): a container's cgroup denies
everything (``a``) and then allows the minimal /dev hardening.py builds, as
runc's default allowed devices do, plus the devices the agent offers a task.
Unlike runc and Docker we do not allow ``mknod`` of every node (their
``c *:* m`` and ``b *:* m``): a root task cannot even create a node it could
not open (``mknod c 10 232`` for /dev/kvm fails EPERM).

cgroup v2 has no such files; a device program (``BPF_PROG_TYPE_CGROUP_DEVICE``)
would be the equivalent. corral does not attach one (see docs/architecture.md):
on v2 a task gets no CAP_MKNOD and the minimal /dev instead.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from corral.slave.containerizer.cgroups import files
from corral.slave.containerizer.errors import ContainerError

#: runc's default allowed devices (libcontainer/specconv), without its blanket
#: mknod rules and without tun (no CAP_NET_ADMIN in a task).
DEFAULT_RULES = (
    "c 1:3 rwm",  # /dev/null
    "c 1:5 rwm",  # /dev/zero
    "c 1:7 rwm",  # /dev/full
    "c 1:8 rwm",  # /dev/random
    "c 1:9 rwm",  # /dev/urandom
    "c 5:0 rwm",  # /dev/tty
    "c 5:1 rwm",  # /dev/console
    "c 5:2 rwm",  # /dev/ptmx
    "c 136:* rwm",  # /dev/pts/*
)


def rule_for(path: str) -> str:
    """The allow rule for one host device node; raises ContainerError if it is not one."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ContainerError(f"device {path}: {e.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise ContainerError(f"device {path}: is not a device node")
    return f"{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rw"


def apply_v1(cgroup: Path, extra: Sequence[str]) -> None:
    """Deny every device, then allow the defaults and ``extra`` rules."""
    files.write(cgroup / "devices.deny", "a")
    for rule in (*DEFAULT_RULES, *extra):
        files.write(cgroup / "devices.allow", rule)
