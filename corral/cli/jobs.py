"""Running batch work from the CLI: ``corral run`` and ``corral submit``.

The CLI is itself a short-lived framework: it subscribes, runs the job's tasks
with the batch scheduler, follows them, and tears the framework down at the
end (or on Ctrl-C, which kills what is still running).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from corral.cli.discovery import client_credentials, leader_of
from corral.frameworks.batch import BatchScheduler, JobSpec, TaskProgress
from corral.frameworks.driver import SchedulerDriver, tear_down
from corral.frameworks.types import TaskState
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.transport import Credentials, make_channel

if TYPE_CHECKING:
    # rich's tables and live display are for `corral submit`; `corral run`
    # streams raw output and need not import them.
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

STATE_STYLE = {
    TaskState.FINISHED: "green",
    TaskState.FAILED: "red",
    TaskState.ERROR: "red",
    TaskState.KILLED: "yellow",
    TaskState.LOST: "red",
    TaskState.DROPPED: "red",
    TaskState.RUNNING: "cyan",
}


@dataclass
class JobResult:
    job_id: str
    progress: list[TaskProgress]
    elapsed_s: float
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(p.state is TaskState.FINISHED for p in self.progress)


def never_fits_message(master: str, spec: JobSpec, credentials: Credentials | None = None) -> str | None:
    """Why some task of ``spec`` can never run on the cluster as it is (its
    agents' totals, from ``ListAgents``), with the smallest change that would
    let it; None if every task could, or no agent is known yet (they may be
    registering), or the policy does not let us list agents."""
    from corral.cli.operator_client import TIMEOUT_S, operator_stub
    from corral.frameworks.agents import candidates
    from corral.frameworks.fit_change import explain

    try:
        resp = operator_stub(master, credentials).ListAgents(op.ListAgentsRequest(), timeout=TIMEOUT_S)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.PERMISSION_DENIED:
            return None
        raise
    agents = candidates(resp)
    if not agents:
        return None
    for group in spec.groups:
        why = explain(group.ask(), agents)
        if why.never is not None:
            hint = f"\n  smallest change: {why.changes[0]}" if why.changes else ""
            return f"{why.never}{hint}"
    return None


def exit_code_of(p: TaskProgress) -> int:
    """The shell convention: the command's status, or 128 + signal."""
    s = p.status
    if s is None:
        return 1
    if s.exit_code is not None and not s.signal:
        return s.exit_code
    if s.signal:
        return 128 + s.signal
    return 0 if s.state is TaskState.FINISHED else 1


async def run_job(
    master: str,
    spec: JobSpec,
    *,
    framework_name: str,
    on_update: Callable[[TaskProgress], None] | None = None,
    while_running: Callable[[BatchScheduler, str], asyncio.Future[None]] | None = None,
    credentials: Credentials | None = None,
) -> JobResult:
    """Run ``spec`` on the cluster at ``master`` and wait for every task to end
    (``credentials``: default, the CLI's for that master)."""
    job_id = f"{spec.name}-{uuid.uuid4().hex[:6]}"
    scheduler = BatchScheduler(spec.tasks(job_id), on_update=on_update)
    driver = SchedulerDriver(
        scheduler,
        name=framework_name,
        master=master,
        failover_timeout_s=10.0,
        credentials=credentials or client_credentials(master),
    )
    started = time.monotonic()
    runner = asyncio.create_task(driver.run())
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    side = while_running(scheduler, job_id) if while_running else None
    waits = {
        asyncio.ensure_future(scheduler.done.wait()),
        asyncio.ensure_future(interrupted.wait()),
        runner,
    }
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # raises SubscribeError and the like
        if side is not None:
            if scheduler.done.is_set():
                # The output is a side show: its failure must not hide the
                # task's end and exit code.
                try:
                    async with asyncio.timeout(AWAY_AFTER_END_S + 5.0):
                        await asyncio.shield(side)
                except TimeoutError:
                    pass
                except grpc.aio.AioRpcError as e:
                    sys.stderr.write(f"corral: the task's output could not be read: {e.details()}\n")
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await side
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for w in waits:
            if w is not runner:
                w.cancel()
        await tear_down(driver, runner)  # the master kills whatever still runs
    return JobResult(
        job_id,
        list(scheduler.progress.values()),
        time.monotonic() - started,
        interrupted=interrupted.is_set(),
    )


def follow_output(
    master: str, task_id_of: Callable[[str], str], credentials: Credentials | None = None
) -> Callable[[BatchScheduler, str], asyncio.Future[None]]:
    """A ``while_running`` hook that streams one task's stdout and stderr."""
    creds = credentials or client_credentials(master)

    def start(scheduler: BatchScheduler, job_id: str) -> asyncio.Future[None]:
        return asyncio.ensure_future(_stream(master, scheduler, task_id_of(job_id), creds))

    return start


#: ReadFile answers that mean "its agent is away now", not "no such output"
AWAY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: how long the output of an ended task is waited for while its agent is away
AWAY_AFTER_END_S = 10.0


#: the sandbox files ``corral run`` streams, in the order they are written out
FILES = ("stdout", "stderr")


async def _nap(scheduler: BatchScheduler, seconds: float) -> None:
    """Sleep ``seconds``, or less if the job ends meanwhile, so that the last
    output is read as soon as the task ends instead of at the next poll."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await scheduler.done.wait()


async def _read(
    stub: operator_pb2_grpc.OperatorStub, scheduler: BatchScheduler, task_id: str, name: str, offset: int
) -> op.ReadFileResponse:
    return await stub.ReadFile(  # type: ignore[no-any-return]
        op.ReadFileRequest(
            task_id=task_id,
            framework_id=scheduler.framework_id,
            path=name,
            offset=offset,
            length=256 * 1024,
        ),
        timeout=5,
    )


async def _stream(master: str, scheduler: BatchScheduler, task_id: str, credentials: Credentials) -> None:
    channel = make_channel(await leader_of(master), credentials)
    stub = operator_pb2_grpc.OperatorStub(channel)
    offsets = {"stdout": 0, "stderr": 0}
    sinks = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    away_since = 0.0
    try:
        while True:
            p = scheduler.progress[task_id]
            if p.state is None or p.state in (TaskState.STAGING, TaskState.STARTING):
                if scheduler.done.is_set():
                    return
                await _nap(scheduler, 0.05)
                continue
            finished = p.state.is_terminal
            got = 0
            # Both files in one round trip; handled in order, as if read one by one.
            reads = await asyncio.gather(
                *(_read(stub, scheduler, task_id, name, offsets[name]) for name in FILES),
                return_exceptions=True,
            )
            for name, resp in zip(FILES, reads, strict=True):
                if isinstance(resp, grpc.aio.AioRpcError):
                    if resp.code() == grpc.StatusCode.NOT_FOUND:
                        continue
                    if resp.code() not in AWAY:
                        raise resp
                    # The task's agent is away (restarting, partitioned): its
                    # task runs on, so keep our place and read on when it is back.
                    away_since = away_since or time.monotonic()
                    if finished and time.monotonic() - away_since > AWAY_AFTER_END_S:
                        sys.stderr.write(
                            f"corral: the rest of {task_id}'s output is on its agent, which cannot be "
                            f"reached ({resp.details()}); `corral logs {task_id}` reads it when it is back\n"
                        )
                        return
                    got = -1
                    break
                if isinstance(resp, BaseException):
                    raise resp
                away_since = 0.0
                if resp.data:
                    sinks[name].write(resp.data)
                    sinks[name].flush()
                    offsets[name] += len(resp.data)
                    got += len(resp.data)
            if finished and got == 0:
                return
            if got == 0:
                await _nap(scheduler, 0.1)
            elif got < 0:
                await asyncio.sleep(0.5)
    finally:
        await channel.close(None)


class ProgressView:
    """Progress of a job: a live line on a terminal, plain lines otherwise."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self.counts: Counter[str] = Counter()
        self.live: Live | None = None
        self._last_line = ""
        self._last_print = 0.0
        self._states: dict[str, str] = {}

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, refresh_per_second=8)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(None, None, None)
        else:
            self._print_line(force=True)

    def update(self, p: TaskProgress) -> None:
        self.counts.clear()
        self._states[p.task.task_id] = p.state.name if p.state else "PENDING"
        self.counts.update(self._states.values())
        if self.live is not None:
            self.live.update(self._render())
        else:
            self._print_line()

    def _summary(self) -> str:
        done = sum(v for k, v in self.counts.items() if TaskState[k].is_terminal) if self.counts else 0
        parts = [f"{done}/{self.total} done"]
        for name in ("RUNNING", "FINISHED", "FAILED", "KILLED", "ERROR", "LOST"):
            if self.counts.get(name):
                parts.append(f"{name.lower()} {self.counts[name]}")
        return ", ".join(parts)

    def _render(self) -> Text:
        from rich.text import Text

        return Text(self._summary(), style="bold")

    def _print_line(self, force: bool = False) -> None:
        line = self._summary()
        now = time.monotonic()
        if line != self._last_line and (force or now - self._last_print >= 1.0):
            self.console.print(line)
            self._last_line, self._last_print = line, now


