"""Seccomp profiles: the default one, loading others, compiling them to BPF.

A profile is written in moby's JSON form (``profiles/seccomp/default.json``:
``defaultAction``, ``defaultErrnoRet``, ``syscalls`` of ``names``, ``action``,
``errnoRet`` and ``args``), so an operator can hand the agent Docker's own
profile or one derived from it. It is compiled here, in the agent, with
libseccomp through ctypes (``seccomp_export_bpf``), once per profile and
cached: the launcher only receives the raw ``sock_filter`` program and loads
it with ``prctl(PR_SET_SECCOMP)`` in the command, after ``no_new_privs`` and
just before ``execve`` (launcher.py). The container's init and supervisor are
never filtered (they must still fork, mount and reap).

The default profile is a **deny list**, decided group by group against moby's
allow list (which denies everything it does not name, EPERM): we deny the same
dangerous groups with EPERM (namespaces, mounts, keyrings, kernel modules,
kexec/reboot, clock setting, accounting, swap, bpf, perf, userfaultfd,
io_uring, handles, quotas, raw I/O ports), with moby's argument filters for
``clone`` (no namespace flags), ``clone3`` (ENOSYS, so libc falls back to
``clone`` whose flags a filter can see), ``socket`` (no AF_VSOCK) and
``personality`` (only the harmless personas). Syscalls of other ABIs (i386,
x32 on x86_64) are refused outright (libseccomp's bad-arch action kills),
which is stricter than moby, which adds those arches. Looser than moby: a
syscall newer than this list but known to libseccomp is allowed until it is
listed; a syscall *newer than libseccomp knows* gets ENOSYS (runc's stub, a
prefix of our own before libseccomp's program, :func:`_future_syscalls`), so
a kernel upgrade cannot open a door the list never saw (see
docs/architecture.md, hardening table). A name in the default profile that
libseccomp cannot resolve stops the compile (fail closed); in an operator's
profile it is skipped with a warning, as runc does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from corral.slave.containerizer.errors import ContainerError

log = structlog.get_logger(__name__)

DEFAULT = "default"
UNCONFINED = "unconfined"

# Namespace flags of clone(2) (<sched.h>): CLONE_NEWNS, NEWCGROUP, NEWUTS,
# NEWIPC, NEWUSER, NEWPID, NEWNET. moby's mask 2114060288 is the same set.
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
_AF_VSOCK = 40

_DENIED_GROUPS: dict[str, tuple[str, ...]] = {
    # A user namespace gives back every capability inside it (unshare -U -r),
    # the door to most container escapes of the last decade.
    "namespaces": ("unshare", "setns"),
    "mounts": (
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
    ),
    # Keyrings are not namespaced: a key added here is visible to the host.
    "keyring": ("add_key", "request_key", "keyctl"),
    "kernel modules": ("init_module", "finit_module", "delete_module", "create_module", "query_module"),
    "kexec and reboot": ("kexec_load", "kexec_file_load", "reboot"),
    "clock": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "accounting and swap": ("acct", "swapon", "swapoff"),
    "bpf and perf": ("bpf", "perf_event_open", "lookup_dcookie", "fanotify_init"),
    # userfaultfd widens kernel race windows (moby: only with CAP_SYS_PTRACE).
    "userfaultfd": ("userfaultfd",),
    # Removed from moby's default in 2023 after a run of kernel bugs.
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    # open_by_handle_at bypasses the mount namespace (the "shocker" escape).
    "file handles": ("open_by_handle_at",),
    "quotas": ("quotactl", "quotactl_fd", "nfsservctl"),
    "raw I/O and old ABIs": ("iopl", "ioperm", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old"),
    "host identity": ("sethostname", "setdomainname", "syslog", "vhangup"),
    # NUMA policy is left to the cpuset; moby allows these with CAP_SYS_NICE only.
    "memory policy": (
        "mbind",
        "set_mempolicy",
        "get_mempolicy",
        "migrate_pages",
        "move_pages",
        "set_mempolicy_home_node",
    ),
    # Reaching into other processes (moby: only with CAP_SYS_PTRACE, which
    # tasks do not get): compare their kernel objects, take their file
    # descriptors, advise on their memory. Found missing by a security review.
    "other processes": ("kcmp", "pidfd_getfd", "process_madvise"),
}


def _default_profile() -> dict[str, Any]:
    syscalls: list[dict[str, Any]] = [
        {
            "names": sorted({n for names in _DENIED_GROUPS.values() for n in names}),
            "action": "SCMP_ACT_ERRNO",
        },
        # clone3 passes its flags in a struct a filter cannot read: ENOSYS makes
        # glibc fall back to clone(2), filtered below (moby does the same).
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_EQ"}],
        },
    ]
    # clone with any namespace flag: one rule per flag (a rule's comparisons
    # are ANDed, rules are ORed). Flags are the first argument on x86_64 and
    # arm64 (s390x swaps them; not a target here).
    for flag in _NAMESPACE_FLAGS:
        syscalls.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    # personality: no flag that weakens exploit mitigations (ADDR_NO_RANDOMIZE,
    # MMAP_PAGE_ZERO, READ_IMPLIES_EXEC, ...: bits 18-27). libseccomp allows one
    # comparison per argument, so moby's "only these five values" becomes one
    # rule per flag: the flag set and bit 31 clear, which spares the
    # 0xffffffff query (it sets no persona) while no real persona has bit 31.
    for bit in range(18, 28):
        flag = 1 << bit
        syscalls.append(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": flag | 1 << 31, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": errno.EPERM, "syscalls": syscalls}


DEFAULT_PROFILE: Mapping[str, Any] = _default_profile()

# -- libseccomp through ctypes --------------------------------------------------

_ACT_ALLOW = 0x7FFF0000
_ACT_KILL_PROCESS = 0x80000000
_ACT_LOG = 0x7FFC0000
_ACT_ERRNO = 0x00050000
_CMP = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


class _Lib:
    def __init__(self) -> None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise ContainerError(f"seccomp needs libseccomp (Debian: libseccomp2): {e}") from None
        lib.seccomp_init.argtypes = (ctypes.c_uint32,)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = (ctypes.c_void_p,)
        lib.seccomp_release.restype = None
        lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
        lib.seccomp_rule_add_array.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        )
        lib.seccomp_rule_add_array.restype = ctypes.c_int
        lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
        lib.seccomp_export_bpf.restype = ctypes.c_int
        lib.seccomp_arch_native.argtypes = ()
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_num_arch.argtypes = (ctypes.c_uint32, ctypes.c_int)
        lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # malloc'd name, or NULL
        self.lib = lib
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = (ctypes.c_void_p,)
        self.libc.free.restype = None
        self.native_arch = int(lib.seccomp_arch_native())
        self.highest_known = self._highest_known()

    def _highest_known(self) -> int:
        """The highest native syscall number libseccomp has a name for."""
        highest = -1
        for number in range(_SYSCALL_CEILING):
            name = self.lib.seccomp_syscall_resolve_num_arch(self.native_arch, number)
            if name:
                self.libc.free(name)
                highest = number
        return highest


_lib: _Lib | None = None
_lock = threading.Lock()
_cache: dict[tuple[str, int, int], bytes] = {}


def _action(name: object, errno_ret: object, default_errno: int, where: str) -> int:
    if name == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        ret = default_errno if errno_ret is None else errno_ret
        if not isinstance(ret, int) or not 0 <= ret < 4096:
            raise ContainerError(f"{where}.errnoRet: must be an errno, got {ret!r}")
        return _ACT_ERRNO | ret
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"):
        return _ACT_KILL_PROCESS
    if name == "SCMP_ACT_LOG":
        return _ACT_LOG
    raise ContainerError(f"{where}.action: unsupported {name!r} (ALLOW, ERRNO, KILL, LOG)")


def _args(entry: Mapping[str, Any], where: str) -> list[_ArgCmp]:
    out = []
    for i, a in enumerate(entry.get("args") or ()):
        op = _CMP.get(a.get("op"))
        index = a.get("index")
        if op is None or not isinstance(index, int) or not 0 <= index < 6:
            raise ContainerError(f"{where}.args[{i}]: needs an index 0-5 and a known op, got {a!r}")
        # For MASKED_EQ libseccomp tests (arg & datum_a) == datum_b; moby's
        # JSON puts the mask in "value" and the result in "valueTwo".
        out.append(_ArgCmp(index, op, int(a.get("value", 0)), int(a.get("valueTwo", 0))))
    return out


def _applies(entry: Mapping[str, Any]) -> bool:
    """Rules moby conditions on capabilities or kernels are left out (we grant no
    CAP_SYS_ADMIN and friends to tasks); arch conditions are honoured for amd64/arm64."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    includes, excludes = entry.get("includes") or {}, entry.get("excludes") or {}
    if includes.get("caps") or includes.get("minKernel"):
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    return not (excludes.get("arches") and arch in excludes["arches"])


