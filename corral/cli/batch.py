"""``corral submit``, ``jobs``, ``job``, ``cancel``: batch jobs.

With a batch service running (``corral local`` starts one; so does
``corral framework run batch``, found through ``$CORRAL_HOME/batch.json``)
``submit`` hands the job to it and returns (``--wait`` follows it to the end).
Without one, or with ``--local``, the CLI runs the same engine itself with an
in-memory store for as long as the job runs, as a short-lived framework.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from corral.cli import exit as exit_codes
from corral.cli import ids
from corral.cli.common import _client_logging, console, fail, handle_errors, master_option
from corral.cli.discovery import resolve_master
from corral.cli.output import Column, Listing, key, output_option, show
from corral.cli.views import exit_text
from corral.frameworks.batch.spec import JobSpecError, load_job

STATE_STYLE = {
    "FINISHED": "green",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "SKIPPED": "yellow",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
}
JOB_FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def read_job_file(path: Path) -> tuple[dict[str, Any], str]:
    """The job table (validated here, so errors name the line) and its default name."""
    load_job(path)  # raises JobSpecError naming the file, line and key
    data = tomllib.loads(path.read_text())
    return data, path.stem


def service_for(master_flag: str | None) -> dict[str, Any] | None:
    """The running batch service to use, unless ``--master`` points at another cluster."""
    from corral.frameworks.batch.service import find_service

    found = find_service()
    if found is None:
        return None
    if master_flag and master_flag.removeprefix("grpc://") != found.get("master"):
        return None
    return found


def batch_client(master_flag: str | None, batch: str | None) -> Any:
    from corral.cli.discovery import api_credentials
    from corral.frameworks.batch.api import BatchClient

    found = service_for(master_flag)
    if batch:
        same = found is not None and found.get("address") == batch
        return BatchClient(batch, credentials=api_credentials(found if same else None))
    if found is None:
        fail(
            "no batch service found: start one with `corral local` or `corral framework run batch`",
            exit_codes.UNREACHABLE,
        )
    assert found is not None
    return BatchClient(str(found["address"]), credentials=api_credentials(found))


batch_option = click.option(
    "--batch",
    envvar="CORRAL_BATCH",
    default=None,
    metavar="HOST:PORT",
    help="The batch service's API (default: $CORRAL_BATCH, then the one in $CORRAL_HOME/batch.json).",
)


# -- following a job ---------------------------------------------------------


class JobProgress:
    """A live line on a terminal, plain lines (at most one a second) otherwise."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.live: Live | None = None
        self._last = ""
        self._last_print = 0.0

    def __enter__(self) -> JobProgress:
        if self.out.is_terminal:
            self.live = Live(Text(""), console=self.out, refresh_per_second=8)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
        elif self._last:
            self.out.print(self._last, highlight=False)

    def show(self, job: dict[str, Any]) -> None:
        counts = job.get("counts", {})
        done = sum(n for s, n in counts.items() if s in ("FINISHED", "FAILED", "CANCELLED", "SKIPPED"))
        parts = [f"{done}/{job['total']} done"]
        parts += [f"{s.lower()} {counts[s]}" for s in sorted(counts) if s not in ("PENDING",)]
        if counts.get("PENDING"):
            parts.append(f"pending {counts['PENDING']}")
        line = ", ".join(parts)
        for group, why in sorted(job.get("unschedulable", {}).items()):
            line += f"; {group} unschedulable: {why} (waiting for agents)"
        if self.live is not None:
            self.live.update(Text(line, style="bold"))
        elif line != self._last and time.monotonic() - self._last_print >= 1.0:
            self.out.print(line, highlight=False)
            self._last_print = time.monotonic()
        self._last = line


