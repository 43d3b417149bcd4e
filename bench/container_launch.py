"""Launch -> exit latency of /bin/true containers, sequentially and concurrently.

    python bench/container_launch.py -n 200 --concurrency 20 --json out.json
    python bench/container_launch.py --in-process   # fork from this process, no fork server
    python bench/container_launch.py --no-isolation # no namespaces, no capability drop
    python bench/container_launch.py --image --runtimes runc,crun --concurrency 8 --json out.json
    python bench/container_launch.py --userns-pair --rounds 4   # user namespaces off and on

Needs root and a cgroup hierarchy (probed). Prints p50/p99 latency, launches/s
and the CPU time (user+system) of this process and its children per launch.

``--image`` runs /bin/true on the busybox test image (corral.testing_images,
made from /bin/busybox) on overlayfs with a root switch. ``--runtimes`` then
runs the same loop through ``runc run`` / ``crun run`` on the same layers
(mounted read-only with overlayfs for their bundle; pid, ipc, uts and mount
namespaces and the same cgroup limits, host network like corral's default)
and prints the ratios; both get corral's default seccomp profile (``runc
spec`` has none) besides their own default masked paths, read-only paths and
devices, so all three run hardened. crun refuses this host's hybrid cgroup layout, so its
loop runs in a private mount namespace with the empty cgroup2 mount unmounted.

``--userns-pair`` times every phase twice, interleaved round by round: as
configured, and with a user namespace per container (isolators/userns.py:
an id range claimed, the namespace made by the supervisor, the sandbox and
an image's layers idmapped), and prints the cost of the latter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from corral.slave.containerizer import ContainerConfig, Containerizer, Isolation, kernel
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.overlay import Rootfs
from corral.slave.containerizer.seccomp import DEFAULT_PROFILE
from corral.testing_images import build_busybox_image


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _one(ctz: Containerizer, work: Path, isolation: Isolation, rootfs: Rootfs | None) -> float:
    container_id = uuid.uuid4().hex[:12]
    config = ContainerConfig(
        container_id=container_id,
        argv=("/bin/true",),
        env={"PATH": "/usr/bin:/bin"},
        sandbox=work / "sandboxes" / container_id,
        cpus_milli=100,
        mem_bytes=64 << 20,
        isolation=isolation,
        rootfs=rootfs,
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
    ctz: Containerizer, work: Path, n: int, concurrency: int, isolation: Isolation, rootfs: Rootfs | None
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> float:
        async with gate:
            return await _one(ctz, work, isolation, rootfs)

    cpu_start = os.times()
    start = time.perf_counter()
    latencies = await asyncio.gather(*(bounded() for _ in range(n)))
    wall = time.perf_counter() - start
    cpu = os.times()
    # This process's own CPU time, not its children's: forking a large agent is
    # paid here in system time, which is what the fork server moves away.
    return {
        "n": n,
        "concurrency": concurrency,
        "latencies": latencies,
        "wall_s": wall,
        "sys_s": cpu.system - cpu_start.system,
        "user_s": cpu.user - cpu_start.user,
    }


def _summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over the rounds of one phase (raw latencies pooled)."""
    latencies = [x for p in parts for x in p["latencies"]]
    n = len(latencies)
    wall = sum(p["wall_s"] for p in parts)
    out = {
        "n": n,
        "concurrency": parts[0]["concurrency"],
        "p50_ms": _percentile(latencies, 0.5) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "launches_per_s": n / wall,
    }
    if "sys_s" in parts[0]:
        out["agent_sys_ms_per_launch"] = sum(p["sys_s"] for p in parts) * 1000 / n
        out["agent_user_ms_per_launch"] = sum(p["user_s"] for p in parts) * 1000 / n
    return out


