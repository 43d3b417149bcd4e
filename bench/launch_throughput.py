"""End-to-end launch throughput and latency on a local cluster.

Starts ``corral local`` (a master and N agents in one process) in a child
process, then runs a batch job of trivial tasks from this process through the
framework SDK, as a user's framework would. Prints tasks/s and latency
percentiles; ``--json PATH`` also writes them.

    python bench/launch_throughput.py --tasks 1000 --agents 4
    python bench/launch_throughput.py --tasks 300 --tls both --json out.json

``--tls on`` runs the cluster and the framework over mutual TLS (what
``corral local`` does by default), ``off`` plaintext, ``both`` one after the
other on fresh clusters and prints them side by side with the ratio
(``--repeat N``: N pairs, alternating which mode goes first; the median ratio).

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
from corral.transport import Credentials


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def start_cluster(
    agents: int, agent_resources: str | None, home: Path, tls: bool
) -> tuple[subprocess.Popen[bytes], str, Credentials | None]:
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
            *([] if tls else ["--insecure"]),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (home / "local.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("corral local did not start")
        time.sleep(0.05)
    record = json.loads((home / "local.json").read_text())
    credentials = None
    if tls:
        from corral.pki import CertificateAuthority, load_credentials

        # A framework certificate of the cluster's CA, as a real framework would hold.
        ca = CertificateAuthority.load(Path(record["tls"]["ca"]).parent)
        issued = ca.issue("framework:bench")
        credentials = load_credentials(ca.cert_file, issued.cert, issued.key)
    return proc, record["master"], credentials


async def run(
    master: str, tasks: int, cpus: float, mem: float, command: str, credentials: Credentials | None = None
) -> dict[str, float]:
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
    driver = SchedulerDriver(
        scheduler, name="bench", master=master, failover_timeout_s=0, credentials=credentials
    )
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


def one_run(args: argparse.Namespace, tls: bool) -> dict[str, float]:
    """One fresh cluster (unless --master), one job."""
    proc = None
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        master, credentials = args.master, None
        if master is None:
            proc, master, credentials = start_cluster(args.agents, args.agent_resources, Path(tmp), tls)
        try:
            result = asyncio.run(run(master, args.tasks, args.cpus, args.mem, args.command, credentials))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    result.update(agents=args.agents, cpus_per_task=args.cpus, cores=os.cpu_count() or 0, tls=tls)
    return result


def compare(args: argparse.Namespace) -> dict[str, object]:
    """``--repeat`` pairs of runs, alternating which goes first (so load that
    comes and goes on a shared machine does not always fall on one mode);
    prints the pair with the median ratio side by side, then every pair."""
    pairs: list[tuple[dict[str, float], dict[str, float]]] = []
    for i in range(args.repeat):
        order = (False, True) if i % 2 == 0 else (True, False)
        runs = {tls: one_run(args, tls) for tls in order}
        pairs.append((runs[False], runs[True]))
    ratios = [t["tasks_per_s"] / p["tasks_per_s"] for p, t in pairs]
    plain, tls = pairs[sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]]
    width = max(len(k) for k in plain)
    print(f"{'':<{width}}  {'plaintext':>10}  {'mutual TLS':>10}  {'TLS/plain':>9}")
    for key, value in plain.items():
        other = tls[key]
        numeric = isinstance(value, float | int) and not isinstance(value, bool) and value
        ratio = f"{other / value:9.3f}" if numeric else ""
        print(f"{key:<{width}}  {value!s:>10}  {other!s:>10}  {ratio}")
    if len(pairs) > 1:
        for (p, t), r in zip(pairs, ratios, strict=True):
            print(f"pair: {p['tasks_per_s']:7.1f} vs {t['tasks_per_s']:7.1f} tasks/s  ratio {r:.3f}")
    return {
        "plaintext": plain,
        "tls": tls,
        "tls_over_plaintext_tasks_per_s": round(statistics.median(ratios), 3),
        "pairs": [{"plaintext": p, "tls": t} for p, t in pairs],
        "load_average": os.getloadavg(),
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
    ap.add_argument("--master", help="use a running plaintext cluster instead of starting one")
    ap.add_argument("--tls", choices=("off", "on", "both"), default="off", help="mutual TLS (default off)")
    ap.add_argument("--repeat", type=int, default=1, help="with --tls both: pairs of runs (median ratio)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    if args.tls != "both":
        out: object = one_run(args, args.tls == "on")
        assert isinstance(out, dict)
        width = max(len(k) for k in out)
        for key, value in out.items():
            print(f"{key:<{width}}  {value}")
    else:
        out = compare(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
