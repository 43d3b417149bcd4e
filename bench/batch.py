"""The batch framework at scale: a big array job of trivial tasks.

Starts a master, N agents and the batch framework service as separate
processes (as on real nodes), submits one array job through the service's
API and follows it to the end. Prints the total time, tasks/s, and the peak
memory (VmHWM) of the framework and of the master; ``--json PATH`` also
writes them.

    python bench/batch.py --tasks 10000 --agents 4
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import corral  # noqa: F401  (before grpc: see corral/__init__.py)
from corral.frameworks.batch.api import BatchApiError, BatchClient
from corral.testing import corral_command, terminate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(tasks: int, agents: int, agent_resources: str, home: Path, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
    master_addr = f"127.0.0.1:{free_port()}"
    cmd = corral_command()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        master = subprocess.Popen(
            [*cmd, "master", "--listen", master_addr, "--allocation-interval", "0.1"], env=env
        )
        procs.append(master)
        for i in range(agents):
            agent = [*cmd, "agent", "--master", master_addr, "--work-dir", str(home / f"agent-{i}")]
            agent += ["--resources", agent_resources, "--hostname", f"bench-agent-{i}"]
            agent += ["--cgroup-prefix", f"corral-bench-{os.getpid()}/agent-{i}"]
            procs.append(subprocess.Popen(agent, env=env))
        config = home / "batch.toml"
        config.write_text(f'db = "{home / "batch.db"}"\n')
        framework = subprocess.Popen(
            [*cmd, "framework", "run", "batch", "--master", master_addr, "--config", str(config)], env=env
        )
        procs.append(framework)
        wait_until((home / "batch.json").exists, 30, "the batch service")
        client = BatchClient(json.loads((home / "batch.json").read_text())["address"])
        spec = {"name": "bench", "tasks": [{"name": "t", "command": "true", "count": tasks, "cpus": 0.05}]}
        spec["tasks"][0]["mem"] = 8
        started = time.monotonic()
        job_id = client.submit(spec)["job_id"]
        submitted = time.monotonic() - started
        summary: dict[str, Any] = {}
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                summary = client.job(job_id, with_tasks=False)
            except BatchApiError:
                summary = {}
            if summary.get("state") in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        return {
            "tasks": tasks,
            "agents": agents,
            "state": summary.get("state", "TIMEOUT"),
            "finished": summary.get("counts", {}).get("FINISHED", 0),
            "submit_s": round(submitted, 3),
            "total_s": round(elapsed, 2),
            "tasks_per_s": round(summary.get("counts", {}).get("FINISHED", 0) / elapsed, 1),
            "framework_peak_mib": round(peak_rss_mib(framework.pid), 1),
            "master_peak_mib": round(peak_rss_mib(master.pid), 1),
            "db_mib": round((home / "batch.db").stat().st_size / 2**20, 1),
        }
    finally:
        terminate(reversed(procs))
        remove_cgroups(f"corral-bench-{os.getpid()}")


def remove_cgroups(prefix: str) -> None:
    """The agents remove their tasks' cgroups; the parent they share is ours."""
    for root in [Path("/sys/fs/cgroup") / prefix, *Path("/sys/fs/cgroup").glob(f"*/{prefix}")]:
        if root.is_dir():
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            root.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=4)
    # 40 tasks at once per agent: more only queues in the agents of a 2-core machine.
    parser.add_argument("--agent-resources", default="cpus:2;mem:4096;disk:1024")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-bench-batch-") as tmp:
        result = run(args.tasks, args.agents, args.agent_resources, Path(tmp), args.timeout)
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
