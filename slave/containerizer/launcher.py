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
import os
import signal

# Relative, so that it works both as corral.slave.containerizer.launcher and
# when the fork server loads this folder as a nameless package.
from . import idmap, kernel
from .privileges import confine_and_exec
from .process import (
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    EXIT_SUPERVISOR_FAILED,
    close_fds_except,
    name_buffer,
    reset_signals,
    write_all,
)
from .spec import IsolationSpec, LaunchSpec, Spawned, exec_candidates, spec_from_json, spec_to_json
from .task_setup import task_child

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_SETUP_FAILED",
    "IsolationSpec",
    "LaunchSpec",
    "Spawned",
    "confine_and_exec",
    "exec_candidates",
    "set_process_name",
    "spawn",
    "spec_from_json",
    "spec_to_json",
]

_PR_SET_NAME = kernel.PR_SET_NAME
_PR_SET_CHILD_SUBREAPER = kernel.PR_SET_CHILD_SUBREAPER
_prctl = kernel._prctl  # the raw call: the supervisor cannot handle an exception
_SUPERVISOR_NAME_ADDR = name_buffer(b"corral-super")


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
            os._exit(EXIT_SUPERVISOR_FAILED)
    os.close(exec_w)
    os.close(done_w)
    return Spawned(supervisor_pid=pid, exec_fd=exec_r, done_fd=done_r)


def set_process_name(name: bytes) -> None:
    """Set the name ps and top show (comm, at most 15 bytes); cmdline stays that of the parent."""
    buf = ctypes.create_string_buffer(name[:15])
    _prctl(_PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0)


def _supervise(spec: LaunchSpec, exec_w: int, done_w: int) -> None:
    os.setsid()
    # Forked, not exec'd: without a name of its own it would look like its parent
    # in ps. The buffer was made before the fork.
    _prctl(_PR_SET_NAME, _SUPERVISOR_NAME_ADDR, 0, 0, 0)
    # Ignore SIGPIPE so that an agent which died before reading the pid cannot
    # take the supervisor (and the exit status) with it.
    reset_signals(ignore=(signal.SIGPIPE,))
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    # Orphans of the task are re-parented to us and reaped, not left as zombies
    # of an init that may not reap (this host's pid 1 does not). In a pid
    # namespace they go to the container's init instead.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # The container's init reports the command's wait status here, since as
    # PID 1 of its namespace it cannot die of a signal it sends itself.
    stage = b"create the status pipe"
    userns_fd = -1
    try:
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        if spec.isolation.userns:
            # Before the pid namespace: its helper process would otherwise
            # become the namespace's PID 1 and take it down as it leaves.
            stage = b"create the user namespace"
            userns_fd = idmap.make(spec.isolation.userns_base, spec.isolation.userns_size)
        if spec.isolation.pid_ns:
            # Only our children enter the new namespace: the first one is its
            # PID 1. The supervisor itself stays outside every namespace.
            stage = b"unshare the pid namespace"
            kernel.unshare(kernel.CLONE_NEWPID)
        stage = b"fork the task"
        task = os.fork()
    except OSError as e:
        reason = (e.strerror or os.strerror(e.errno or 0)).encode(errors="replace")
        write_all(exec_w, b"Ecannot " + stage + b": " + reason + b"\n")
        os._exit(EXIT_SUPERVISOR_FAILED)
    if task == 0:
        try:
            close_fds_except(exec_w, report_w, userns_fd)
            task_child(spec, exec_w, report_w, userns_fd)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    os.close(report_w)
    if userns_fd >= 0:
        os.close(userns_fd)
    # Only now drop the agent's sockets, epoll and pipe fds (so they die with the
    # agent): grpc's pthread_atfork handlers, which run in this process at the
    # fork above, abort if its epoll wakeup fd has been closed.
    null = os.open(b"/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    close_fds_except(exec_w, done_w, report_r)
    write_all(exec_w, b"P%d\n" % task)
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
