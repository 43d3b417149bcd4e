"""Agent recovery: time for a restarted agent to re-attach to N running
containers and re-register; status-update throughput end to end.

For each size N: a `corral master` and a `corral agent` process, a framework in
this process that launches N `sleep` tasks and waits until all run. Then:

  (a) `kill -9` of the agent and a restart: time until it has recovered (its
      `agent.recovered` log line) and re-registered with the master with all N
      tasks (the master lists it connected; every task still RUNNING);
  (b) `kill -9` of the agent again, SIGKILL of every task while it is down, a
      restart: the agent finds N ended containers and sends N terminal
      updates; time from its start until the master has seen every one
      acknowledged by the framework (no live task left). Bound by tearing the
      containers down (cgroup removal): a terminal update goes only after.

Then the status-update path alone (--updates M): an agent in this process
with a containerizer that "runs" each task instantly, a `corral master`
process and a framework here; M tasks launched make 3 updates each
(STARTING, RUNNING, FINISHED), every one checkpointed, sent, forwarded,
acknowledged by the framework and the acknowledgement checkpointed: updates/s
until the agent has nothing unacknowledged.

    python bench/agent_recovery.py [--sizes 100,500,1000] [--updates 3000] [--json PATH]

Loopback only; needs root (cgroups). Container start-up is not measured here
(see bench/container_launch.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import IO

import grpc.aio

import corral  # noqa: F401  (before grpc: see corral/__init__.py)
from corral.frameworks import Offer, Scheduler, SchedulerDriver, Task, TaskState, TaskStatus
from corral.logging import configure as configure_logging
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2, operator_pb2_grpc
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.slave.containerizer import Termination
from corral.testing import corral_command, listening, terminate
from corral.testing_zookeeper import free_port

TASK = Resources.of(cpus=0.01, mem=8)


class Launcher(Scheduler):
    """Launches the tasks it is given into the offers it gets; remembers each task's latest state."""

    def __init__(self) -> None:
        self.pending: list[Task] = []
        self.states: dict[str, TaskState] = {}
        self.updates = 0
        self.first_at = 0.0

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        for offer in offers:
            take, left = [], offer.resources
            while self.pending and left.contains(self.pending[-1].resources):
                task = self.pending.pop()
                take.append(task)
                left = left - task.resources
            if take:
                driver.launch(offer, take, refuse_s=0)
            else:
                driver.decline(offer, refuse_s=1)

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        self.states[status.task_id] = status.state
        self.updates += 1
        self.first_at = self.first_at or time.monotonic()

    def count(self, state: TaskState) -> int:
        return sum(1 for s in self.states.values() if s is state)


async def wait(predicate: object, timeout: float, what: str) -> float:
    """Poll until ``predicate()`` holds; the time it took."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def master_view(address: str) -> tuple[int, int]:
    """(connected agents, live tasks) as the master sees them."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        agents = await stub.ListAgents(operator_pb2.ListAgentsRequest(), timeout=2)
        tasks = await stub.ListTasks(operator_pb2.ListTasksRequest(), timeout=5)
    live = sum(1 for t in tasks.tasks if t.status.state not in _TERMINAL)
    return sum(a.connected for a in agents.agents), live


_TERMINAL = {pb.TASK_FINISHED, pb.TASK_FAILED, pb.TASK_KILLED, pb.TASK_LOST, pb.TASK_ERROR}


def log_event(path: Path, event: str, after: float) -> dict[str, object] | None:
    """The first JSON log line of ``event`` written after wall time ``after``."""
    for line in path.read_text(errors="replace").splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        ts = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()
        if ts >= after:
            record["_ts"] = ts
            return record
    return None


