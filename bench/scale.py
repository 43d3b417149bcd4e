"""The master at scale: many emulated agents over real gRPC.

An emulated agent is the real agent (``slave/agent.py``: its session with the
master, checkpoints, status-update retries, re-registration) with a
containerizer that only pretends: a task "runs" until it is killed, as
Mesos' and Nomad's scale tests do. ``--agents N`` of them connect to one
``corral master`` process from ``--procs`` worker processes; a framework in
this process launches ``--tasks`` tasks (spread over the agents) that keep
running. Then the master is killed with ``kill -9`` and started again at the
same address, and the agents re-register with their tasks.

Printed (and written with ``--json PATH``), with the host's load average:

- registration: time for all N agents to be connected;
- master RSS idle, with the agents, with the tasks; per agent and per task;
- launch: tasks/s until every task runs, status updates/s the framework got;
- allocation cycle inside the running master (its
  ``corral_master_allocation_cycle_seconds`` histogram: mean and count);
- failover: time from the restart until every agent is connected again.

    python bench/scale.py --agents 1000            # 10 tasks per agent (--tasks-per-agent)
    python bench/scale.py --agents 1000 10000 --procs 8   # a big machine

Loopback only; needs no root (nothing is contained). The master keeps no
state across the restart (standalone): the agents bring it back, which is
the registration storm of a failover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import corral  # noqa: F401  (before grpc: see corral/__init__.py)
from corral.frameworks import Offer, Scheduler, SchedulerDriver, Task, TaskState, TaskStatus
from corral.logging import configure as configure_logging
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.slave.containerizer import Termination
from corral.testing import corral_command, listening, terminate
from corral.testing_zookeeper import free_port

TASK = Resources.of(cpus=0.01, mem=1)
AGENT_RESOURCES = "cpus:64;mem:65536;disk:1024"


class PretendContainerizer:
    """Stands in for the containerizer: a task starts at once and runs until killed."""

    def __init__(self) -> None:
        self._ended: dict[str, asyncio.Event] = {}

    async def launch(self, config: Any) -> int:
        self._ended[config.container_id] = asyncio.Event()
        return os.getpid()  # a live pid: nothing checks it but liveness probes

    async def wait(self, container_id: str) -> Termination:
        ended = self._ended.setdefault(container_id, asyncio.Event())
        await ended.wait()
        return Termination(None, signal.SIGKILL, None, True, "", "killed")

    def task_pid(self, container_id: str) -> int | None:
        return os.getpid() if container_id in self._ended else None

    async def destroy(self, container_id: str) -> None:
        self._ended.pop(container_id, None)

    async def kill(self, container_id: str, grace_s: float = 0.0) -> None:
        self._ended.setdefault(container_id, asyncio.Event()).set()

    async def close(self) -> None:
        for ended in self._ended.values():
            ended.set()

    async def detach(self) -> None:
        pass

    async def cleanup_leftovers(self, keep: set[str]) -> list[str]:
        return []


# -- a worker process: K emulated agents ------------------------------------------


async def run_agents(master: str, first: int, count: int, work: Path) -> None:
    configure_logging("warning")
    agents = []
    for i in range(first, first + count):
        config = AgentConfig(
            master=master,
            work_dir=work / f"agent-{i}",
            resources=Resources.parse(AGENT_RESOURCES),
            hostname=f"emulated-{i}",
            cgroup_prefix=f"corral-scale-{i}",
        )
        agents.append(Agent(config, containerizer=PretendContainerizer()))  # type: ignore[arg-type]
    for agent in agents:
        await agent.start()
        await asyncio.sleep(0)  # (connect in waves, not all in one loop turn)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for agent in agents:
        await agent.stop(kill_tasks=True)


# -- the driver ------------------------------------------------------------------


class Spreader(Scheduler):
    """Launches its pending tasks a few per offer (so they spread over the agents)."""

    def __init__(self, tasks: int, per_offer: int) -> None:
        self.pending = [Task(f"t{i}", "pretend", TASK) for i in range(tasks)]
        self.per_offer = per_offer
        self.running: set[str] = set()
        self.updates = 0

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        for offer in offers:
            take = [self.pending.pop() for _ in range(min(self.per_offer, len(self.pending)))]
            if take:
                driver.launch(offer, take, refuse_s=0)
            else:
                driver.decline(offer, refuse_s=60)

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        self.updates += 1
        if status.state is TaskState.RUNNING:
            self.running.add(status.task_id)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    # ``name`` is one series as exposed, labels included: corral_master_agents{state="connected"}
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m[1]) if m else 0.0


def connected_agents(url: str) -> int:
    try:
        return int(metric(url, 'corral_master_agents{state="connected"}'))
    except OSError:
        return 0


async def until(
    predicate: Any, timeout: float, what: str, step: float = 0.2, blocking: bool = False
) -> float:
    """Poll ``predicate`` (in a thread if ``blocking``: it must not stall the
    framework sharing this loop) until it holds; the time it took."""
    start = time.monotonic()
    while not (await asyncio.to_thread(predicate) if blocking else predicate()):
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(step)
    return time.monotonic() - start


def start_workers(address: str, agents: int, procs: int, work: Path) -> list[subprocess.Popen[bytes]]:
    """``procs`` processes of emulated agents, ``agents`` in all."""
    per = -(-agents // procs)
    out = []
    for p in range(procs):
        first, count = p * per, min(per, agents - p * per)
        if count > 0:
            worker = [sys.executable, __file__, "--worker", address, str(first), str(count), str(work)]
            out.append(subprocess.Popen(worker, stdout=subprocess.DEVNULL))
    return out


def start_master(address: str, metrics: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [*corral_command(), "master", "--listen", address, "--metrics-listen", metrics]
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, env={**os.environ, "CORRAL_LOG_LEVEL": "warning"}, stdout=out, stderr=out
        )


async def bench(agents: int, tasks: int, procs: int, work: Path, timeout: float) -> dict[str, Any]:
    address, metrics_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    url = f"http://{metrics_addr}/metrics"
    log = work / "master.log"
    children: list[subprocess.Popen[bytes]] = []
    master = start_master(address, metrics_addr, log)
    try:
        await listening(address, 30.0)
        await until(lambda: _reachable(url), 30, "the master's metrics", blocking=True)
        idle = rss_mib(master.pid)
        children.extend(start_workers(address, agents, procs, work))
        registered_s = await until(
            lambda: connected_agents(url) >= agents, timeout, "every agent to register", blocking=True
        )
        with_agents = rss_mib(master.pid)
        sched = Spreader(tasks, per_offer=max(1, tasks // agents))
        driver = SchedulerDriver(sched, name="scale", master=address, failover_timeout_s=3600)
        runner = asyncio.create_task(driver.run())
        launched_s = await until(lambda: len(sched.running) >= tasks, timeout, "every task to run", 0.05)
        updates = sched.updates
        with_tasks = rss_mib(master.pid)
        cycles = await asyncio.to_thread(metric, url, "corral_master_allocation_cycle_seconds_count")
        cycle_sum = await asyncio.to_thread(metric, url, "corral_master_allocation_cycle_seconds_sum")
        # kill -9 of the master, a new one at the same address: the registration storm.
        master.send_signal(signal.SIGKILL)
        master.wait()
        master = start_master(address, metrics_addr, log)
        await until(lambda: _reachable(url), 30, "the new master's metrics", blocking=True)
        back_s = await until(
            lambda: connected_agents(url) >= agents, timeout, "every agent to come back", blocking=True
        )
        driver.stop()
        # A driver stopped while its master restarts may end with an error: fine here.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(20):
                await runner
        return {
            "agents": agents,
            "tasks": tasks,
            "procs": procs,
            "register_all_s": round(registered_s, 2),
            "master_rss_idle_mib": round(idle, 1),
            "master_rss_agents_mib": round(with_agents, 1),
            "master_rss_tasks_mib": round(with_tasks, 1),
            "master_kib_per_agent": round((with_agents - idle) * 1024 / agents, 2),
            "master_kib_per_task": round((with_tasks - with_agents) * 1024 / max(tasks, 1), 3),
            "launch_s": round(launched_s, 2),
            "tasks_per_s": round(tasks / launched_s, 1),
            "updates_per_s": round(updates / launched_s, 1),
            "allocation_cycles": int(cycles),
            "allocation_cycle_mean_ms": round(cycle_sum / cycles * 1000, 3) if cycles else 0.0,
            "reregister_all_after_kill9_s": round(back_s, 2),
            "load_average": os.getloadavg()[0],
        }
    finally:
        terminate(children)
        terminate([master])


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).read()
    except OSError:
        return False
    return True


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        master, first, count, work = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
        asyncio.run(run_agents(master, first, count, work))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[1000])
    parser.add_argument("--tasks-per-agent", type=int, default=10)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    configure_logging("warning")
    results = []
    for n in args.agents:
        with tempfile.TemporaryDirectory(prefix="corral-bench-scale-") as tmp:
            result = asyncio.run(bench(n, n * args.tasks_per_agent, args.procs, Path(tmp), args.timeout))
        results.append(result)
        for key, value in result.items():
            print(f"{key:>30}: {value}")
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
