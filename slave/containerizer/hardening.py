"""What a container sees of the kernel's files: a minimal /dev, a read-only
/sys with only its own cgroups, masked and read-only /proc paths.

Run by the container's init in its own mount namespace, for image tasks
(under the new root, before ``pivot_root``) and for host-filesystem tasks (on
the host's tree, which the private namespace keeps from the host) alike.
Standard library only, like rootfs.py: no logging, no imports after fork.

The lists follow runc's defaults (``libcontainer/specconv/example.go``: masked
and read-only paths; its default allowed devices) and Docker's additions
(``/sys/devices/virtual/powercap``); docs/architecture.md compares them.
"""

from __future__ import annotations

import errno
import os

from . import kernel

#: Bind-mounted over with /dev/null (a file) or a read-only empty tmpfs (a
#: directory), as runc masks them: host hardware, kernel memory, keys and
#: timers of every process on the host.
MASKED_PATHS = (
    b"/proc/acpi",
    b"/proc/asound",
    b"/proc/kcore",
    b"/proc/keys",
    b"/proc/latency_stats",
    b"/proc/timer_list",
    b"/proc/timer_stats",
    b"/proc/sched_debug",
    b"/proc/scsi",
    b"/sys/firmware",
    b"/sys/devices/virtual/powercap",
)
#: Bound on themselves read-only: kernel tunables (/proc/sys: core_pattern is a
#: path the kernel runs as root on the host), sysrq, IRQ affinity, buses.
READONLY_PATHS = (b"/proc/bus", b"/proc/fs", b"/proc/irq", b"/proc/sys", b"/proc/sysrq-trigger")
#: The minimal /dev (runc's default devices, less the tun device, which a
#: task without CAP_NET_ADMIN cannot use anyway).
DEV_NODES = (b"null", b"zero", b"full", b"random", b"urandom", b"tty")
DEV_LINKS = (
    (b"fd", b"/proc/self/fd"),
    (b"stdin", b"/proc/self/fd/0"),
    (b"stdout", b"/proc/self/fd/1"),
    (b"stderr", b"/proc/self/fd/2"),
    (b"ptmx", b"pts/ptmx"),
)
_DEV_TMPFS = b"mode=755,size=65536k"
_SHM_TMPFS = b"mode=1777,size=65536k"
_DEVPTS = b"newinstance,ptmxmode=0666,mode=0620,gid=5"
_NOSUID_NODEV_NOEXEC = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC


def _at(root: bytes, path: bytes) -> bytes:
    return root.rstrip(b"/") + path


