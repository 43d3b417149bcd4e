"""Fork the per-container supervisor and, from it, the task.

The agent forks a supervisor (as conmon does for podman): it calls ``setsid``,
becomes a child subreaper, forks the task and waits for it, writes
``exit_status.json`` atomically, then reaps the task's orphaned descendants and
exits. The task child joins its cgroups *before* ``execve``, so nothing it runs
is ever outside them.

Everything that runs after ``fork`` here is restricted to os-level calls on
values prepared before the fork: no logging, asyncio, locks or imports (other
threads of the agent may have held them at fork time), and every path ends in
``os._exit`` so an exception can never unwind into the agent's code in a child.

Two close-on-exec pipes report back to the agent:

* the *exec* pipe: the supervisor writes ``P<task pid>\\n``; the task child
  writes ``E<reason>\\n`` if it could not set itself up. EOF means the task has
  exec'd (or died trying), so ``launch`` returns only once it is in its cgroups.
* the *done* pipe: only the supervisor keeps it, and closes it once the exit
  status is on disk. EOF means the task has ended.

By default ``spawn`` runs in the fork server (forkserver.py), a small fresh
interpreter, rather than in the agent, so forking copies a few MB instead of the
agent's address space. The fork server loads this file by path without the
corral package or site-packages: it must import only the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
from dataclasses import dataclass, field

# Relative, so that it works both as corral.slave.containerizer.launcher and
# when the fork server loads this folder as a nameless package.
from . import hardening, kernel, network
from . import rootfs as fs

# Not typing.TYPE_CHECKING: importing typing would cost the fork server memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_PR_SET_NAME = kernel.PR_SET_NAME
_PR_SET_CHILD_SUBREAPER = kernel.PR_SET_CHILD_SUBREAPER
_prctl = kernel._prctl  # the raw call: the supervisor cannot handle an exception

# Computed before any fork: resetting every handler means the task starts with
# the dispositions a fresh process has (Python ignores SIGPIPE and SIGXFSZ).
_SIGNALS = tuple(s for s in sorted(signal.valid_signals()) if s not in (signal.SIGKILL, signal.SIGSTOP))
_MAX_FD = os.sysconf("SC_OPEN_MAX")
_SUPERVISOR_NAME = ctypes.create_string_buffer(b"corral-super")
_SUPERVISOR_NAME_ADDR = ctypes.addressof(_SUPERVISOR_NAME)
_INIT_NAME = ctypes.create_string_buffer(b"corral-init")
_INIT_NAME_ADDR = ctypes.addressof(_INIT_NAME)
# What the container's init passes on to the command (as tini does); SIGCHLD
# is waited for too. SIGKILL/SIGSTOP from the host reach the init anyway.
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_INIT_WAITS = frozenset((*_FORWARDED, signal.SIGCHLD))
_CAP_LAST = kernel.last_cap()
EXIT_SETUP_FAILED = 126
EXIT_NOT_FOUND = 127
_EXIT_SUPERVISOR_FAILED = 125


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


def spawn(spec: LaunchSpec) -> Spawned:
    """Fork the supervisor. The caller owns the returned fds and must reap the pid."""
    exec_r, exec_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        for fd in (exec_r, exec_w, done_r, done_w):
            os.close(fd)
        raise
    if pid == 0:
        try:
            _supervise(spec, exec_w, done_w)
        finally:
            os._exit(_EXIT_SUPERVISOR_FAILED)
    os.close(exec_w)
    os.close(done_w)
    return Spawned(supervisor_pid=pid, exec_fd=exec_r, done_fd=done_r)


def set_process_name(name: bytes) -> None:
    """Set the name ps and top show (comm, at most 15 bytes); cmdline stays that of the parent."""
    buf = ctypes.create_string_buffer(name[:15])
    _prctl(_PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0)


def _reset_signals(ignore: tuple[int, ...] = ()) -> None:
    for sig in _SIGNALS:
        # Signals reserved by libc (32, 33) cannot be changed.
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN if sig in ignore else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _write_all(fd: int, data: bytes) -> None:
    # The agent may be gone; the status file still records the outcome.
    with contextlib.suppress(OSError):
        os.write(fd, data)


def _close_fds_except(*keep: int) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def _supervise(spec: LaunchSpec, exec_w: int, done_w: int) -> None:
    os.setsid()
    # Forked, not exec'd: without a name of its own it would look like its parent
    # in ps. The buffer was made before the fork.
    _prctl(_PR_SET_NAME, _SUPERVISOR_NAME_ADDR, 0, 0, 0)
    # Ignore SIGPIPE so that an agent which died before reading the pid cannot
    # take the supervisor (and the exit status) with it.
    _reset_signals(ignore=(signal.SIGPIPE,))
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    # Orphans of the task are re-parented to us and reaped, not left as zombies
    # of an init that may not reap (this host's pid 1 does not). In a pid
    # namespace they go to the container's init instead.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # The container's init reports the command's wait status here, since as
    # PID 1 of its namespace it cannot die of a signal it sends itself.
    stage = b"create the status pipe"
    try:
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        if spec.isolation.pid_ns:
            # Only our children enter the new namespace: the first one is its
            # PID 1. The supervisor itself stays outside every namespace.
            stage = b"unshare the pid namespace"
            kernel.unshare(kernel.CLONE_NEWPID)
        stage = b"fork the task"
        task = os.fork()
    except OSError as e:
        reason = (e.strerror or os.strerror(e.errno or 0)).encode(errors="replace")
        _write_all(exec_w, b"Ecannot " + stage + b": " + reason + b"\n")
        os._exit(_EXIT_SUPERVISOR_FAILED)
    if task == 0:
        try:
            _close_fds_except(exec_w, report_w)
            _task_child(spec, exec_w, report_w)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    os.close(report_w)
    # Only now drop the agent's sockets, epoll and pipe fds (so they die with the
    # agent): grpc's pthread_atfork handlers, which run in this process at the
    # fork above, abort if its epoll wakeup fd has been closed.
    null = os.open(b"/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    _close_fds_except(exec_w, done_w, report_r)
    _write_all(exec_w, b"P%d\n" % task)
    os.close(exec_w)
    status: int | None = None
    try:
        _, status = os.waitpid(task, 0)
    except ChildProcessError:
        status = None
    if status is not None and os.WIFEXITED(status):
        status = _reported_status(report_r, status)
    _write_status(spec, task, status)
    os.close(done_w)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    os._exit(0)


def _reported_status(report_r: int, status: int) -> int:
    """The command's wait status as its init reported it, else the init's own."""
    os.set_blocking(report_r, False)
    try:
        report = os.read(report_r, 64)
    except OSError:
        return status
    return int(report) if report.isdigit() else status


def _write_status(spec: LaunchSpec, task: int, status: int | None) -> None:
    if status is None:
        body = b'{"pid": %d, "exit_code": null, "signal": null}' % task
    elif os.WIFSIGNALED(status):
        body = b'{"pid": %d, "exit_code": null, "signal": %d}' % (task, os.WTERMSIG(status))
    else:
        body = b'{"pid": %d, "exit_code": %d, "signal": null}' % (task, os.WEXITSTATUS(status))
    tmp = spec.status_path + b".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            # No fsync: the record must outlive the agent process, not the
            # host (see checkpoint.py); rename keeps it atomic.
            os.write(fd, body + b"\n")
        finally:
            os.close(fd)
        os.rename(tmp, spec.status_path)
    except OSError:
        pass  # the agent reports a lost status; nothing better can be done here


def _task_child(spec: LaunchSpec, exec_w: int, report_w: int) -> None:
    """Set the container up, then exec the command (or, in a pid namespace, be its init).

    The order matters:

    1. join the cgroups first, so that everything below (and every byte the
       task allocates) is accounted and killable from the host;
    2. stdio (host paths, opened as root before the root switch and any uid
       switch);
    3. namespaces, mounts (with an image: overlayfs, /proc, /dev, /sys,
       /tmp, sandbox, volumes, then pivot_root; see rootfs.py), hostname and
       loopback while still fully privileged (they need CAP_SYS_ADMIN /
       CAP_NET_ADMIN); /proc is mounted after the fork into the new pid
       namespace (the supervisor unshared it), so it shows only the
       container's processes; then chdir;
    4. in a pid namespace, fork the command and stay behind as its init;
    5. in the command: drop the bounding set (needs CAP_SETPCAP, so before the
       uid switch), setgroups/setgid/setuid, capset, PR_SET_NO_NEW_PRIVS, the
       seccomp filter, exec.

    Any failure goes to the agent as ``E cannot <stage>: <reason>``.
    """
    iso = spec.isolation
    stage = b"reset signals"
    try:
        _reset_signals()
        pid = b"%d" % os.getpid()
        for procs in spec.cgroup_procs:
            stage = b"join cgroup " + procs
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        # Before the mounts: stdout and stderr are host paths, out of reach
        # once the container's root is switched.
        stage = b"open stdin, stdout and stderr"
        stdin = os.open(b"/dev/null", os.O_RDONLY)
        out_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        stdout = os.open(spec.stdout, out_flags, 0o644)
        stderr = os.open(spec.stderr, out_flags, 0o644)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        for fd in {stdin, stdout, stderr} - {0, 1, 2}:
            os.close(fd)
        if iso.clone_flags:
            stage = b"unshare namespaces"
            kernel.unshare(iso.clone_flags)
        # In the new mount namespace (a bind from another one is EINVAL), and
        # before the private /tmp could hide a source under /tmp.
        stage = b"open the volumes"
        sources = fs.open_sources(spec.mounts)
        if spec.rootfs is not None:
            stage = b"set up the root filesystem"
            fs.enter_image(
                spec.rootfs, spec.mounts, sources, spec.cwd, iso.tmp_bytes, iso.devices, iso.cgroup_mounts
            )
        elif iso.clone_flags & kernel.CLONE_NEWNS:
            stage = b"set up mounts"
            _mounts(spec)
            stage = b"mount volumes"
            fs.mount_on_host(spec.mounts, sources, spec.sandbox)
        if iso.clone_flags & kernel.CLONE_NEWUTS and iso.hostname:
            stage = b"set the hostname"
            kernel.sethostname(iso.hostname)
        stage = b"set up the " + iso.network.encode() + b" network"
        network.setup(iso.network)
        stage = b"chdir to " + spec.cwd
        os.chdir(spec.cwd)
    except OSError as e:
        _fail(exec_w, stage, e)
    if iso.pid_ns:
        _init(spec, exec_w, report_w)
    os.close(report_w)
    _drop_privileges(spec, exec_w)
    _exec(spec)


def _fail(exec_w: int, stage: bytes, e: OSError) -> NoReturn:
    reason = (e.strerror or os.strerror(e.errno or 0)).encode(errors="replace")
    _write_all(exec_w, b"Ecannot " + stage + b": " + reason + b"\n")
    os._exit(EXIT_SETUP_FAILED)


def _mounts(spec: LaunchSpec) -> None:
    """Private propagation, a fresh /proc and a private /tmp; the host sees none of them.

    With ``harden`` the host's tree gets what an image gets (hardening.py): a
    minimal /dev over the host's, a read-only /sys showing only the
    container's cgroups, masked and read-only /proc paths.
    """
    iso = spec.isolation
    kernel.mount(None, b"/", None, kernel.MS_REC | kernel.MS_PRIVATE, None)
    if iso.pid_ns:
        flags = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
        kernel.mount(b"proc", b"/proc", b"proc", flags, None)
    if iso.harden:
        dev_sources = hardening.open_dev_sources(iso.devices)
        try:
            hardening.mount_dev(b"/dev", iso.devices, dev_sources)
        finally:
            for fd in dev_sources:
                os.close(fd)
        hardening.mount_sys(b"", iso.cgroup_mounts)
        hardening.mask_and_protect(b"")
    if iso.tmp_bytes > 0:
        # A sandbox under /tmp (tests, small setups) would vanish under the
        # tmpfs: keep a handle on it and bind it back at the same path.
        keep = spec.cwd if spec.cwd.startswith(b"/tmp/") else None
        keep_fd = os.open(keep, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if keep else -1
        try:
            data = b"size=%d,mode=1777" % iso.tmp_bytes
            kernel.mount(b"tmpfs", b"/tmp", b"tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, data)
            if keep:
                os.makedirs(keep, 0o755, exist_ok=True)
                kernel.mount(b"/proc/self/fd/%d" % keep_fd, keep, None, kernel.MS_BIND | kernel.MS_REC, None)
        finally:
            if keep_fd >= 0:
                os.close(keep_fd)


def _init(spec: LaunchSpec, exec_w: int, report_w: int) -> None:
    """PID 1 of the container: fork the command, forward signals, reap, exit as it did.

    Like tini: the signals are blocked and taken with sigwaitinfo, so none is
    lost between the fork and the wait, and none hits PID 1's default action
    (which the kernel would drop). When this process exits the kernel kills
    everything left in the namespace.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _INIT_WAITS)
    try:
        command = os.fork()
    except OSError as e:
        _fail(exec_w, b"fork the command", e)
    if command == 0:
        try:
            os.close(report_w)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            _drop_privileges(spec, exec_w)
            _exec(spec)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    # The command's copy closes at exec, which is when the agent may go on.
    os.close(exec_w)
    _prctl(_PR_SET_NAME, _INIT_NAME_ADDR, 0, 0, 0)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.close(fd)
    while True:
        info = signal.sigwaitinfo(_INIT_WAITS)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == command:
                _write_all(report_w, b"%d" % status)
                os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _drop_privileges(spec: LaunchSpec, exec_w: int) -> None:
    iso = spec.isolation
    stage = b"drop privileges"
    try:
        if iso.cap_keep >= 0:
            stage = b"drop capabilities from the bounding set"
            for cap in range(_CAP_LAST + 1):
                if not iso.cap_keep & (1 << cap):
                    kernel.prctl(kernel.PR_CAPBSET_DROP, cap)
        if iso.uid >= 0:
            stage = b"switch to uid %d gid %d" % (iso.uid, iso.gid)
            os.setgroups(list(dict.fromkeys((iso.gid, *iso.groups))))
            os.setgid(iso.gid)
            os.setuid(iso.uid)
        if iso.cap_keep >= 0:
            stage = b"drop capabilities"
            effective, permitted, inheritable = kernel.capget()
            kernel.capset(effective & iso.cap_keep, permitted & iso.cap_keep, inheritable & iso.cap_keep)
        if iso.no_new_privs:
            stage = b"set no_new_privs"
            kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        if iso.seccomp:
            # Last, in the command only: the init above it must still fork and
            # reap, and every call before exec here is one the filter may deny.
            stage = b"load the seccomp filter"
            kernel.seccomp_filter(iso.seccomp)
    except OSError as e:
        _fail(exec_w, stage, e)