def kill_tasks(work_dir: Path) -> int:
    """SIGKILL every task process recorded in the agent's container records."""
    killed = 0
    for path in (work_dir / "containers").glob("*/container.json"):
        pid = json.loads(path.read_text()).get("task_pid", 0)
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def spawn(cmd: list[str], env: dict[str, str], out: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


async def measure(n: int, work: Path) -> dict[str, float]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "CORRAL_LOG_LEVEL": "info"}
    address = f"127.0.0.1:{free_port()}"
    work_dir = work / f"agent-{n}"
    agent_log = work / f"agent-{n}.log"
    agent_cmd = [
        *corral_command(),
        "agent",
        "--master",
        address,
        "--work-dir",
        str(work_dir),
        "--resources",
        f"cpus:{n * 0.01 + 1:.2f};mem:{n * 8 + 256}",
        "--cgroup-prefix",
        f"corral-bench-recovery-{os.getpid()}",
    ]

    def start_agent() -> subprocess.Popen[bytes]:
        with agent_log.open("ab") as out:
            p = spawn(agent_cmd, env, out)
        procs.append(p)
        return p

    with (work / f"master-{n}.log").open("ab") as out:
        procs.append(spawn([*corral_command(), "master", "--listen", address], env, out))
    agent = start_agent()
    sched = Launcher()
    sched.pending = [Task(f"s{i}", "exec sleep 3600", TASK) for i in range(n)]
    driver = SchedulerDriver(sched, name="bench-recovery", master=address, failover_timeout_s=600)
    runner = asyncio.create_task(driver.run())
    result: dict[str, float] = {"containers": n}
    try:
        launch_s = await wait(lambda: sched.count(TaskState.RUNNING) == n, 60 + n * 0.2, f"{n} RUNNING")
        result["launch_s"] = round(launch_s, 2)

        # (a) recovery and re-registration with N running containers
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        t0 = time.time()
        agent = start_agent()
        await wait(lambda: log_event(agent_log, "agent.registered", t0) is not None, 60, "re-register")
        recovered = log_event(agent_log, "agent.recovered", t0)
        registered = log_event(agent_log, "agent.registered", t0)
        assert recovered is not None
        assert registered is not None
        result["recover_s"] = round(float(recovered["_ts"]) - t0, 3)  # type: ignore[arg-type]
        result["recover_only_s"] = float(recovered["elapsed_s"])  # type: ignore[arg-type]
        result["reregistered_s"] = round(float(registered["_ts"]) - t0, 3)  # type: ignore[arg-type]
        result["reattached"] = float(recovered["running"])  # type: ignore[arg-type]
        connected, live = await master_view(address)
        assert (connected, live) == (1, n)
        assert sched.count(TaskState.RUNNING) == n

        # (b) N terminal updates delivered and acknowledged after a restart
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        killed = kill_tasks(work_dir)
        await asyncio.sleep(1.0)  # supervisors record the exits
        t1 = time.time()
        agent = start_agent()
        await wait(lambda: log_event(agent_log, "agent.registered", t1) is not None, 60, "re-register")
        registered = log_event(agent_log, "agent.registered", t1)
        assert registered is not None
        acked_at = 0.0
        deadline = time.monotonic() + 60 + n * 0.1
        while time.monotonic() < deadline:
            _, live = await master_view(address)
            if live == 0:
                acked_at = time.time()
                break
            await asyncio.sleep(0.05)
        if not acked_at:
            raise TimeoutError("not every terminal update was acknowledged")
        result["terminal_updates"] = killed
        result["all_acked_after_start_s"] = round(acked_at - t1, 3)
        result["reregistered_after_ended_s"] = round(float(registered["_ts"]) - t1, 3)  # type: ignore[arg-type]
        driver.stop()
        async with asyncio.timeout(10):
            await runner
    finally:
        if not runner.done():
            runner.cancel()
        terminate(procs)
    return result


class InstantContainerizer:
    """Stands in for the containerizer: every task starts and exits at once."""

    async def launch(self, config: object) -> int:
        return 1

    async def wait(self, container_id: str) -> Termination:
        return Termination(0, None, None, False, "", "exited 0")

    async def destroy(self, container_id: str) -> None:
        pass

    async def kill(self, container_id: str, grace_s: float = 0.0) -> None:
        pass

    async def close(self) -> None:
        pass

    async def detach(self) -> None:
        pass

    async def cleanup_leftovers(self, keep: set[str]) -> list[str]:
        return []


async def update_throughput(m: int, work: Path) -> dict[str, float]:
    procs: list[subprocess.Popen[bytes]] = []
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "CORRAL_LOG_LEVEL": "warning"}
    with (work / "master-updates.log").open("ab") as out:
        procs.append(spawn([*corral_command(), "master", "--listen", address], env, out))
    agent = Agent(
        AgentConfig(
            master=address,
            work_dir=work / "agent-updates",
            resources=Resources.parse(f"cpus:{m * 0.01 + 1:.2f};mem:{m * 8 + 256}"),
        ),
        containerizer=InstantContainerizer(),  # type: ignore[arg-type]
    )
    sched = Launcher()
    sched.pending = [Task(f"u{i}", "true", TASK) for i in range(m)]
    driver = SchedulerDriver(sched, name="bench-updates", master=address, failover_timeout_s=60)
    try:
        await listening(address, 10.0)
        await agent.start()
        await wait(agent.registered.is_set, 30, "agent registration")
        runner = asyncio.create_task(driver.run())
        await wait(
            lambda: sched.count(TaskState.FINISHED) == m and not agent.updates.pending(),
            120 + m * 0.05,
            "every update acknowledged",
        )
        # From the first update the framework got (subscription and the first
        # allocation are not the update path) to the last acknowledgement.
        elapsed = time.monotonic() - sched.first_at
        driver.stop()
        async with asyncio.timeout(10):
            await runner
    finally:
        await agent.stop()
        terminate(procs)
    return {
        "tasks": m,
        "updates": 3 * m,
        "received": sched.updates,
        "elapsed_s": round(elapsed, 2),
        "updates_per_s": round(3 * m / elapsed, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    results = []
    updates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-recovery-") as tmp:
        if args.updates:
            updates = await update_throughput(args.updates, Path(tmp))
            print(
                f"status updates: {int(updates['updates'])} checkpointed, sent, acknowledged end to end "
                f"in {updates['elapsed_s']:.2f} s: {updates['updates_per_s']:.0f} updates/s",
                flush=True,
            )
        for n in args.sizes:
            r = await measure(n, Path(tmp))
            results.append(r)
            print(
                f"{n:5d} containers: recovered in {r['recover_s']:.2f} s "
                f"(checkpoints + re-attach {r['recover_only_s']:.2f} s), re-registered in "
                f"{r['reregistered_s']:.2f} s; {int(r['terminal_updates'])} that ended while it was down: "
                f"all reported and acknowledged {r['all_acked_after_start_s']:.2f} s after its start",
                flush=True,
            )
    return {"recovery": results, "status_updates": updates}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,500,1000", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--updates", type=int, default=3000, help="tasks for the update path (0: skip)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    configure_logging("warning")
    out = asyncio.run(main(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
