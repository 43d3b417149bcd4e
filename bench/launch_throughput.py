"""End-to-end launch throughput and latency on a local cluster.

Starts ``corral local`` (a master and N agents in one process) in a child
process, then runs a batch job of trivial tasks from this process through the
framework SDK, as a user's framework would. Prints tasks/s and latency
percentiles; ``--json PATH`` also writes them.

    python bench/launch_throughput.py --tasks 1000 --agents 4

Latency is measured as the framework sees it: from the ACCEPT that launches a
task to its FINISHED update ("launch latency"), and from job submission to
FINISHED ("queue-inclusive", which grows with the job size by construction).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import corral  # noqa: F401  (before grpc: see corral/__init__.py)
from corral.frameworks.batch import BatchScheduler, parse_job
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.types import TaskState
from corral.testing import corral_command


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def start_cluster(
    agents: int, agent_resources: str | None, home: Path
) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
    cmd = corral_command()
    proc = subprocess.Popen(
        [
            *cmd,
            "local",
            "--agents",
            str(agents),
            "--port",
            "0",
            "--work-dir",
            str(home / "work"),
            *(["--agent-resources", agent_resources] if agent_resources else []),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (home / "local.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("corral local did not start")
        time.sleep(0.05)
    return proc, json.loads((home / "local.json").read_text())["master"]


async def run(master: str, tasks: int, cpus: float, mem: float, command: str) -> dict[str, float]:
    spec = parse_job(
        {
            "name": "bench",
            "tasks": [
                {
                    "name": "t",
                    "command": command,
                    "count": tasks,
                    "cpus": cpus,
                    "mem": mem,
                }
            ],
        }
    )
    scheduler = BatchScheduler(spec.tasks("bench"), clock=time.monotonic)
    driver = SchedulerDriver(scheduler, name="bench", master=master, failover_timeout_s=0)
    submitted = time.monotonic()
    runner = asyncio.create_task(driver.run())
    async with asyncio.timeout(600):
        await scheduler.done.wait()
    elapsed = time.monotonic() - submitted
    driver.teardown()
    async with asyncio.timeout(10):
        await runner
    done = list(scheduler.progress.values())
    finished = [p for p in done if p.state is TaskState.FINISHED]
    launch = [p.finished_at - p.launched_at for p in finished]
    queued = [p.finished_at - submitted for p in finished]
    return {
        "tasks": tasks,
        "finished": len(finished),
        "failed": len(done) - len(finished),
        "elapsed_s": round(elapsed, 3),
        "tasks_per_s": round(len(finished) / elapsed, 1),
        "launch_latency_p50_ms": round(statistics.median(launch) * 1000, 1),
        "launch_latency_p99_ms": round(percentile(launch, 99) * 1000, 1),
        "queue_latency_p50_ms": round(statistics.median(queued) * 1000, 1),
        "queue_latency_p99_ms": round(percentile(queued, 99) * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument(
        "--agent-resources",
        default=None,
        help="resources of each agent (default: `corral local`'s equal share of this machine)",
    )
    ap.add_argument("--cpus", type=float, default=0.05)
    ap.add_argument("--mem", type=float, default=16)
    ap.add_argument("--command", default="true")
    ap.add_argument("--master", help="use a running cluster instead of starting one")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    proc = None
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        master = args.master
        if master is None:
            proc, master = start_cluster(args.agents, args.agent_resources, Path(tmp))
        try:
            result = asyncio.run(run(master, args.tasks, args.cpus, args.mem, args.command))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    result.update(agents=args.agents, cpus_per_task=args.cpus, cores=os.cpu_count() or 0)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
