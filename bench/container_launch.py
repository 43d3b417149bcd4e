"""Launch -> exit latency of /bin/true containers, sequentially and concurrently.

    python bench/container_launch.py -n 200 --concurrency 20 --json out.json

Needs root and a cgroup hierarchy (probed). Prints p50/p99 latency and launches/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from corral.slave.containerizer import ContainerConfig, Containerizer


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _one(ctz: Containerizer, work: Path) -> float:
    container_id = uuid.uuid4().hex[:12]
    config = ContainerConfig(
        container_id=container_id,
        argv=("/bin/true",),
        env={"PATH": "/usr/bin:/bin"},
        sandbox=work / "sandboxes" / container_id,
        cpus_milli=100,
        mem_bytes=64 << 20,
    )
    start = time.perf_counter()
    await ctz.launch(config)
    termination = await ctz.wait(container_id)
    elapsed = time.perf_counter() - start
    await ctz.destroy(container_id)
    if termination.exit_code != 0:
        raise RuntimeError(f"/bin/true ended badly: {termination}")
    return elapsed


async def _phase(ctz: Containerizer, work: Path, n: int, concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> float:
        async with gate:
            return await _one(ctz, work)

    start = time.perf_counter()
    latencies = await asyncio.gather(*(bounded() for _ in range(n)))
    wall = time.perf_counter() - start
    return {
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
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        work = Path(tmp)
        ctz = Containerizer(work / "work", cgroup_prefix=f"corral-bench-{uuid.uuid4().hex[:8]}")
        try:
            results = [
                await _phase(ctz, work, args.n, 1),
                await _phase(ctz, work, args.n, args.concurrency),
            ]
        finally:
            await ctz.close(grace_s=0.5)
    for r in results:
        print(
            f"concurrency {r['concurrency']:>3}: n={r['n']} p50 {r['p50_ms']:.1f} ms  "
            f"p99 {r['p99_ms']:.1f} ms  {r['launches_per_s']:.0f} launches/s"
        )
    if args.json:
        args.json.write_text(json.dumps({"cgroups": ctz.cgroups.version, "results": results}))


if __name__ == "__main__":
    asyncio.run(main())
