"""Run a command inside a running container, confined exactly as its task is.

What a COMMAND health check runs (slave/health.py), like ``docker exec`` or
Mesos' nested check containers: the command gets the task's uid, gid and
supplementary groups, its capability sets, no_new_privs and seccomp filter,
its cgroups (so the task's memory and pids limits count it) and its
namespaces (user if it has one, cgroup, IPC, UTS, network, pid, mount with
the task's root and working directory), with the task's environment unless
the caller gives one. It never runs with the agent's privileges: see
docs/architecture.md, "Entering a container".

How. At launch the containerizer checkpoints the task's :class:`LaunchSpec`
(``launch.json`` beside ``container.json``, root-only, so a re-attached
container can be entered too). :func:`run_inside` starts a helper, a fresh
interpreter (``-I -S``: no site-packages, no PYTHON* variables, an empty
environment, so nothing of the tenant's reaches the process that is still
root) that loads this folder as a nameless package, as the fork server does.
The helper reads the spec and the command on stdin, then:

1. opens a pidfd of the task, its ``/proc/PID/ns/*`` files (those that are
   not already ours) and ``/proc/PID/root``, checks that the pid is listed in
   the task's cgroup, and that the pidfd is still alive after the opens (so
   every handle is the task's, not a reused pid's);
2. joins the task's cgroups (every ``cgroup.procs`` of the spec, v1 or v2);
3. ``setns`` into each namespace but a user namespace, then ``fchdir`` to
   the task's root, ``chroot(".")`` and ``chdir`` to the task's working
   directory;
4. forks (joining a pid namespace only takes effect for children): the
   child joins the task's user namespace if it has one (as the task's
   command did, last, as root in it), drops privileges with the launcher's own code
   (:func:`launcher.confine_and_exec`, the very calls the task's command
   went through, from the same spec) and execs; the helper waits and exits
   with the command's status (128 + signal if it was killed).

Everything after step 1 runs as os-level calls only: the helper is root
inside the tenant's filesystem and must not import anything from it.

When the command ends, or overstays ``timeout_s``, its process group
(helper, command and whatever it started) is killed. A process that left
that group (``setsid``) stays in the task's cgroup and pid namespace and
ends with the task, as in ``docker exec``.

Standard library only at import: the helper imports this module without the
corral package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from . import checkpoint, kernel, launcher

# Not typing.TYPE_CHECKING (see launcher.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import NoReturn

#: the task's launch spec, in the container's meta dir
SPEC_FILE = "launch.json"
#: the helper's exit status when it could not enter (as the launcher's setup failures)
EXIT_CANNOT_ENTER = launcher.EXIT_SETUP_FAILED
#: how much of the command's output is kept (the end of it)
OUTPUT_KEEP = 64 * 1024
# The mount namespace last (after it /proc is the container's). A user
# namespace is joined later still, by the command's process just before it
# drops privileges, as the task's command joined it: the helper is root on
# the host, which every other namespace (whoever owns it) lets in, and
# inside a user namespace it would no longer be.
_NAMESPACES = (
    ("cgroup", kernel.CLONE_NEWCGROUP),
    ("ipc", kernel.CLONE_NEWIPC),
    ("uts", kernel.CLONE_NEWUTS),
    ("net", kernel.CLONE_NEWNET),
    ("pid", kernel.CLONE_NEWPID),
    ("mnt", kernel.CLONE_NEWNS),
)
_PACKAGE = "_corral_enter"
_BOOTSTRAP = (
    "import importlib, sys, types\n"
    f"p = types.ModuleType({_PACKAGE!r}); p.__path__ = [sys.argv[1]]; sys.modules[{_PACKAGE!r}] = p\n"
    f"importlib.import_module({_PACKAGE!r} + '.enter').helper_main()\n"
)


#: what feeds an entered command's stdin: data, None (end of input), or a
#: terminal's new (rows, cols)
Input = bytes | tuple[int, int] | None


class EnterError(Exception):
    """The container cannot be entered (no launch spec, not running)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How an entered command ended: ``returncode`` None when it was killed
    after ``timeout_s``; ``output`` is the end of its stdout and stderr."""

    returncode: int | None
    output: bytes


# -- the agent's side ----------------------------------------------------------


def save_spec(meta_dir: Path, spec: launcher.LaunchSpec) -> None:
    """Checkpoint the task's launch spec for :func:`run_inside` (root-only: it holds the task's env)."""
    checkpoint.write_json(meta_dir / SPEC_FILE, launcher.spec_to_json(spec), mode=0o600)


def has_spec(meta_dir: Path) -> bool:
    """Whether the container of ``meta_dir`` can be entered (its launch spec was saved)."""
    return (meta_dir / SPEC_FILE).is_file()


async def run_inside(
    meta_dir: Path,
    task_pid: int,
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    timeout_s: float,
    on_output: Callable[[bytes], Awaitable[None]] | None = None,
    stdin: asyncio.Queue[Input] | None = None,
    tty: tuple[int, int] | None = None,
) -> Outcome:
    """Run ``argv`` inside the container of ``meta_dir`` whose task is
    ``task_pid``, with ``env`` (None: the task's). Raises EnterError if the
    container has no launch spec; a failure to enter is an Outcome with
    EXIT_CANNOT_ENTER and the reason in its output. ``on_output`` is given
    each piece of output as it comes (``corral exec`` streams it); the
    Outcome keeps the end of it either way.

    ``stdin`` feeds the command's standard input (bytes; None closes it;
    ``(rows, cols)`` resizes the terminal); without it stdin is /dev/null.
    ``tty`` (rows, cols) runs it on a pseudo-terminal of that size, its
    controlling terminal, for interactive use (enter_io.py).
    """
    import asyncio  # here: the helper imports this module too, and must start fast

    from . import enter_io

    spec = checkpoint.read_json(meta_dir / SPEC_FILE)
    if spec is None:
        raise EnterError(f"{meta_dir / SPEC_FILE} is missing: the container cannot be entered")
    if task_pid <= 0 or not argv:
        raise EnterError("nothing to enter: no task pid or no command")
    request = {
        "spec": spec,
        "pid": task_pid,
        "argv": list(argv),
        "env": None if env is None else [[k, v] for k, v in env.items()],
        "tty": tty is not None,
    }
    # The request goes on a pipe of its own (fd passed), so that stdin is the command's.
    request_r, request_w = os.pipe()
    # On a terminal the command gets a process group of its own; the helper says which.
    report_r, report_w = os.pipe() if tty is not None else (-1, -1)
    request["report_fd"] = report_w
    io = enter_io.Plumbing.open(tty, piped_stdin=stdin is not None)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _BOOTSTRAP,
            str(Path(__file__).parent),
            str(request_r),
            stdin=io.child_stdin,
            stdout=io.child_stdout,
            stderr=io.child_stderr,
            pass_fds=(request_r,) if report_w < 0 else (request_r, report_w),
            start_new_session=True,
            env={},
        )
    except BaseException:
        os.close(request_w)
        io.close()
        if report_r >= 0:
            os.close(report_r)
        raise
    finally:
        os.close(request_r)
        if report_w >= 0:
            os.close(report_w)
        io.close_child_ends()

    async def talk() -> bytes:
        await asyncio.to_thread(enter_io.write_all, request_w, json.dumps(request).encode())
        pump = None if stdin is None else asyncio.ensure_future(io.pump(stdin, proc))
        try:
            return await io.read_output(proc, on_output, OUTPUT_KEEP)
        finally:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump

    try:
        async with asyncio.timeout(timeout_s):
            output = await talk()
    except TimeoutError:
        return Outcome(None, b"")
    finally:
        with contextlib.suppress(OSError):
            os.close(request_w)
        # Also once the helper is gone: what the command left in its process
        # group (children holding the output pipe) must not outlive the check.
        # The group's id cannot be reused while any member lives.
        groups = [proc.pid]
        if report_r >= 0:
            command_group = enter_io.read_pid(report_r)
            os.close(report_r)
            if command_group > 0:
                groups.append(command_group)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await proc.wait()
        io.close()
        if proc.returncode is not None:
            for group in groups:
                await _reap_orphans(group)
    return Outcome(proc.returncode, output)


async def _reap_orphans(pgid: int, timeout_s: float = 5.0) -> None:
    """Reap what of the helper's process group was re-parented to us.

    SIGKILL to the group can end the helper before its command: the command
    is then re-parented to the agent (a child subreaper) and, unreaped, stays
    a zombie in the task's pid namespace, whose init waits for every member
    before it exits, so the task could never be reported ended. Called once
    the helper is reaped (so asyncio's own wait is not raced); waits only for
    our children in that group, for at most ``timeout_s``.
    """
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)  # noqa: ASYNC222  (WNOHANG: never blocks)
        except ChildProcessError:
            return  # none of our children is left in the group
        if pid == 0:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.02)


# -- the helper ----------------------------------------------------------------


def helper_main() -> NoReturn:
    """The helper's body (see the module docstring); never returns."""
    stage = "read the request"
    try:
        with os.fdopen(int(sys.argv[2]), "rb") as request_file:
            request = json.loads(request_file.read())
        if request.get("tty"):
            # Our session (start_new_session) gets the pty as its terminal:
            # the command, in our process group, is its foreground job. We
            # ignore what the terminal sends (^C, ^\\, ^Z, a hang-up) and
            # the command, reset to the defaults, gets it; we end with it.
            import fcntl
            import termios

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
        spec = launcher.spec_from_json(request["spec"])
        pid = int(request["pid"])
        argv = [os.fsencode(a) for a in request["argv"]]
        if request["env"] is not None:
            env = {os.fsencode(k): os.fsencode(v) for k, v in request["env"]}
            spec = dataclasses.replace(spec, env=env)
        path = spec.env.get(b"PATH")
        search = None if path is None else os.fsdecode(path)
        exec_paths = launcher.exec_candidates(os.fsdecode(argv[0]), search)
        spec = dataclasses.replace(spec, argv=tuple(argv), exec_paths=exec_paths)
        stage = "enter the container"
        userns = _enter(spec, pid)
        stage = "fork the command"
        child = os.fork()
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        os.write(2, f"corral: cannot {stage}: {e}\n".encode(errors="replace"))
        os._exit(EXIT_CANNOT_ENTER)
    report_fd = int(request.get("report_fd", -1))
    if child == 0:
        try:
            if report_fd >= 0:
                # A terminal's foreground job must be a group the command can
                # name: ours is outside its pid namespace (job control fails).
                os.setpgid(0, 0)
                os.close(report_fd)
            if userns >= 0:
                _enter_userns(userns)
            launcher.confine_and_exec(spec, 2)
        finally:
            os._exit(EXIT_CANNOT_ENTER)
    if userns >= 0:
        os.close(userns)
    if report_fd >= 0:
        # The agent kills and reaps the command's group too (run_inside).
        with contextlib.suppress(OSError):
            os.setpgid(child, child)
        with contextlib.suppress(OSError):
            os.write(report_fd, b"%d\n" % child)
            os.close(report_fd)
        with contextlib.suppress(OSError):
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            os.tcsetpgrp(0, child)
    _, status = os.waitpid(child, 0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _enter(spec: launcher.LaunchSpec, pid: int) -> int:
    """Steps 1-3 of the module docstring: this process ends up in the task's
    cgroups and namespaces (pid: for its children), at the task's root and
    cwd. Returns an fd of the task's user namespace for the command to join,
    -1 if it shares ours."""
    pidfd = os.pidfd_open(pid)
    opened: list[tuple[int, int]] = []
    root = userns = -1
    try:
        if not spec.cgroup_procs or b"%d" % pid not in _read(spec.cgroup_procs[0]).split():
            raise OSError(f"process {pid} is not in the task's cgroup (the task has ended)")
        for name, flag in _NAMESPACES:
            fd = _open_if_not_ours(pid, name)
            if fd >= 0:
                opened.append((fd, flag))
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
        userns = _open_if_not_ours(pid, "user")
        # Alive after the opens: every handle above is the task's.
        signal.pidfd_send_signal(pidfd, 0)
        own_pid = b"%d" % os.getpid()
        for procs in spec.cgroup_procs:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, own_pid)
            finally:
                os.close(fd)
        for fd, flag in opened:
            kernel.setns(fd, flag)
        os.fchdir(root)
        os.chroot(".")
        os.chdir(spec.cwd)
    except BaseException:
        if userns >= 0:
            os.close(userns)
        raise
    finally:
        for fd, _ in opened:
            os.close(fd)
        if root >= 0:
            os.close(root)
        os.close(pidfd)
    return userns


def _open_if_not_ours(pid: int, name: str) -> int:
    """An fd of ``pid``'s namespace ``name``; -1 if it is ours (or the kernel has no such type)."""
    try:
        fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY)
    except FileNotFoundError:
        return -1
    target, own = os.fstat(fd), os.stat(f"/proc/self/ns/{name}")
    if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
        os.close(fd)  # setns into our own namespace is useless (EINVAL for a user namespace)
        return -1
    return fd


def _enter_userns(fd: int) -> None:
    """Join the task's user namespace as its root, without the host's groups
    (then the launcher drops privileges as in the task's command)."""
    try:
        kernel.setns(fd, kernel.CLONE_NEWUSER)
        os.close(fd)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as e:
        os.write(2, f"corral: cannot enter the user namespace: {e}\n".encode(errors="replace"))
        os._exit(EXIT_CANNOT_ENTER)


def _read(path: bytes) -> bytes:
    with open(path, "rb") as f:
        return f.read()