#: syscall numbers at or above this are not looked up (the kernel is at ~470)
_SYSCALL_CEILING = 1024
#: x32 syscalls on x86_64 carry this bit; libseccomp's own program kills them
_X32_SYSCALL_BIT = 0x40000000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_ENOSYS = _ACT_ERRNO | errno.ENOSYS


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _future_syscalls(arch: int, highest_known: int) -> bytes:
    """A BPF prefix: on the native ``arch``, a syscall number above what
    libseccomp knows (and not an x32 one) returns ENOSYS at once, as runc's
    stub does; everything else falls through to libseccomp's program, which
    starts by loading what it needs itself.

        0 ld  [4]                 arch
        1 jeq arch, 0, 4          other arches: to 6
        2 ld  [0]                 syscall number
        3 jge X32_BIT, 2, 0       x32: to 6 (libseccomp kills it)
        4 jge highest+1, 0, 1     unknown: to 5, else to 6
        5 ret ERRNO(ENOSYS)
    """
    return b"".join(
        (
            _insn(_BPF_LD_W_ABS, 0, 0, 4),
            _insn(_BPF_JEQ_K, 0, 4, arch),
            _insn(_BPF_LD_W_ABS, 0, 0, 0),
            _insn(_BPF_JGE_K, 2, 0, _X32_SYSCALL_BIT),
            _insn(_BPF_JGE_K, 0, 1, highest_known + 1),
            _insn(_BPF_RET_K, 0, 0, _ENOSYS),
        )
    )


