"""Health checks the agent runs against its running tasks (Mesos style).

A task launched with a ``HealthCheck`` is checked every ``interval_s`` from
the moment it is RUNNING:

- COMMAND: the command exits 0 within ``timeout_s``. It runs as a child of
  the agent with the task's environment, entered into every namespace of the
  task that differs from the agent's (``nsenter``: mount with the task's root
  and working directory, UTS, IPC, network, pid); in the sandbox when the task
  shares the agent's mount namespace. It is not put in the task's cgroup, so
  what a check uses is not charged to the task. A check that overstays its
  timeout is killed with its process group.
- TCP: ``127.0.0.1:port`` accepts a connection, seen from the task's network
  namespace (the socket is made inside it, in a thread of its own).
- HTTP: ``GET http://127.0.0.1:port/path`` answers 200-399, as in Mesos.

The verdict goes to the framework as a TASK_RUNNING update with ``healthy``
set, only when it changes (reason REASON_TASK_HEALTH_CHECK_STATUS_UPDATED).
Failures before the first success within ``grace_period_s`` of the start are
not counted; after ``consecutive_failures`` failures in a row the task is
killed and its terminal update is TASK_KILLED with REASON_TASK_UNHEALTHY.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from corral.proto import messages_pb2 as pb

DEFAULT_INTERVAL_S = 10.0
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_GRACE_PERIOD_S = 10.0
DEFAULT_CONSECUTIVE_FAILURES = 3
#: how much of a failing check's output goes into the update's message
OUTPUT_TAIL = 200
_NAMESPACES = (("mnt", "--mount"), ("uts", "--uts"), ("ipc", "--ipc"), ("net", "--net"), ("pid", "--pid"))


@dataclass(frozen=True)
class Result:
    """One check's outcome."""

    healthy: bool
    message: str


@dataclass(frozen=True)
class Settings:
    """A HealthCheck with its defaults filled in."""

    interval_s: float
    timeout_s: float
    grace_period_s: float
    consecutive_failures: int

    @classmethod
    def of(cls, check: pb.HealthCheck) -> Settings:
        return cls(
            interval_s=check.interval_s or DEFAULT_INTERVAL_S,
            timeout_s=check.timeout_s or DEFAULT_TIMEOUT_S,
            grace_period_s=check.grace_period_s or DEFAULT_GRACE_PERIOD_S,
            consecutive_failures=check.consecutive_failures or DEFAULT_CONSECUTIVE_FAILURES,
        )


# -- one check ---------------------------------------------------------------


def _differing_namespaces(pid: int) -> list[str]:
    """The nsenter flags for the namespaces of ``pid`` that are not ours."""
    flags = []
    for ns, flag in _NAMESPACES:
        try:
            if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                flags.append(flag)
        except OSError:
            continue
    return flags


def command_argv(cmd: pb.CommandInfo, pid: int = 0) -> tuple[list[str], bool]:
    """The argv to run a check command, entered into ``pid``'s namespaces
    (when it has its own); and whether it runs in the task's mount namespace."""
    argv = ["/bin/sh", "-c", cmd.value] if cmd.shell else list(cmd.arguments) or [cmd.value]
    flags = _differing_namespaces(pid) if pid > 0 else []
    if not flags:
        return argv, False
    mount = "--mount" in flags
    enter = ["nsenter", f"--target={pid}", *flags]
    if mount:
        enter += ["--root", "--wd"]
    return [*enter, "--", *argv], mount


