"""One escape attempt, run inside a task: prints ``<probe> <outcome>``.

The outcome is ``ok`` (the attempt worked: an escape), an errno name
(``EPERM``, ``EROFS``...), ``empty`` (a masked file read as nothing) or
``absent`` (nothing to attempt it on). Standard library only: it runs on the
host's tree and, through the host's /usr bound read-only, on the busybox image.
Usage: ``python3 escape_probe.py PROBE [ARG]``.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import socket
import subprocess
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
# x86_64 syscall numbers (asm/unistd_64.h)
SYS_CLONE = 56
SYS_ADD_KEY = 248
KEY_SPEC_PROCESS_KEYRING = -2


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _write(path: str, data: str) -> str:
    try:
        with open(path, "w") as f:
            f.write(data)
    except OSError as e:
        return _errno_name(e.errno or 0)
    return "ok"


def _own_cgroup(controller: str) -> str:
    """The task's cgroup as /proc/self/cgroup names it (in a cgroup namespace: "/")."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(",") or (not controllers and controller == ""):
                return path
    return "/"


def raise_memory_limit() -> str:
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        return _write(f"/sys/fs/cgroup{_own_cgroup('')}/memory.max".replace("//", "/"), "4294967296")
    own = f"/sys/fs/cgroup/memory{_own_cgroup('memory')}".rstrip("/")
    # v1: memory+swap first, since the memory limit may not exceed it.
    memsw = f"{own}/memory.memsw.limit_in_bytes"
    if os.path.exists(memsw):
        outcome = _write(memsw, "4294967296")
        if outcome != "ok":
            return outcome
    return _write(f"{own}/memory.limit_in_bytes", "4294967296")


def move_to_root_pids_cgroup() -> str:
    # In its cgroup namespace the visible root is the task's own cgroup; the
    # host's root cgroup is not even reachable. Try every cgroup.procs it sees.
    targets = glob.glob("/sys/fs/cgroup/pids/cgroup.procs") + glob.glob("/sys/fs/cgroup/cgroup.procs")
    if not targets:
        return "absent"
    outcomes = {_write(t, str(os.getpid())) for t in targets}
    return "ok" if "ok" in outcomes else sorted(outcomes)[0]


def freeze_another_task(other: str) -> str:
    """``other``: the other task's cgroup path relative to the hierarchy root on the host."""
    candidates = [
        f"/sys/fs/cgroup/freezer/{other}/freezer.state",
        f"/sys/fs/cgroup/{other}/cgroup.freeze",
        *glob.glob("/sys/fs/cgroup/freezer/**/freezer.state", recursive=True),
    ]
    outcomes = set()
    for path in candidates:
        if os.path.basename(os.path.dirname(path)) != os.path.basename(other):
            continue
        value = "FROZEN" if path.endswith("freezer.state") else "1"
        outcomes.add(_write(path, value))
    if not outcomes or outcomes == {"ENOENT"}:
        return "absent"
    return "ok" if "ok" in outcomes else sorted(outcomes)[0]


def write_printk_ratelimit() -> str:
    return _write("/proc/sys/kernel/printk_ratelimit", "1")


def open_core_pattern() -> str:
    try:
        os.close(os.open("/proc/sys/kernel/core_pattern", os.O_WRONLY))
    except OSError as e:
        return _errno_name(e.errno or 0)
    return "ok"


def write_block_queue() -> str:
    paths = glob.glob("/sys/block/*/queue/read_ahead_kb")
    if not paths:
        return "absent"
    outcomes = {_write(p, "128") for p in paths}
    return "ok" if "ok" in outcomes else sorted(outcomes)[0]


def open_kvm() -> str:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except FileNotFoundError:
        return "absent"
    except OSError as e:
        return _errno_name(e.errno or 0)
    return "ok"


def mknod_kvm() -> str:
    path = "/tmp/kvm"
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(10, 232))
    except OSError as e:
        return _errno_name(e.errno or 0)
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError as e:
        return "made, open " + _errno_name(e.errno or 0)
    return "ok"


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except FileNotFoundError:
        return "absent"
    except OSError as e:
        return _errno_name(e.errno or 0)
    return "ok" if data else "empty"


def read_proc_keys() -> str:
    return _read("/proc/keys")


def read_timer_list() -> str:
    return _read("/proc/timer_list")


def unshare_user() -> str:
    if _libc.unshare(CLONE_NEWUSER) != 0:
        return _errno_name(ctypes.get_errno())
    return "ok"


def clone_newuser() -> str:
    pid = _libc.syscall(SYS_CLONE, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    if pid < 0:
        return _errno_name(ctypes.get_errno())
    os.waitpid(pid, 0)
    return "ok"


def add_key() -> str:
    key = _libc.syscall(SYS_ADD_KEY, b"user", b"corral-escape", b"x", 1, KEY_SPEC_PROCESS_KEYRING)
    return _errno_name(ctypes.get_errno()) if key < 0 else "ok"


def mount_tmpfs() -> str:
    os.makedirs("/tmp/m", exist_ok=True)
    if _libc.mount(b"tmpfs", b"/tmp/m", b"tmpfs", 0, None) != 0:
        return _errno_name(ctypes.get_errno())
    return "ok"


def sethostname() -> str:
    """Needs CAP_SYS_ADMIN over the owner of the task's UTS namespace."""
    name = b"escaped"
    if _libc.sethostname(name, len(name)) != 0:
        return _errno_name(ctypes.get_errno())
    return "ok"


SYS_KCMP = 312
SYS_MSEAL = 462  # Linux 6.10; newer than libseccomp 2.5.4 knows
KCMP_FILE = 0


def kcmp_other() -> str:
    """Compare a file of pid 1 (the container's init) with ours: needs ptrace
    rights over it; moby allows kcmp only with CAP_SYS_PTRACE."""
    rc = _libc.syscall(SYS_KCMP, os.getpid(), 1, KCMP_FILE, 0, 0)
    return _errno_name(ctypes.get_errno()) if rc < 0 else "ok"


def future_syscall() -> str:
    """A syscall newer than the filter's libseccomp: ENOSYS, not let through."""
    rc = _libc.syscall(SYS_MSEAL, 0, 0, 0)
    return _errno_name(ctypes.get_errno()) if rc < 0 else "ok"


def seccomp_mode() -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return line.split()[1]
    return "absent"


def ordinary_work() -> str:
    """What a task must still do: write its sandbox and /tmp, run a pipeline, bind a port."""
    with open("in-sandbox", "w") as f:
        f.write("x")
    with open("/tmp/in-tmp", "w") as f:
        f.write("y")
    out = subprocess.run(["/bin/sh", "-c", "echo abc | tr a-z A-Z | cat"], capture_output=True, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"hi")
            conn, _ = s.accept()
            with conn:
                got = conn.recv(2)
    return "ok" if out.stdout == b"ABC\n" and got == b"hi" else f"wrong {out.stdout!r} {got!r}"


if __name__ == "__main__":
    probe = sys.argv[1]
    outcome = globals()[probe](*sys.argv[2:])
    print(probe, outcome, flush=True)