def compile_profile(
    profile: Mapping[str, Any], where: str = "seccomp profile", *, strict: bool = False
) -> bytes:
    """The profile as a raw BPF program (``struct sock_filter[]``); raises
    ContainerError. ``strict`` (the default profile): a syscall name
    libseccomp does not know is an error, not skipped."""
    global _lib
    with _lock:
        if _lib is None:
            _lib = _Lib()
        owner = _lib
        lib = owner.lib
    default_errno = profile.get("defaultErrnoRet", errno.EPERM)
    default = _action(profile.get("defaultAction"), default_errno, errno.EPERM, where + ".defaultAction")
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise ContainerError(f"{where}: seccomp_init failed")
    try:
        for i, entry in enumerate(profile.get("syscalls") or ()):
            at = f"{where}.syscalls[{i}]"
            if not _applies(entry):
                continue
            action = _action(entry.get("action"), entry.get("errnoRet"), default_errno, at)
            if action == default:
                continue  # libseccomp refuses a rule that repeats the default
            cmps = _args(entry, at)
            array = (_ArgCmp * max(1, len(cmps)))(*cmps)
            for name in entry.get("names") or [entry.get("name")]:
                number = lib.seccomp_syscall_resolve_name(str(name).encode())
                if number == -1:  # __NR_SCMP_ERROR: a name libseccomp does not know at all
                    if strict:
                        raise ContainerError(
                            f"{at}: libseccomp does not know the syscall {name!r}; "
                            "a deny list must not skip it (upgrade libseccomp2)"
                        )
                    log.warning("seccomp.unknown_syscall", profile=where, syscall=str(name))
                    continue
                rc = lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array)
                if rc < 0:
                    raise ContainerError(f"{at}: cannot add a rule for {name}: {os.strerror(-rc)}")
        return _future_syscalls(owner.native_arch, owner.highest_known) + _export(lib, ctx, where)
    finally:
        lib.seccomp_release(ctx)


def _export(lib: ctypes.CDLL, ctx: int, where: str) -> bytes:
    fd = os.memfd_create("corral-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise ContainerError(f"{where}: seccomp_export_bpf: {os.strerror(-rc)}")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SeccompPolicy:
    """What an agent allows tasks to ask for.

    ``profiles``: name → JSON file (``--seccomp-profile NAME=PATH``);
    ``allow_unconfined``: whether a task may run with no filter at all
    (``--allow-unconfined-seccomp``).
    """

    profiles: Mapping[str, Path] | None = None
    allow_unconfined: bool = False

    def resolve(self, name: str) -> str:
        """The profile a task named ("" is the default); raises ContainerError naming the field."""
        name = name or DEFAULT
        if name == DEFAULT:
            return DEFAULT
        if name == UNCONFINED:
            if not self.allow_unconfined:
                raise ContainerError(
                    "container.seccomp_profile: 'unconfined' is refused by this agent "
                    "(start it with --allow-unconfined-seccomp)"
                )
            return UNCONFINED
        if name not in (self.profiles or {}):
            allowed = ", ".join(sorted({DEFAULT, *(self.profiles or {})}))
            raise ContainerError(
                f"container.seccomp_profile: {name!r} is not allowed here (allowed: {allowed})"
            )
        return name

    def program(self, name: str) -> bytes:
        """The BPF of a resolved profile (b"" for unconfined), compiled once and cached
        until its file changes."""
        if name == UNCONFINED:
            return b""
        if name == DEFAULT:
            key = (DEFAULT, 0, 0)
            path = None
        else:
            path = (self.profiles or {})[name]
            try:
                st = path.stat()
            except OSError as e:
                raise ContainerError(f"seccomp profile {name!r} ({path}): {e.strerror}") from None
            key = (str(path), st.st_mtime_ns, st.st_size)
        cached = _cache.get(key)
        if cached is not None:
            return cached
        profile = DEFAULT_PROFILE if path is None else _load(name, path)
        program = compile_profile(profile, f"seccomp profile {name!r}", strict=path is None)
        _cache[key] = program
        return program


def _load(name: str, path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ContainerError(f"seccomp profile {name!r} ({path}): {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("syscalls", []), Sequence):
        raise ContainerError(f"seccomp profile {name!r} ({path}): expected moby's JSON profile form")
    return data


def parse_profile_flags(specs: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs of ``--seccomp-profile``; raises ValueError with a sentence."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path or name in (DEFAULT, UNCONFINED):
            raise ValueError(f"--seccomp-profile: expected NAME=PATH (not default/unconfined), got {spec!r}")
        out[name] = Path(path).resolve()
    return out