async def run_command(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | None, timeout_s: float
) -> Result:
    """Run ``argv``; healthy if it exits 0 within ``timeout_s``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        return Result(False, f"command check could not start: {e}")
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        return Result(False, f"command check timed out after {timeout_s:g}s")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await proc.wait()
    tail = out.decode(errors="replace").strip()[-OUTPUT_TAIL:]
    if proc.returncode == 0:
        return Result(True, "command check passed")
    return Result(
        False, f"command check exited with status {proc.returncode}" + (f": {tail}" if tail else "")
    )


def _connect(port: int, timeout_s: float, netns_pid: int) -> socket.socket:
    """A connection to 127.0.0.1:port, made from ``netns_pid``'s network
    namespace when it is not ours (call in a thread that may switch namespaces)."""
    if netns_pid <= 0 or "--net" not in _differing_namespaces(netns_pid):
        return socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    from corral.cluster.kernel import CLONE_NEWNET, setns

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY)
    try:
        setns(target, CLONE_NEWNET)
        try:
            # A socket stays in the namespace it was made in.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)
    sock.settimeout(timeout_s)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def _tcp(port: int, timeout_s: float, netns_pid: int) -> Result:
    try:
        _connect(port, timeout_s, netns_pid).close()
    except OSError as e:
        return Result(False, f"TCP check of port {port} failed: {e}")
    return Result(True, f"TCP port {port} accepts connections")


def _http(port: int, path: str, timeout_s: float, netns_pid: int) -> Result:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        conn.sock = _connect(port, timeout_s, netns_pid)
        try:
            conn.request("GET", path or "/", headers={"User-Agent": "corral-health-check"})
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        return Result(False, f"HTTP check of :{port}{path or '/'} failed: {e!r}")
    if 200 <= status < 400:
        return Result(True, f"HTTP check answered {status}")
    return Result(False, f"HTTP check of :{port}{path or '/'} answered {status}")


async def _in_thread(fn: Callable[[], Result], timeout_s: float) -> Result:
    # A thread of its own: it may switch network namespaces, and a pool thread
    # must never be left in a task's namespace.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
    try:
        async with asyncio.timeout(timeout_s + 1):
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
    except TimeoutError:
        return Result(False, f"check timed out after {timeout_s:g}s")
    finally:
        pool.shutdown(wait=False)


async def check_once(
    check: pb.HealthCheck, *, pid: int = 0, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> Result:
    """Run ``check`` once against the task whose process is ``pid`` (0: on this host)."""
    timeout_s = check.timeout_s or DEFAULT_TIMEOUT_S
    if check.type == pb.HealthCheck.COMMAND:
        argv, entered = command_argv(check.command, pid)
        full_env = {**(env or {}), **check.command.environment}
        return await run_command(argv, full_env, None if entered else cwd, timeout_s)
    if check.type == pb.HealthCheck.TCP:
        return await _in_thread(lambda: _tcp(check.port, timeout_s, pid), timeout_s)
    if check.type == pb.HealthCheck.HTTP:
        return await _in_thread(lambda: _http(check.port, check.path, timeout_s, pid), timeout_s)
    return Result(False, f"unknown health check type {check.type}")


# -- the loop ----------------------------------------------------------------


@dataclass
class Tracker:
    """The verdict over time: grace period, consecutive failures, changes. Pure."""

    settings: Settings
    started_at: float
    healthy: bool | None = None
    failures: int = 0
    succeeded_once: bool = False

    def record(self, result: Result, now: float) -> tuple[bool, bool]:
        """Count one result: (did the verdict change, must the task be killed)."""
        if result.healthy:
            self.failures = 0
            self.succeeded_once = True
            changed = self.healthy is not True
            self.healthy = True
            return changed, False
        if not self.succeeded_once and now - self.started_at < self.settings.grace_period_s:
            return False, False
        self.failures += 1
        changed = self.healthy is not False
        self.healthy = False
        return changed, self.failures >= self.settings.consecutive_failures


async def watch(
    check: pb.HealthCheck,
    probe: Callable[[], Awaitable[Result]],
    report: Callable[[bool, str], None],
    kill: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Check every interval; ``report`` a changed verdict; ``kill`` once after
    too many failures in a row (then return)."""
    settings = Settings.of(check)
    tracker = Tracker(settings, clock())
    while True:
        started = clock()
        result = await probe()
        changed, fatal = tracker.record(result, clock())
        if changed:
            report(result.healthy, result.message)
        if fatal:
            kill(f"health check failed {tracker.failures} times in a row: {result.message}")
            return
        await asyncio.sleep(max(0.0, settings.interval_s - (clock() - started)))


def start(
    info: pb.TaskInfo,
    env: Mapping[str, str],
    cwd: str,
    task_pid: Callable[[], int],
    report: Callable[[bool, str], None],
    kill: Callable[[str], None],
) -> asyncio.Task[None] | None:
    """The agent's hook: check the task of ``info`` while it runs, if it asks
    (``task_pid``: its process now, 0 if unknown; ``report`` and ``kill`` as
    in :func:`watch`). The caller cancels the returned task when the task ends."""
    if not info.HasField("health_check"):
        return None
    check = info.health_check

    async def probe() -> Result:
        pid = 0
        with contextlib.suppress(Exception):
            pid = task_pid()
        return await check_once(check, pid=pid, env=env, cwd=cwd)

    return asyncio.create_task(watch(check, probe, report, kill), name=f"health-{info.task_id}")