def _bundle(work: Path, layers: tuple[Path, ...], runtime: str, seccomp_on: bool) -> Path:
    """An OCI bundle whose rootfs is the image's layers, read-only (the overlay is mounted by the caller)."""
    bundle = work / f"bundle-{runtime}"
    bundle.mkdir()
    subprocess.run([runtime, "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    spec["root"] = {"path": str(work / "rootfs"), "readonly": True}
    spec["hostname"] = "bench"
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    linux.setdefault("resources", {}).update(
        {"memory": {"limit": 64 << 20, "swap": 64 << 20}, "cpu": {"shares": 102}, "pids": {"limit": 1024}}
    )
    if seccomp_on:
        # `runc spec` has no seccomp filter (Docker adds its own): give both
        # runtimes corral's default profile, so every side compiles and loads
        # the same filter. The OCI form uses moby's keys.
        # crun 1.8 refuses defaultErrnoRet beside an ALLOW default; an ERRNO
        # rule without errnoRet is EPERM in both runtimes anyway.
        profile = {k: v for k, v in DEFAULT_PROFILE.items() if k != "defaultErrnoRet"}
        linux["seccomp"] = {**profile, "architectures": ["SCMP_ARCH_X86_64"]}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


async def _runtime_phase(runtime: str, bundle: Path, n: int, concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> float:
        async with gate:
            start = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                runtime,
                "run",
                "--bundle",
                str(bundle),
                f"bench-{uuid.uuid4().hex[:12]}",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, err = await proc.communicate()
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{runtime} run failed ({proc.returncode}): {err.decode(errors='replace')}"
                )
            return elapsed

    start = time.perf_counter()
    latencies = await asyncio.gather(*(one() for _ in range(n)))
    wall = time.perf_counter() - start
    return {"n": n, "concurrency": concurrency, "latencies": latencies, "wall_s": wall}


def _runtime_loop(runtime: str, bundle: Path, n: int, concurrencies: list[int]) -> list[dict[str, Any]]:
    """Run the phases of one runtime; crun's in a child with a private mount namespace."""
    if runtime != "crun":
        return [asyncio.run(_runtime_phase(runtime, bundle, n, c)) for c in [1, *concurrencies]]
    args = [sys.executable, __file__, "--runtime-loop", runtime, "--bundle", str(bundle), "-n", str(n)]
    for c in concurrencies:
        args += ["--concurrency", str(c)]
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", *args], capture_output=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"crun loop failed: {out.stderr.decode(errors='replace')[-2000:]}")
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def _hide_cgroup2() -> None:
    """In our own private mount namespace (unshare -m): unmount the empty cgroup2
    hierarchy that makes crun call this host "hybrid"."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            kernel.umount2(fields[4].encode())


async def _child_runtime_loop(runtime: str, bundle: Path, n: int, concurrencies: list[int]) -> None:
    _hide_cgroup2()
    results = [await _runtime_phase(runtime, bundle, n, c) for c in [1, *concurrencies]]
    print(json.dumps(results))


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
    parser.add_argument("--image", action="store_true", help="run on the busybox test image (overlayfs root)")
    parser.add_argument(
        "--runtimes", default="", help="with --image: also time these OCI runtimes, e.g. runc,crun"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="split -n into this many rounds, interleaving corral and the runtimes",
    )
    parser.add_argument(
        "--userns-pair", action="store_true", help="time each phase without and with a user namespace"
    )
    parser.add_argument("--runtime-loop", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runtime_loop:
        await _child_runtime_loop(args.runtime_loop, args.bundle, args.n, args.concurrency or [])
        return
    isolation = Isolation.none() if args.no_isolation else Isolation()
    ballast = [bytearray(1 << 20) for _ in range(args.ballast_mb)]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    concurrencies = args.concurrency or [20]
    names = [r for r in args.runtimes.split(",") if r] if args.image else []
    for runtime in names:
        if shutil.which(runtime) is None:
            raise SystemExit(f"{runtime} is not installed (apt-get install {runtime})")
    print(f"load average at the start {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    rounds = max(1, args.rounds)
    per_round = max(1, args.n // rounds)
    variants = {"": isolation}
    if args.userns_pair:
        variants = {", userns off": isolation, ", userns on": replace(isolation, user_namespace=True)}
    ours: dict[int, list[dict[str, Any]]] = {c: [] for c in [1, *concurrencies]}
    by_variant: dict[str, dict[int, list[dict[str, Any]]]] = {v: {c: [] for c in ours} for v in variants}
    theirs: dict[str, dict[int, list[dict[str, Any]]]] = {r: {c: [] for c in ours} for r in names}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        work = Path(tmp)
        rootfs = None
        if args.image:
            store = ImageStore(work / "store")
            image = store.import_tarball(build_busybox_image(work / "busybox.tar"))
            rootfs = Rootfs(store.layer_dirs(image))
        ctz = Containerizer(
            work / "work",
            cgroup_prefix=f"corral-bench-{uuid.uuid4().hex[:8]}",
            fork_server=not args.in_process,
        )
        bundles = (
            _mount_bundles(work, rootfs, names, not args.no_isolation) if rootfs is not None and names else {}
        )
        try:
            # Rounds interleave corral and the runtimes, so a change in the
            # machine's load hits all of them alike.
            for _ in range(rounds):
                for variant, variant_isolation in variants.items():
                    for c, parts in by_variant[variant].items():
                        parts.append(await _phase(ctz, work, per_round, c, variant_isolation, rootfs))
                for runtime, bundle in bundles.items():
                    phases = await asyncio.to_thread(_runtime_loop, runtime, bundle, per_round, concurrencies)
                    for phase in phases:
                        theirs[runtime][phase["concurrency"]].append(phase)
        finally:
            await ctz.close(grace_s=0.5)
            if bundles:
                kernel.umount2(bytes(work / "rootfs"), kernel.MNT_DETACH)
    summaries = {v: [_summary(parts) for parts in by_c.values()] for v, by_c in by_variant.items()}
    results = next(iter(summaries.values()))
    runtimes = {r: [_summary(parts) for parts in by_c.values()] for r, by_c in theirs.items()}
    del ballast
    mode = ("in-process" if args.in_process else "fork server") + (
        ", no isolation" if args.no_isolation else ", isolated and hardened (seccomp, masked paths, devices)"
    )
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    if args.image:
        mode += ", busybox image"
    for variant, variant_results in summaries.items():
        for r in variant_results:
            print(
                f"{mode}{variant}, concurrency {r['concurrency']:>3}: n={r['n']} p50 {r['p50_ms']:.1f} ms  "
                f"p99 {r['p99_ms']:.1f} ms  {r['launches_per_s']:.0f} launches/s  "
                f"this process {r['agent_sys_ms_per_launch']:.2f} ms sys + "
                f"{r['agent_user_ms_per_launch']:.2f} ms user per launch"
            )
    userns_cost: list[dict[str, float]] = []
    if args.userns_pair:
        for off, on in zip(summaries[", userns off"], summaries[", userns on"], strict=True):
            cost = {
                "concurrency": off["concurrency"],
                "p50_ms": on["p50_ms"] - off["p50_ms"],
                "p99_ms": on["p99_ms"] - off["p99_ms"],
                "p50_ratio": on["p50_ms"] / off["p50_ms"],
            }
            userns_cost.append(cost)
            print(
                f"user namespace cost, concurrency {off['concurrency']:>3}: p50 {cost['p50_ms']:+.1f} ms "
                f"(x{cost['p50_ratio']:.2f})  p99 {cost['p99_ms']:+.1f} ms"
            )
    ratios: dict[str, list[dict[str, float]]] = {}
    for runtime, phases in runtimes.items():
        ratios[runtime] = []
        for ours, theirs in zip(results, phases, strict=True):
            p50 = ours["p50_ms"] / theirs["p50_ms"]
            p99 = ours["p99_ms"] / theirs["p99_ms"]
            ratios[runtime].append({"concurrency": theirs["concurrency"], "p50": p50, "p99": p99})
            print(
                f"{runtime} run, concurrency {theirs['concurrency']:>3}: n={theirs['n']} "
                f"p50 {theirs['p50_ms']:.1f} ms  p99 {theirs['p99_ms']:.1f} ms  "
                f"{theirs['launches_per_s']:.0f} launches/s  corral/{runtime}: p50 x{p50:.2f}  p99 x{p99:.2f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cgroups": ctz.cgroups.version,
                    "mode": mode,
                    "results": results,
                    "variants": summaries,
                    "userns_cost": userns_cost,
                    "runtimes": runtimes,
                    "ratios": ratios,
                }
            )
        )


def _mount_bundles(work: Path, rootfs: Rootfs, names: list[str], seccomp_on: bool) -> dict[str, Path]:
    """A bundle per runtime on the image's layers, mounted read-only at ``work/rootfs``
    (the caller unmounts it)."""
    target = work / "rootfs"
    target.mkdir()
    lower = ":".join(str(p) for p in reversed(rootfs.layers))
    kernel.mount(b"overlay", bytes(target), b"overlay", kernel.MS_RDONLY, f"lowerdir={lower}".encode())
    return {runtime: _bundle(work, rootfs.layers, runtime, seccomp_on) for runtime in names}


if __name__ == "__main__":
    asyncio.run(main())
