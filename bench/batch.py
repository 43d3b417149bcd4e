"""The batch framework at scale: a big array job of trivial tasks, on
SQLite and on PostgreSQL side by side.

Starts a master, N agents and the batch framework service as separate
processes (as on real nodes), submits one array job through the service's
API and follows it to the end. Prints the total time, tasks/s, and the peak
memory (VmHWM) of the framework and of the master. ``--store both`` (the
default) runs it once on SQLite (the embedded default: WAL,
synchronous=NORMAL) and once on a private PostgreSQL server (Debian's
package, started here with durable settings: fsync on), then measures
what the store alone costs per attempt: the two transactions the engine
commits for each one (its launch, its end), timed in this process against
each backend. ``--json PATH`` writes every figure.

    python bench/batch.py --tasks 2000 --agents 4
    python bench/batch.py --tasks 10000 --store sqlite
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
from corral import testing_postgres
from corral.frameworks.batch.api import BatchApiError, BatchClient
from corral.frameworks.batch.sql import is_postgres_url
from corral.frameworks.batch.store import AttemptRow, JobRow, Store, TaskRow
from corral.testing import corral_command, terminate
from corral.testing_postgres import PostgresServer


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


def run(tasks: int, agents: int, agent_resources: str, home: Path, timeout: float, db: str) -> dict[str, Any]:
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
        config.write_text(f'db = "{db}"\n')
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


def store_cost(db: str, attempts: int) -> dict[str, Any]:
    """The store alone: per attempt, the launch commit (attempt + task) and
    the end commit (attempt + task), as the engine writes them."""
    store = Store(Path(db) if not is_postgres_url(db) else db)
    try:
        job = JobRow("cost", "cost", "{}", "RUNNING", time.time())
        tasks = [TaskRow(f"cost.t.{i}", "cost", "t", i, "PENDING") for i in range(attempts)]
        with store.transaction():
            store.save(job)
            for t in tasks:
                store.save(t)
        started = time.perf_counter()
        for t in tasks:
            a = AttemptRow(f"{t.id}.a1", t.id, 1, "agent", "host", "STAGING", time.time())
            with store.transaction():
                t.state, t.current = "STAGING", a.id
                store.save(a)
                store.save(t)
            with store.transaction():
                a.state, a.finished_at, a.exit_code = "FINISHED", time.time(), 0
                t.state, t.current = "FINISHED", ""
                store.save(a)
                store.save(t)
        took = time.perf_counter() - started
    finally:
        store.close()
    return {
        "store_us_per_attempt": round(took / attempts * 1e6, 1),
        "store_attempts_per_s": round(attempts / took),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--agents", type=int, default=4)
    # 40 tasks at once per agent: more only queues in the agents of a 2-core machine.
    parser.add_argument("--agent-resources", default="cpus:2;mem:4096;disk:1024")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--store-attempts", type=int, default=2_000, help="attempts for the store-only figure"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-batch-") as tmp:
        pg: PostgresServer | None = None
        if "postgresql" in kinds:
            why = testing_postgres.available()
            if why:
                raise SystemExit(f"--store postgresql: {why}")
            os.chmod(tmp, 0o755)  # the server runs as postgres, which must reach its directory
            pg = PostgresServer(Path(tmp) / "pg", durable=True)
            pg.start()
        try:
            for kind in kinds:
                home = Path(tmp) / kind
                home.mkdir()
                db = str(home / "batch.db") if pg is None or kind == "sqlite" else pg.new_database()
                result = run(args.tasks, args.agents, args.agent_resources, home, args.timeout, db)
                cost_db = str(home / "cost.db") if pg is None or kind == "sqlite" else pg.new_database()
                result.update(store_cost(cost_db, args.store_attempts))
                results[kind] = result
        finally:
            if pg is not None:
                pg.stop()
    keys = list(next(iter(results.values())))
    print(f"{'':>24}" + "".join(f"{k:>14}" for k in results))
    for key in keys:
        print(f"{key:>24}" + "".join(f"{r[key]!s:>14}" for r in results.values()))
    if len(results) == 2:
        sq, pq = results["sqlite"], results["postgresql"]
        if pq["tasks_per_s"]:
            print(f"{'sqlite/postgresql tasks/s':>24}: {sq['tasks_per_s'] / pq['tasks_per_s']:.2f}x")
        ratio = pq["store_us_per_attempt"] / sq["store_us_per_attempt"]
        print(f"{'postgresql/sqlite store':>24}: {ratio:.2f}x the cost per attempt")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
