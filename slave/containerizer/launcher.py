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
from dataclasses import dataclass

_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

# Computed before any fork: resetting every handler means the task starts with
# the dispositions a fresh process has (Python ignores SIGPIPE and SIGXFSZ).
_SIGNALS = tuple(s for s in sorted(signal.valid_signals()) if s not in (signal.SIGKILL, signal.SIGSTOP))
_MAX_FD = os.sysconf("SC_OPEN_MAX")
_SUPERVISOR_NAME = ctypes.create_string_buffer(b"corral-super")
_SUPERVISOR_NAME_ADDR = ctypes.addressof(_SUPERVISOR_NAME)
EXIT_SETUP_FAILED = 126
EXIT_NOT_FOUND = 127
_EXIT_SUPERVISOR_FAILED = 125


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
    )


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
    # of an init that may not reap (this host's pid 1 does not).
    _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        task = os.fork()
    except OSError as e:
        _write_all(exec_w, b"Ecannot fork the task: " + os.strerror(e.errno or 0).encode() + b"\n")
        os._exit(_EXIT_SUPERVISOR_FAILED)
    if task == 0:
        try:
            _close_fds_except(exec_w)
            _exec_task(spec, exec_w)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    # Only now drop the agent's sockets, epoll and pipe fds (so they die with the
    # agent): grpc's pthread_atfork handlers, which run in this process at the
    # fork above, abort if its epoll wakeup fd has been closed.
    null = os.open(b"/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    _close_fds_except(exec_w, done_w)
    _write_all(exec_w, b"P%d\n" % task)
    os.close(exec_w)
    status: int | None = None
    try:
        _, status = os.waitpid(task, 0)
    except ChildProcessError:
        status = None
    _write_status(spec, task, status)
    os.close(done_w)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    os._exit(0)


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


def _exec_task(spec: LaunchSpec, exec_w: int) -> None:
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
        stage = b"chdir to " + spec.cwd
        os.chdir(spec.cwd)
        stage = b"open stdin, stdout and stderr"
        stdin = os.open(b"/dev/null", os.O_RDONLY)
        out_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        stdout = os.open(spec.stdout, out_flags, 0o644)
        stderr = os.open(spec.stderr, out_flags, 0o644)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        for fd in {stdin, stdout, stderr} - {0, 1, 2}:
            os.close(fd)
    except OSError as e:
        reason = os.strerror(e.errno or 0).encode()
        _write_all(exec_w, b"Ecannot " + stage + b": " + reason + b"\n")
        os._exit(EXIT_SETUP_FAILED)
    _exec(spec)


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