def job_table(job: dict[str, Any], outputs: dict[str, str] | None = None) -> Table:
    """Per task: state, tries, exit code, agent, time, output, message."""
    table = Table(title=f"job {job['id']} ({job['state'].lower()})", title_justify="left")
    for col in ("task", "state", "tries", "exit", "agent", "hostname", "time", "task id"):
        table.add_column(col, justify="right" if col in ("tries", "exit", "time") else "left")
    if outputs is not None:
        table.add_column("output")
    table.add_column("message", overflow="fold")
    for t in job.get("tasks", []):
        last = t["history"][-1] if t["history"] else None
        exit_text = ""
        if last is not None and last["exit_code"] is not None:
            exit_text = str(last["exit_code"])
        elif last is not None and last["signal"]:
            exit_text = f"sig {last['signal']}"
        took = ""
        if last is not None and last["finished_at"]:
            took = f"{last['finished_at'] - last['launched_at']:.2f}s"
        row: list[Text | str] = [
            f"{t['group']}[{t['index']}]",
            Text(t["state"], style=STATE_STYLE.get(t["state"], "")),
            str(t["attempts"]),
            exit_text,
            t["agent_id"],
            t["hostname"],
            took,
            last["task_id"] if last else "",
        ]
        if outputs is not None:
            row.append(outputs.get(last["task_id"], "").strip() if last else "")
        row.append("" if t["state"] == "FINISHED" else t["message"])
        table.add_row(*row)
    return table


async def print_result(job: dict[str, Any], master: str | None, output: bool) -> int:
    """The table and a summary line; 0 if the job succeeded."""
    outputs = None
    if output and master:
        from corral.cli.jobs import collect_outputs

        ids = [t["history"][-1]["task_id"] for t in job["tasks"] if t["history"]]
        outputs = await collect_outputs(master, "", ids)
    console.print(job_table(job, outputs))
    summary = escape(job_summary(job))
    if job["state"] == "SUCCEEDED":
        console.print(f"[bold green]job {job['id']} succeeded:[/] {summary}", highlight=False)
        return 0
    console.print(f"[bold red]job {job['id']} {job['state'].lower()}:[/] {summary}", highlight=False)
    return 1


#: failed tasks named in a summary line, at most
SUMMARY_NAMES = 5


def job_summary(job: dict[str, Any]) -> str:
    """``4/5 tasks finished in 3.2s; failed: step[3] (exit 2)``: the tasks that
    did not finish are named (the first few), with how they ended."""
    finished = job["counts"].get("FINISHED", 0)
    took = (job["finished_at"] or time.time()) - job["submitted_at"]
    line = f"{finished}/{job['total']} tasks finished in {took:.1f}s"
    by_state: dict[str, list[str]] = {}
    for t in job.get("tasks", []):
        if t["state"] in ("FAILED", "SKIPPED", "CANCELLED"):
            last = t["history"][-1] if t["history"] else {}
            how = exit_text(last.get("exit_code"), last.get("signal")) if last else ""
            name = f"{t['group']}[{t['index']}]"
            by_state.setdefault(t["state"].lower(), []).append(f"{name} ({how})" if how else name)
    for state, names in by_state.items():
        more = f" and {len(names) - SUMMARY_NAMES} more" if len(names) > SUMMARY_NAMES else ""
        line += f"; {state}: {', '.join(names[:SUMMARY_NAMES])}{more}"
    return line


def _follow(client: Any, job_id: str, output: bool) -> int:
    """Print the job's task changes until it ends, then its table; Ctrl-C detaches (follow.py)."""
    from corral.cli.follow import follow

    def finish(job: dict[str, Any]) -> int:
        return asyncio.run(print_result(job, client.state().get("master") or None, output))

    return follow(lambda: client.job(job_id), job_id, finish)


def _follow_next_run(client: Any, periodic_id: str, output: bool) -> int:
    """``submit --wait`` of a periodic job: wait for its next run to start,
    then follow that run to its end. Ctrl-C detaches (the schedule stays)."""
    from corral.cli.follow import EXIT_DETACHED

    first = client.job(periodic_id)
    seen = {r["id"] for r in first.get("runs", [])}
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(first["next_run"])))
    console.print(f"waiting for its next run at {when} (Ctrl-C detaches)", highlight=False)
    said = first.get("message", "")
    try:
        while True:
            view = client.job(periodic_id)
            if view["state"] != "ACTIVE":
                fail(f"periodic job {periodic_id} is {view['state']}: {view['message']}", exit_codes.FAILED)
            new = [r["id"] for r in view.get("runs", []) if r["id"] not in seen]
            if new:
                break
            if view.get("message") and view["message"] != said:  # a run was skipped (forbid)
                said = view["message"]
                console.print(escape(said), highlight=False)
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print(f"detached; the schedule stays: corral job {periodic_id}", highlight=False)
        return EXIT_DETACHED
    console.print(f"run [bold]{new[0]}[/] started", highlight=False)
    return _follow(client, new[0], output)