def open_dev_sources(devices: tuple[bytes, ...]) -> tuple[int, ...]:
    """``O_PATH`` fds of the host's nodes for the container's /dev, opened
    before a tmpfs hides the host's /dev (a host-filesystem task mounts its
    /dev on top of it). The caller closes them (close-on-exec anyway)."""
    fds = []
    try:
        for name in (*(b"/dev/" + n for n in DEV_NODES), *devices):
            fds.append(os.open(name, os.O_PATH | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return tuple(fds)


def mount_dev(dev: bytes, devices: tuple[bytes, ...], sources: tuple[int, ...], mqueue: bool = False) -> None:
    """A tmpfs on ``dev`` with the minimal nodes (each an empty file with the
    host's node bound on it: no mknod needed), ``devices`` (host paths under
    /dev, bound at the same place), a new devpts, /dev/shm and the fd links;
    with ``mqueue`` (the task has its own IPC namespace, whose POSIX message
    queues an mqueue mount shows) /dev/mqueue, as runc mounts it."""
    kernel.mount(b"tmpfs", dev, b"tmpfs", kernel.MS_NOSUID | kernel.MS_STRICTATIME, _DEV_TMPFS)
    names = (*DEV_NODES, *(d[len(b"/dev/") :] for d in devices))
    for name, fd in zip(names, sources, strict=True):
        target = dev + b"/" + name
        parent = os.path.dirname(target)
        if parent != dev:
            os.makedirs(parent, 0o755, exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        kernel.mount(b"/proc/self/fd/%d" % fd, target, None, kernel.MS_BIND, None)
    os.mkdir(dev + b"/pts", 0o755)
    kernel.mount(b"devpts", dev + b"/pts", b"devpts", kernel.MS_NOSUID | kernel.MS_NOEXEC, _DEVPTS)
    os.mkdir(dev + b"/shm", 0o1777)
    kernel.mount(b"shm", dev + b"/shm", b"tmpfs", _NOSUID_NODEV_NOEXEC, _SHM_TMPFS)
    if mqueue:
        os.mkdir(dev + b"/mqueue", 0o1777)
        kernel.mount(b"mqueue", dev + b"/mqueue", b"mqueue", _NOSUID_NODEV_NOEXEC, None)
    for name, target in DEV_LINKS:
        os.symlink(target, dev + b"/" + name)


def mount_sys(root: bytes, cgroup_mounts: tuple[tuple[bytes, bytes, bytes], ...]) -> None:
    """A fresh read-only sysfs on ``root``/sys, which also covers every mount the
    host has below /sys (its writable cgroup hierarchies among them), then the
    container's own cgroups read-only: ``cgroup_mounts`` are (directory under
    /sys/fs/cgroup, or b"" for the unified root; fstype; options). Mounted in
    the container's cgroup namespace, each shows the task's cgroup as its root.
    """
    sys_dir = _at(root, b"/sys")
    try:
        kernel.mount(b"sysfs", sys_dir, b"sysfs", _NOSUID_NODEV_NOEXEC | kernel.MS_RDONLY, None)
    except OSError:
        # A fresh sysfs is refused where the agent itself runs in a user
        # namespace (the kernel's "fully visible" rule) or in some network
        # namespaces: bind the host's sysfs alone, without MS_REC, so that none
        # of its submounts (the writable cgroup hierarchies) come along.
        kernel.mount(b"/sys", sys_dir, None, kernel.MS_BIND, None)
        flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | _NOSUID_NODEV_NOEXEC
        kernel.mount(None, sys_dir, None, flags, None)
    if not cgroup_mounts:
        return
    cg = sys_dir + b"/fs/cgroup"
    ro = _NOSUID_NODEV_NOEXEC | kernel.MS_RDONLY
    if len(cgroup_mounts) == 1 and not cgroup_mounts[0][0]:
        _, fstype, options = cgroup_mounts[0]
        kernel.mount(b"cgroup", cg, fstype, ro, options or None)
        return
    kernel.mount(b"tmpfs", cg, b"tmpfs", _NOSUID_NODEV_NOEXEC, b"mode=755,size=64k")
    for name, fstype, options in cgroup_mounts:
        target = cg + b"/" + name
        os.mkdir(target, 0o555)
        kernel.mount(b"cgroup", target, fstype, ro, options or None)
    kernel.mount(None, cg, None, kernel.MS_REMOUNT | kernel.MS_BIND | ro, None)


def mask_and_protect(root: bytes) -> None:
    """runc's masked and read-only paths under ``root`` (its /proc and /sys
    mounted already); paths this kernel does not have are skipped."""
    for path in MASKED_PATHS:
        target = _at(root, path)
        try:
            st = os.lstat(target)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        if os.path.isdir(target) and not os.path.islink(target):
            kernel.mount(b"tmpfs", target, b"tmpfs", kernel.MS_RDONLY | _NOSUID_NODEV_NOEXEC, b"size=0")
        elif st.st_mode:
            kernel.mount(b"/dev/null", target, None, kernel.MS_BIND, None)
    for path in READONLY_PATHS:
        target = _at(root, path)
        if not os.path.lexists(target):
            continue
        kernel.mount(target, target, None, kernel.MS_BIND | kernel.MS_REC, None)
        flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | _NOSUID_NODEV_NOEXEC
        kernel.mount(None, target, None, flags, None)
