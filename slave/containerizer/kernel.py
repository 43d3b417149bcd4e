"""The kernel calls that isolate a container, through ctypes on libc.

The one seam for unshare, setns, mount, umount2, pivot_root, sethostname, prctl and
capset: tests can replace these functions with a recorder. Every call raises
``OSError(errno, "<call>: <reason>")`` on failure.

Standard library only: the fork server loads launcher.py, which imports this
module, without the corral package or site-packages (see forkserver.py).
Python 3.11 has no ``os.unshare``; the constants are from <sched.h>,
<sys/mount.h>, <linux/prctl.h> and <linux/capability.h>.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUSER = 0x10000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

MOUNT_ATTR_RDONLY = 0x1
AT_RECURSIVE = 0x8000
_AT_FDCWD = -100
_SYS_MOUNT_SETATTR = 442  # the same on every architecture (new syscalls share numbers)
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x100000

# pivot_root(2) has no glibc wrapper: the syscall number per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}

PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# capability(7) numbers; the names are used without the CAP_ prefix.
CAPABILITIES: dict[str, int] = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}


def last_cap() -> int:
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


_libc = ctypes.CDLL(None, use_errno=True)


def _fn(name: str, *argtypes: type) -> ctypes._NamedFuncPointer:
    fn = _libc[name]
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_unshare = _fn("unshare", ctypes.c_int)
_setns = _fn("setns", ctypes.c_int, ctypes.c_int)
_mount = _fn("mount", ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_umount2 = _fn("umount2", ctypes.c_char_p, ctypes.c_int)
_syscall = _libc["syscall"]
_syscall.restype = ctypes.c_long
_sethostname = _fn("sethostname", ctypes.c_char_p, ctypes.c_size_t)
_prctl = _fn("prctl", ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CapDataPair = _CapData * 2
_capget = _fn("capget", ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))
_capset = _fn("capset", ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))


def _check(result: int, call: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Move this process into the namespace ``fd`` (a /proc/PID/ns file) refers to."""
    _check(_setns(fd, nstype), "setns")


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    _check(_mount(source, target, fstype, flags, data), "mount " + target.decode("latin-1"))


def umount2(target: bytes, flags: int = 0) -> None:
    _check(_umount2(target, flags), "umount2 " + target.decode("latin-1"))


def pivot_root(new_root: bytes, put_old: bytes) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    result = _syscall(ctypes.c_long(number), ctypes.c_char_p(new_root), ctypes.c_char_p(put_old))
    _check(int(result), "pivot_root " + new_root.decode("latin-1"))


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def mount_setattr_recursive(path: bytes, attr_set: int) -> None:
    """mount_setattr(2) with AT_RECURSIVE (Linux 5.12+): set ``attr_set`` on a whole mount tree."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    result = _syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(path),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(int(result), "mount_setattr " + path.decode("latin-1"))


def open_tree_clone(path: bytes, recursive: bool) -> int:
    """open_tree(2) with OPEN_TREE_CLONE (Linux 5.2+): a detached copy of the
    mount at ``path`` (of its whole tree when ``recursive``), close-on-exec."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    result = _syscall(
        ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(path), ctypes.c_uint(flags)
    )
    if result < 0:
        _check(-1, "open_tree " + path.decode("latin-1"))
    return int(result)


def mount_setattr_idmap(fd: int, userns_fd: int) -> None:
    """Idmap the top mount of the detached tree ``fd`` through the user
    namespace ``userns_fd`` (mount_setattr(2), Linux 5.12+; not recursive:
    mounts below keep the ids they have)."""
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    result = _syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(fd),
        ctypes.c_char_p(b""),
        ctypes.c_uint(AT_EMPTY_PATH),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(int(result), "mount_setattr MOUNT_ATTR_IDMAP")


def move_mount_fd(fd: int, target: bytes) -> None:
    """Attach the detached tree ``fd`` at ``target`` (move_mount(2), Linux 5.2+)."""
    result = _syscall(
        ctypes.c_long(_SYS_MOVE_MOUNT),
        ctypes.c_int(fd),
        ctypes.c_char_p(b""),
        ctypes.c_int(_AT_FDCWD),
        ctypes.c_char_p(target),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )
    _check(int(result), "move_mount " + target.decode("latin-1"))


def sethostname(name: bytes) -> None:
    _check(_sethostname(name, len(name)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    _check(_prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def capget() -> tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) capabilities as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair()
    _check(_capget(ctypes.byref(header), data), "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_capset(ctypes.byref(header), data), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def seccomp_filter(program: bytes) -> None:
    """Load a raw BPF program (``struct sock_filter[]``, 8 bytes per instruction)
    as this thread's seccomp filter; needs no_new_privs or CAP_SYS_ADMIN."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")