# -- running a job without a service -------------------------------------------


async def run_local_job(
    master: str, data: dict[str, Any], default_name: str, on_change: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Run one job with an in-process engine (in-memory store); tear the
    framework down at the end or on Ctrl-C (which kills what still runs)."""
    from corral.frameworks.agents import AgentWatch
    from corral.frameworks.batch.engine import BatchEngine
    from corral.frameworks.batch.store import Store
    from corral.frameworks.driver import SchedulerDriver, tear_down

    engine = BatchEngine(Store(":memory:"))
    job_id = engine.submit(data, default_name=default_name)["job_id"]
    from corral.cli.discovery import client_credentials

    driver = SchedulerDriver(
        engine,
        name=f"corral-submit:{engine.jobs[job_id].name}",
        master=master,
        failover_timeout_s=10.0,
        credentials=client_credentials(master),
    )
    runner = asyncio.create_task(driver.run())
    # the agents' totals, so that a task no agent can ever fit is said at once
    watch = AgentWatch(
        lambda: driver.master_info.address if driver.connected.is_set() and driver.master_info else None,
        lambda: driver.credentials,
        engine.set_agents,
    )
    watch.start()
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    try:
        seen = -1
        while not runner.done() and not interrupted.is_set():
            if driver.connected.is_set():
                engine.tick()
            if engine.version != seen:
                seen = engine.version
                on_change(engine.job_view(job_id, with_tasks=False))
            if engine.jobs[job_id].state in JOB_FINAL:
                break
            await asyncio.sleep(0.05)
        if runner.done():
            runner.result()  # raises SubscribeError and the like
        if interrupted.is_set():
            engine.cancel(job_id)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await watch.stop()
        await tear_down(driver, runner)
    return engine.job_view(job_id)


async def submit_local(master: str, data: dict[str, Any], default_name: str, output: bool) -> int:
    """Run a job in this process and print its result (``corral local --submit`` too)."""
    console.print(f"running job [bold]{data.get('name', default_name)}[/] on {master}", highlight=False)
    with JobProgress(console) as progress:
        job = await run_local_job(master, data, default_name, progress.show)
    return await print_result(job, master, output)


# -- commands ------------------------------------------------------------------


@click.command()
@master_option
@batch_option
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option(
    "--wait",
    "-w",
    is_flag=True,
    help="Follow the job to its end; exit non-zero if it failed. Ctrl-C detaches (the job runs on).",
)
@click.option("--local", "in_process", is_flag=True, help="Run the job from this process, not the service.")
@click.option("--output/--no-output", default=False, help="Show each task's stdout at the end.")
@click.option(
    "--after",
    "after",
    multiple=True,
    metavar="[KIND:]JOB",
    help="Start once JOB (an id or name) ended: afterok (the default), afternotok, afterany. Repeatable.",
)
@click.pass_context
@handle_errors
def submit(
    ctx: click.Context,
    master: str | None,
    batch: str | None,
    job_file: Path,
    wait: bool,
    in_process: bool,
    output: bool,
    after: tuple[str, ...],
) -> None:
    """Submit a job file (TOML).

    With a batch service (see `corral framework run batch`), the job is kept
    there and this returns at once (--wait follows it). Otherwise, or with
    --local, it runs from this process until done, with progress.
    """
    _client_logging(ctx)
    data, default_name = read_job_file(job_file)
    if after:
        listed = data.get("after", [])
        data["after"] = [*([listed] if isinstance(listed, str) else listed), *after]
    if not in_process and (batch or service_for(master) is not None):
        client = batch_client(master, batch)
        answer = client.submit(data, default_name)
        if "periodic_id" in answer:
            console.print(
                f"periodic job [bold]{answer['periodic_id']}[/] scheduled ({data.get('schedule')})",
                highlight=False,
            )
            if wait:
                sys.exit(_follow_next_run(client, answer["periodic_id"], output))
            return
        job_id = answer["job_id"]
        console.print(f"submitted job [bold]{job_id}[/]", highlight=False)
        if not wait:
            return
        sys.exit(_follow(client, job_id, output))
    if data.get("schedule"):
        fail("schedule: periodic jobs need the batch service (`corral framework run batch`)")
    if data.get("after"):
        fail("after: dependencies on other jobs need the batch service (`corral framework run batch`)")
    sys.exit(asyncio.run(submit_local(resolve_master(master), data, default_name, output)))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration back from now (``90s``, ``30m``, ``2h``, ``7d``)
    or a date and time (``2026-12-08``, ``2026-12-08T14:00``; local time
    unless it names a zone), as a UNIX time. ValueError names the forms."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        return now - float(m[1]) * _UNITS[m[2]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since: {text!r} is neither a duration (90s, 30m, 2h, 7d) nor a date (2026-12-08T14:00)"
        ) from None
    return when.timestamp()  # a naive time is local, as Slurm's sacct reads it


@click.command()
@master_option
@batch_option
@output_option
@click.option(
    "--since", metavar="WHEN", help="Only jobs submitted since: 2h, 7d, 2026-12-08, 2026-12-08T14:00."
)
@click.pass_context
@handle_errors
def jobs(
    ctx: click.Context, master: str | None, batch: str | None, output: str | None, since: str | None
) -> None:
    """List the batch service's jobs (the history; --since to cut it) and periodic jobs."""
    _client_logging(ctx)
    cutoff = None
    if since is not None:
        try:
            cutoff = parse_since(since, time.time())
        except ValueError as e:
            fail(str(e))
    data = batch_client(master, batch).jobs()
    if cutoff is not None:
        data["jobs"] = [j for j in data["jobs"] if j["submitted_at"] >= cutoff]
    records = [{"kind": "job", **j} for j in data["jobs"]] + list(data["periodic"])
    listings = [Listing(JOB_COLUMNS, data["jobs"], "jobs", "no jobs")]
    if data["periodic"]:
        listings.append(Listing(PERIODIC_COLUMNS, data["periodic"], "periodic jobs"))
    show(output, *listings, data=records)


def _done(j: dict[str, Any]) -> str:
    counts = j["counts"]
    return f"{sum(counts.get(s, 0) for s in ('FINISHED', 'FAILED', 'CANCELLED', 'SKIPPED'))}/{j['total']}"


def _next_run(p: dict[str, Any]) -> str:
    if p.get("state", "ACTIVE") == "ACTIVE" and isinstance(p["next_run"], int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p["next_run"]))
    return ""


