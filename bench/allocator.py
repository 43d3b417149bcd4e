"""The allocator alone (no gRPC): full cycle time, per-event time, memory.

A full allocation cycle: every agent has all of its resources free and every
framework wants offers, so each agent is handed to some framework (Mesos'
``HierarchicalAllocator_BENCHMARK_Test``; its C++ full cycle over 10,000
agents and 1,000 frameworks took 1.06 s after the 2018 optimisation).

Times are CPU time of this process (``time.process_time``: one core, whatever
else the machine runs), wall time beside the full cycles.

Per event, on the largest cluster after its full cycle: a task of one
framework finishes on one agent and the next cycle offers what it freed; a
framework declines an offer (filter 5 s) and the next cycle offers it to
someone else. Memory: tracemalloc's growth while agents are added, per agent.

    python bench/allocator.py [--sizes 1000x10,10000x100] [--events 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc

from corral.master.allocator import Allocator
from corral.master.allocator.events import AgentAdded, FrameworkAdded, QuotaSet, ResourcesRecovered
from corral.resources import Resources

AGENT_SPEC = "cpus:32;mem:131072;disk:1048576;ports:[31000-32000]"
AGENT = Resources.parse(AGENT_SPEC)
TASK = Resources.parse("cpus:1;mem:1024")
SIZES = [(1_000, 10), (10_000, 100), (10_000, 1_000), (50_000, 200)]


def build(agents: int, frameworks: int, roles: int = 1, quota: bool = False) -> Allocator:
    """Frameworks spread over ``roles`` roles (``*`` when one); with
    ``quota``, role r0 gets a guarantee of cpus:1000 and a limit of cpus:5000."""
    a = Allocator()
    for f in range(frameworks):
        a.handle(FrameworkAdded(f"f{f:05d}", (f"r{f % roles}",) if roles > 1 else ("*",)))
    if quota:
        a.handle(QuotaSet("r0", Resources.parse("cpus:1000"), Resources.parse("cpus:5000"), force=True))
    for i in range(agents):
        # each agent its own objects, as the master's (parsed from its own message)
        a.handle(AgentAdded(f"a{i:06d}", Resources.parse(AGENT_SPEC)))
    return a


def full_cycle(
    agents: int, frameworks: int, repeat: int, roles: int = 1, quota: bool = False
) -> dict[str, float]:
    times = []
    a = build(1, 1)
    for _ in range(repeat):
        a = build(agents, frameworks, roles, quota)
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        out = a.allocate(0.0)
        times.append((time.process_time() - c0, time.perf_counter() - t0))
        assert len(out) >= agents, len(out)
    t0 = time.perf_counter()
    assert a.allocate(1.0) == []
    idle = time.perf_counter() - t0
    cpu, wall = min(times)
    return {
        "agents": agents,
        "frameworks": frameworks,
        "roles": roles,
        "quota": quota,
        "cycle_s": cpu,
        "cycle_wall_s": wall,
        "idle_cycle_s": idle,
    }


def events(agents: int, frameworks: int, count: int) -> dict[str, float]:
    a = build(agents, frameworks)
    holder = {x.agent_id: x.framework_id for x in a.allocate(0.0)}
    ids = sorted(holder)
    now = 1.0
    # A task finished: its resources come back and the next cycle offers them.
    t0 = time.process_time()
    for i in range(count):
        agent_id = ids[(i * 7919) % len(ids)]
        a.handle(ResourcesRecovered(holder[agent_id], agent_id, TASK, 0.0, now))
        out = a.allocate(now)
        assert len(out) == 1, out
        assert out[0].resources == TASK, out
        now += 0.001
    task_end = (time.process_time() - t0) / count
    # A decline: the whole agent comes back with a 5 s filter, the next cycle
    # offers it to another framework.
    t0 = time.process_time()
    for i in range(count):
        agent_id = ids[(i * 104729) % len(ids)]
        fw = holder[agent_id]
        a.handle(ResourcesRecovered(fw, agent_id, a.allocated_on(fw, agent_id), 5.0, now))
        out = a.allocate(now)
        assert len(out) == 1, out
        assert out[0].framework_id != fw, out
        holder[agent_id] = out[0].framework_id
        now += 0.001
    decline = (time.process_time() - t0) / count
    return {
        "agents": agents,
        "frameworks": frameworks,
        "task_end_and_cycle_us": task_end * 1e6,
        "decline_and_cycle_us": decline * 1e6,
    }


def memory(agents: int) -> dict[str, float]:
    a = build(0, 10)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(agents):
        a.handle(AgentAdded(f"a{i:06d}", Resources.parse(AGENT_SPEC)))
    a.allocate(0.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"agents": agents, "bytes_per_agent": (after - before) / agents}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(f"{a}x{f}" for a, f in SIZES))
    parser.add_argument("--repeat", type=int, default=3, help="full cycles per size (best is reported)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON ('-' for stdout)")
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    result: dict[str, object] = {"python": sys.version.split()[0]}
    cycles = []
    for agents, frameworks in sizes:
        c = full_cycle(agents, frameworks, args.repeat)
        cycles.append(c)
        print(
            f"full cycle  {agents:>6} agents x {frameworks:>5} frameworks: {c['cycle_s'] * 1000:8.1f} ms CPU"
            f" ({c['cycle_wall_s'] * 1000:.1f} ms wall; nothing free: {c['idle_cycle_s'] * 1000:.2f} ms)",
            flush=True,
        )
    for roles, quota in ((10, False), (10, True)):
        c = full_cycle(10_000, 100, args.repeat, roles, quota)
        cycles.append(c)
        print(
            f"full cycle   10000 agents x   100 frameworks in {roles} roles"
            f"{' (r0 with quota)' if quota else ''}: {c['cycle_s'] * 1000:.1f} ms CPU",
            flush=True,
        )
    result["full_cycles"] = cycles
    largest = max(sizes)
    smallest = min(sizes)
    per_event = []
    for agents, frameworks in sorted({smallest, largest}):
        ev = events(agents, frameworks, args.events)
        per_event.append(ev)
        print(
            f"per event on {agents:>6} agents x {frameworks:>5} frameworks: task end + cycle "
            f"{ev['task_end_and_cycle_us']:.1f} us, decline + cycle {ev['decline_and_cycle_us']:.1f} us"
        )
    result["events"] = per_event
    mem = memory(min(largest[0], 20_000))
    result["memory"] = mem
    print(f"memory per agent: {mem['bytes_per_agent'] / 1024:.2f} KiB ({mem['agents']} agents, tracemalloc)")
    anchor = next(
        (c for c in cycles if (c["agents"], c["frameworks"], c["roles"]) == (10_000, 1_000, 1)), None
    )
    if anchor is not None:
        print(f"Mesos C++ anchor (10,000 x 1,000): 1.06 s; here {anchor['cycle_s']:.3f} s")
    result["median_cycle_s"] = statistics.median(c["cycle_s"] for c in cycles)
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")


if __name__ == "__main__":
    main()