def result_table(result: JobResult, outputs: dict[str, str] | None = None) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"job {result.job_id}", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    table.add_column("exit", justify="right")
    table.add_column("agent")
    table.add_column("time", justify="right")
    if outputs is not None:
        table.add_column("output")
    table.add_column("message", overflow="fold")
    for p in result.progress:
        state = p.state.name if p.state else "PENDING"
        exit_text = ""
        if p.status is not None and p.status.exit_code is not None:
            exit_text = str(p.status.exit_code)
        elif p.status is not None and p.status.signal:
            exit_text = f"sig {p.status.signal}"
        took = f"{p.finished_at - p.launched_at:.2f}s" if p.finished_at and p.launched_at else ""
        message = ""
        if p.status is not None and p.state is not TaskState.FINISHED:
            message = p.status.message
            if p.status.stderr_tail:
                message += " | stderr: " + p.status.stderr_tail.strip().splitlines()[-1]
        row: list[Text | str] = [
            p.task.name or p.task.task_id,
            Text(state, style=STATE_STYLE.get(p.state, "") if p.state else "dim"),
            exit_text,
            p.hostname or p.agent_id,
            took,
        ]
        if outputs is not None:
            row.append(outputs.get(p.task.task_id, "").strip())
        row.append(message)
        table.add_row(*row)
    return table


async def collect_outputs(
    master: str,
    framework_id: str,
    task_ids: list[str],
    max_bytes: int = 2000,
    credentials: Credentials | None = None,
) -> dict[str, str]:
    """The beginning of each task's stdout, for the summary table."""
    channel = make_channel(await leader_of(master), credentials or client_credentials(master))
    stub = operator_pb2_grpc.OperatorStub(channel)
    out: dict[str, str] = {}

    async def one(task_id: str) -> None:
        try:
            resp = await stub.ReadFile(
                op.ReadFileRequest(
                    task_id=task_id,
                    framework_id=framework_id,
                    path="stdout",
                    length=max_bytes,
                ),
                timeout=5,
            )
            out[task_id] = resp.data.decode(errors="replace")
        except grpc.aio.AioRpcError as e:
            out[task_id] = f"({e.details()})"

    try:
        for i in range(0, len(task_ids), 32):
            await asyncio.gather(*(one(t) for t in task_ids[i : i + 32]))
    finally:
        await channel.close(None)
    return out