def _styled(name: str) -> Callable[[dict[str, Any]], Text]:
    return lambda r: Text(str(r.get(name, "ACTIVE")), style=STATE_STYLE.get(str(r.get(name, "ACTIVE")), ""))


JOB_COLUMNS = (
    Column("id", key("id")),
    Column("state", _styled("state")),
    Column("done", _done),
    Column("failed", lambda j: str(j["counts"].get("FAILED", 0))),
    Column("submitted", lambda j: time.strftime("%H:%M:%S", time.localtime(j["submitted_at"]))),
    Column("took", lambda j: f"{j['finished_at'] - j['submitted_at']:.1f}s" if j["finished_at"] else ""),
    Column(
        "note",
        lambda j: "; ".join(f"{g} unschedulable: {w}" for g, w in sorted(j.get("unschedulable", {}).items())),
        fold=True,
    ),
    Column("name", key("name"), wide=True),
    Column("periodic", key("periodic"), wide=True),
)
PERIODIC_COLUMNS = (
    Column("id", key("id")),
    Column("schedule", key("schedule")),
    Column("policy", key("concurrency_policy")),
    Column("state", _styled("state")),
    Column("next run", _next_run),
    Column("last job", key("last_job")),
    Column("message", lambda p: Text(p.get("message", "")), fold=True),
)


