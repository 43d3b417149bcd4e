"""Health checks the agent runs against its running tasks (Mesos style).

A task launched with a ``HealthCheck`` is checked every ``interval_s`` from
the moment it is RUNNING:

- COMMAND: the command exits 0 within ``timeout_s``. It runs inside the
  task's container, confined exactly as the task is (containerizer/enter.py):
  the task's uid, gid and groups, capabilities, no_new_privs and seccomp
  filter, in its cgroups (its memory and pids limits count the check) and its
  namespaces, at its root and working directory, with the task's environment
  and the check's own. It never runs with the agent's privileges: a check
  that cannot enter the container fails. A check that overstays its timeout
  is killed with its process group.
- TCP: ``127.0.0.1:port`` accepts a connection, seen from the task's network
  namespace (the socket is made inside it, in a thread of its own; no tenant
  code runs in the agent, only the connect, and for HTTP the parse of the
  answer).
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
from typing import TYPE_CHECKING

import structlog

from corral.proto import messages_pb2 as pb

if TYPE_CHECKING:
    from corral.slave.containerizer import Containerizer

log = structlog.get_logger(__name__)
DEFAULT_INTERVAL_S = 10.0
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_GRACE_PERIOD_S = 10.0
DEFAULT_CONSECUTIVE_FAILURES = 3
#: how much of a failing check's output goes into the update's message
OUTPUT_TAIL = 200
#: runs a command inside the task's container: (argv, env, timeout_s) ->
#: (exit status, None if it timed out; output); raises to say it cannot
Enter = Callable[[Sequence[str], Mapping[str, str], float], Awaitable[tuple[int | None, bytes]]]


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


def _differs(pid: int, ns: str) -> bool:
    """Whether ``pid``'s namespace ``ns`` is not ours."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
    except OSError:
        return False


def command_argv(cmd: pb.CommandInfo) -> list[str]:
    """The argv of a check command."""
    return ["/bin/sh", "-c", cmd.value] if cmd.shell else list(cmd.arguments) or [cmd.value]


async def run_command(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | None, timeout_s: float
) -> Result:
    """Run ``argv`` here, as this process (no container: tests); healthy if
    it exits 0 within ``timeout_s``."""
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
        return _command_result(None, b"", timeout_s)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await proc.wait()
    return _command_result(proc.returncode, out, timeout_s)


async def run_inside(enter: Enter, argv: Sequence[str], env: Mapping[str, str], timeout_s: float) -> Result:
    """Run ``argv`` inside the task's container through ``enter``."""
    try:
        returncode, out = await enter(argv, env, timeout_s)
    except Exception as e:  # any failure to enter is a failed check, never a fallback
        return Result(False, f"command check could not enter the task's container: {e}")
    return _command_result(returncode, out, timeout_s)


def _command_result(returncode: int | None, out: bytes, timeout_s: float) -> Result:
    if returncode is None:
        return Result(False, f"command check timed out after {timeout_s:g}s")
    if returncode == 0:
        return Result(True, "command check passed")
    tail = out.decode(errors="replace").strip()[-OUTPUT_TAIL:]
    return Result(False, f"command check exited with status {returncode}" + (f": {tail}" if tail else ""))


def _connect(port: int, timeout_s: float, netns_pid: int) -> socket.socket:
    """A connection to 127.0.0.1:port, made from ``netns_pid``'s network
    namespace when it is not ours (call in a thread that may switch namespaces)."""
    if netns_pid <= 0 or not _differs(netns_pid, "net"):
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
    check: pb.HealthCheck,
    *,
    pid: int = 0,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    enter: Enter | None = None,
) -> Result:
    """Run ``check`` once against the task whose process is ``pid`` (0: on
    this host). A COMMAND check runs through ``enter``, inside the task's
    container; without one (no container: tests) it runs here, in ``cwd``."""
    timeout_s = check.timeout_s or DEFAULT_TIMEOUT_S
    if check.type == pb.HealthCheck.COMMAND:
        argv = command_argv(check.command)
        full_env = {**(env or {}), **check.command.environment}
        if enter is not None:
            return await run_inside(enter, argv, full_env, timeout_s)
        return await run_command(argv, full_env, cwd, timeout_s)
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


def container_enter(containerizer: Containerizer, container_id: str) -> Enter | None:
    """How a COMMAND check enters ``container_id`` (Containerizer.enter),
    or None if it cannot: launched by an agent before checks were confined,
    it has no launch spec."""
    if not containerizer.can_enter(container_id):
        return None

    async def enter(argv: Sequence[str], env: Mapping[str, str], t: float) -> tuple[int | None, bytes]:
        outcome = await containerizer.enter(container_id, argv, env, t)
        return outcome.returncode, outcome.output

    return enter


def start(
    info: pb.TaskInfo,
    env: Mapping[str, str],
    cwd: str,
    task_pid: Callable[[], int],
    report: Callable[[bool, str], None],
    kill: Callable[[str], None],
    enter: Enter | None,
) -> asyncio.Task[None] | None:
    """The agent's hook: check the task of ``info`` while it runs, if it asks
    (``task_pid``: its process now, 0 if unknown; ``report`` and ``kill`` as
    in :func:`watch`; ``enter``: how a COMMAND check enters its container, see
    :func:`container_enter`). The caller cancels the returned task when the
    task ends."""
    if not info.HasField("health_check"):
        return None
    check = info.health_check
    if check.type == pb.HealthCheck.COMMAND and enter is None:
        # Never run the check unconfined, nor fail (and kill) a task for an
        # agent upgrade: it goes unchecked until relaunched.
        log.warning(
            "task.health_check_skipped",
            task_id=info.task_id,
            reason="the container has no launch spec to enter",
        )
        return None

    async def probe() -> Result:
        pid = 0
        with contextlib.suppress(Exception):
            pid = task_pid()
        return await check_once(check, pid=pid, env=env, cwd=cwd, enter=enter)

    return asyncio.create_task(watch(check, probe, report, kill), name=f"health-{info.task_id}")