def _exec(spec: LaunchSpec) -> None:
    """execvp(3)'s search: remember EACCES, skip ENOENT/ENOTDIR, stop on anything else."""
    error: OSError | None = None
    for path in spec.exec_paths:
        try:
            os.execve(path, spec.argv, spec.env)
        except OSError as e:
            if error is None or e.errno not in (errno.ENOENT, errno.ENOTDIR):
                error = e
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                break
    code = error.errno if error is not None and error.errno else errno.ENOENT
    os.write(2, b"corral: exec " + spec.argv[0] + b": " + os.strerror(code).encode() + b"\n")
    os._exit(EXIT_NOT_FOUND if code in (errno.ENOENT, errno.ENOTDIR) else EXIT_SETUP_FAILED)


def confine_and_exec(spec: LaunchSpec, report_fd: int) -> NoReturn:
    """Exec ``spec``'s command confined exactly as the task's command is:
    default signal dispositions, then ``_drop_privileges`` (bounding set,
    uid/gid/groups, capabilities, no_new_privs, seccomp) and ``_exec``. For a
    process already inside the container (enter.py); a failure is reported on
    ``report_fd`` as ``Ecannot <stage>: <reason>`` and ends the process."""
    _reset_signals()
    _drop_privileges(spec, report_fd)
    _exec(spec)
    os._exit(EXIT_SETUP_FAILED)  # _exec does not return