@click.command()
@master_option
@batch_option
@click.argument("job_id")
@click.option("--attempts", "-a", is_flag=True, help="List every attempt of every task.")
@click.option("--follow", "-f", is_flag=True, help="Print task changes until the job ends (Ctrl-C detaches).")
@output_option
@click.pass_context
@handle_errors
def job(
    ctx: click.Context,
    master: str | None,
    batch: str | None,
    job_id: str,
    attempts: bool,
    follow: bool,
    output: str | None,
) -> None:
    """Show a job: per task its state, tries, exit code and agent (or a periodic job and its runs).

    JOB_ID may be a unique prefix. Exits 1 if the job FAILED or was CANCELLED.
    With --follow, print each task change until the job ends, then its
    table; exit 0 if it succeeded, 1 if not, 130 if Ctrl-C detached.
    """
    _client_logging(ctx)
    client = batch_client(master, batch)
    job_id = ids.job_id(client.jobs(), job_id)
    if follow:
        sys.exit(_follow(client, job_id, False))
    data = client.job(job_id)
    if data.get("kind") == "periodic":
        show(output, Listing(PERIODIC_COLUMNS, [data]), Listing(JOB_COLUMNS, data["runs"], "runs"), data=data)
        return
    listings = [Listing(TASK_COLUMNS, data["tasks"], f"job {data['id']} ({data['state'].lower()})")]
    if attempts:
        rows = [a for t in data["tasks"] for a in t["history"]]
        listings.append(Listing(ATTEMPT_COLUMNS, rows, "attempts"))
    show(output, *listings, data=data)
    if data["state"] in ("FAILED", "CANCELLED"):
        sys.exit(exit_codes.FAILED)


def _last(t: dict[str, Any]) -> dict[str, Any]:
    return t["history"][-1] if t["history"] else {}


def _took(a: dict[str, Any]) -> str:
    """How long the attempt ran: from its start to its end on the agent's
    clock (from the launch, for one that never reported running)."""
    if not a.get("finished_at"):
        return ""
    return f"{max(0.0, a['finished_at'] - (a.get('started_at') or a['launched_at'])):.2f}s"


def _queued(a: dict[str, Any]) -> str:
    return f"{max(0.0, a['launched_at'] - a['queued_at']):.2f}s" if a.get("queued_at") else ""


def _cpu(a: dict[str, Any]) -> str:
    return "" if a.get("cpu_time_s") is None else f"{a['cpu_time_s']:.2f}s"


def _peak(a: dict[str, Any]) -> str:
    return "" if a.get("mem_peak_bytes") is None else f"{a['mem_peak_bytes'] / 2**20:.1f}"


TASK_COLUMNS = (
    Column("task", lambda t: f"{t['group']}[{t['index']}]"),
    Column("state", _styled("state")),
    Column("tries", key("attempts"), right=True),
    Column("exit", lambda t: exit_text(_last(t).get("exit_code"), _last(t).get("signal")), right=True),
    Column("agent", key("agent_id")),
    Column("hostname", key("hostname")),
    Column("time", lambda t: _took(_last(t)), right=True),
    Column("task id", lambda t: _last(t).get("task_id", "")),
    Column("message", lambda t: "" if t["state"] == "FINISHED" else t["message"], fold=True),
    Column("failures", key("failures"), wide=True),
    Column("reason", lambda t: _last(t).get("reason", ""), wide=True),
)
ATTEMPT_COLUMNS = (
    Column("task id", key("task_id")),
    Column("state", key("state")),
    Column("exit", lambda a: exit_text(a["exit_code"], a["signal"]), right=True),
    Column("agent", key("agent_id")),
    Column("hostname", key("hostname")),
    Column("queued", _queued, right=True),
    Column("time", _took, right=True),
    Column("cpu", _cpu, right=True),
    Column("mem peak (MiB)", _peak, right=True),
    Column("message", key("message"), fold=True),
    Column("reason", key("reason"), wide=True),
)


@click.command()
@master_option
@batch_option
@click.argument("job_id")
@click.pass_context
@handle_errors
def cancel(ctx: click.Context, master: str | None, batch: str | None, job_id: str) -> None:
    """Cancel a job (its running tasks are killed) or remove a periodic job."""
    _client_logging(ctx)
    client = batch_client(master, batch)
    job_id = ids.job_id(client.jobs(), job_id)
    answer = client.cancel(job_id)
    console.print(f"{job_id}: {answer['result']}", highlight=False)


__all__ = ["JobSpecError", "cancel", "job", "jobs", "submit", "submit_local"]
