"""Launch -> exit latency of /bin/true containers, sequentially and concurrently.

    python bench/container_launch.py -n 200 --concurrency 20 --json out.json
    python bench/container_launch.py --in-process   # fork from this process, no fork server
    python bench/container_launch.py --no-isolation # no namespaces, no capability drop

Needs root and a cgroup hierarchy (probed). Prints p50/p99 latency, launches/s
and the CPU time (user+system) of this process and its children per launch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from corral.slave.containerizer import ContainerConfig, Containerizer, Isolation


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _one(ctz: Containerizer, work: Path, isolation: Isolation) -> float:
    container_id = uuid.uuid4().hex[:12]
    config = ContainerConfig(
        container_id=container_id,
        argv=("/bin/true",),
        env={"PATH": "/usr/bin:/bin"},
        sandbox=work / "sandboxes" / container_id,
        cpus_milli=100,
        mem_bytes=64 << 20,
        isolation=isolation,
    )
    start = time.perf_counter()
    await ctz.launch(config)
    termination = await ctz.wait(container_id)
    elapsed = time.perf_counter() - start
    await ctz.destroy(container_id)
    if termination.exit_code != 0:
        raise RuntimeError(f"/bin/true ended badly: {termination}")
    return elapsed


async def _phase(
    ctz: Containerizer, work: Path, n: int, concurrency: int, isolation: Isolation
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> float:
        async with gate:
            return await _one(ctz, work, isolation)

    cpu_start = os.times()
    start = time.perf_counter()
    latencies = await asyncio.gather(*(bounded() for _ in range(n)))
    wall = time.perf_counter() - start
    cpu = os.times()
    # This process's own CPU time, not its children's: forking a large agent is
    # paid here in system time, which is what the fork server moves away.
    return {
        "agent_sys_ms_per_launch": (cpu.system - cpu_start.system) * 1000 / n,
        "agent_user_ms_per_launch": (cpu.user - cpu_start.user) * 1000 / n,
        "n": n,
        "concurrency": concurrency,
        "p50_ms": _percentile(latencies, 0.5) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "launches_per_s": n / wall,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="containers per phase")
    parser.add_argument(
        "--concurrency", type=int, action="append", help="concurrent phase(s) after the sequential one"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--in-process", action="store_true", help="fork supervisors from this process (the old path)"
    )
    parser.add_argument(
        "--no-isolation", action="store_true", help="Isolation.none(): no namespaces or capability drop"
    )
    parser.add_argument(
        "--ballast-mb",
        type=int,
        default=0,
        help="allocate and touch this many MB first, to mimic an agent's larger heap",
    )
    args = parser.parse_args()
    isolation = Isolation.none() if args.no_isolation else Isolation()
    ballast = [bytearray(1 << 20) for _ in range(args.ballast_mb)]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        work = Path(tmp)
        ctz = Containerizer(
            work / "work",
            cgroup_prefix=f"corral-bench-{uuid.uuid4().hex[:8]}",
            fork_server=not args.in_process,
        )
        try:
            results = [await _phase(ctz, work, args.n, 1, isolation)]
            for concurrency in args.concurrency or [20]:
                results.append(await _phase(ctz, work, args.n, concurrency, isolation))
        finally:
            await ctz.close(grace_s=0.5)
    del ballast
    mode = ("in-process" if args.in_process else "fork server") + (
        ", no isolation" if args.no_isolation else ", isolated"
    )
    for r in results:
        print(
            f"{mode}, concurrency {r['concurrency']:>3}: n={r['n']} p50 {r['p50_ms']:.1f} ms  "
            f"p99 {r['p99_ms']:.1f} ms  {r['launches_per_s']:.0f} launches/s  "
            f"this process {r['agent_sys_ms_per_launch']:.2f} ms sys + "
            f"{r['agent_user_ms_per_launch']:.2f} ms user per launch"
        )
    if args.json:
        args.json.write_text(json.dumps({"cgroups": ctz.cgroups.version, "mode": mode, "results": results}))


if __name__ == "__main__":
    asyncio.run(main())
