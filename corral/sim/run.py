"""One seeded history: build the cluster, run workload and faults, heal,
let it settle, check, and say what happened.

``run_seed(seed)`` is deterministic: every random draw comes from the seed
(separate streams for faults, workload, network and ids, so dropping a fault
while shrinking leaves the workload as it was), the clock is virtual, and
the history digest covers every message delivered (its bytes, serialised
deterministically), every fault and every container start and end.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from corral.master.master import MasterConfig
from corral.resources import Resources
from corral.sim import loop as vloop
from corral.sim.agent import SimAgent, TaskModel
from corral.sim.faults import KINDS, FaultEvent, schedule
from corral.sim.framework import BatchFramework
from corral.sim.ids import Ids
from corral.sim.invariants import Observer, Violation
from corral.sim.masters import Election, FencedRegistry, MasterNode
from corral.sim.network import Network, Stream

#: after healing, submitted work must be done within this much simulated time
SETTLE_BOUND_S = 1800.0
START_S = 1_000_000.0  # any fixed epoch: the clock must not be the machine's


@dataclass(frozen=True)
class SimConfig:
    hours: float = 0.1
    agents: int = 3
    kinds: tuple[str, ...] = tuple(KINDS)
    mean_fault_gap_s: float = 45.0
    #: which events of the seed's schedule to keep (None: all); for replays
    keep: tuple[int, ...] | None = None


@dataclass
class SeedResult:
    seed: int
    sim_s: float
    steps: int
    faults: Counter[str]
    schedule: list[FaultEvent]
    violations: list[Violation]
    digest: str
    wall_s: float
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class History:
    """The digest of everything that happened, and the last lines for a report."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.hash = hashlib.sha256()
        self.steps = 0
        self.tail: deque[str] = deque(maxlen=60)

    def record(self, line: str) -> None:
        self.steps += 1
        text = f"{self.clock() - START_S:.6f} {line}"
        self.hash.update(text.encode())
        self.tail.append(text)

    def delivered(self, stream: Stream, message: Any) -> None:
        self.steps += 1
        self.hash.update(f"{stream.client}|{stream.server}".encode())
        self.hash.update(message.SerializeToString(deterministic=True))


class Simulation:
    def __init__(self, seed: int, config: SimConfig) -> None:
        self.seed = seed
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.history = History(self.loop.time)
        self.observer = Observer(lambda: self.loop.time() - START_S)
        # An exception in a callback or an unawaited task of the simulated
        # code is a finding: asyncio would only log it and go on.
        self.loop.set_exception_handler(self._on_exception)
        self.ids = Ids(seed)
        self.net = Network(self.loop, random.Random(f"net-{seed}"), self.history.delivered)
        self.registry = FencedRegistry()
        mconfig = MasterConfig()
        self.masters = [
            MasterNode(n, self.net, self.registry, mconfig, self.ids, self.history.record)
            for n in ("m1", "m2")
        ]
        self.election = Election(self.masters)
        model = TaskModel(seed)
        total = Resources.parse("cpus:4;mem:4096")
        self.agents = {
            f"a{i}": SimAgent(
                f"a{i}", total, self.net, self._leader, model, self.ids, self.observer, self.history.record
            )
            for i in range(1, config.agents + 1)
        }
        # Half the seeds run a framework that is not partition-aware, so the
        # master's LOST-then-kill path for returning agents is exercised too.
        self.partition_aware = random.Random(f"framework-{seed}").random() < 0.5
        self.frameworks = {
            "batch": BatchFramework(
                "batch",
                self.net,
                self._leader,
                self.observer,
                self.ids,
                self.history.record,
                partition_aware=self.partition_aware,
            )
        }
        self.duration_s = config.hours * 3600.0
        full = schedule(
            seed,
            self.duration_s,
            list(self.agents),
            list(self.frameworks),
            config.kinds,
            config.mean_fault_gap_s,
        )
        keep = config.keep
        self.schedule = full if keep is None else [e for i, e in enumerate(full) if i in keep]
        self.faults: Counter[str] = Counter()
        self._timers: list[asyncio.TimerHandle] = []
        self._jobs: list[asyncio.Task[None]] = []

    def _on_exception(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.observer.violate("crash", f"{context.get('message', '')}: {error!r}")

    def _leader(self) -> MasterNode | None:
        leader = self.election.leader
        return leader if leader is not None and leader.master is not None else None

    # -- workload -------------------------------------------------------------------

    def _workload(self) -> None:
        rng = random.Random(f"workload-{self.seed}")
        jobs = 2 + int(self.config.hours * 30)
        for i in range(jobs):
            at = rng.uniform(0, self.duration_s * 0.7)
            group: dict[str, Any] = {
                "name": "g",
                "command": "true",
                "count": rng.randint(1, 12),
                "cpus": rng.choice((0.1, 0.25, 0.5, 1.0, 2.0)),
                "mem": rng.choice((32, 128, 256, 1024)),
                "retries": rng.randint(0, 2),
                "backoff_s": 1.0,
            }
            if rng.random() < 0.2:
                group["unique_host"] = True
            spec = {"name": f"job{i}", "tasks": [group]}
            self._timers.append(self.loop.call_later(at, self._submit, spec))

    def _submit(self, spec: dict[str, Any]) -> None:
        self.history.record(f"submit {spec['name']}")
        self.frameworks["batch"].submit(spec, spec["name"])

    # -- faults ---------------------------------------------------------------------

    def _inject(self, event: FaultEvent) -> None:
        self.faults[event.kind] += 1
        self.history.record(f"fault {event.kind} {event.target} {event.duration_s}")
        kind, target, d = event.kind, event.target, event.duration_s
        if kind == "agent-crash":
            agent = self.agents[target]
            if agent.up:
                self._spawn(agent.crash())
                self._later(d, self._restart_agent, agent)
        elif kind in ("agent-partition", "framework-partition"):
            self.net.cut(target)
            self._later(d, self.net.heal, target)
        elif kind in ("agent-disconnect", "framework-disconnect"):
            self.net.drop(target)
        elif kind == "framework-crash":
            fw = self.frameworks[target]
            if fw.up:
                self._spawn(fw.crash())
                self._later(d, self._restart_framework, fw)
        elif kind == "master-failover":
            old = self.election.leader
            if old is None:
                return
            self.election.depose()
            # It serves on until it notices (or a write of its is fenced).
            zombie = self.net.rng.uniform(0.0, min(2.0, d))
            self._later(zombie, old.step_down)
            new = next(m for m in self.masters if m is not old)
            self._later(d, self._elect, new)

    def _elect(self, node: MasterNode) -> None:
        if self.election.leader is None:
            if node.master is not None:
                node.step_down()
            self.election.elect(node)

    def _restart_agent(self, agent: SimAgent) -> None:
        if not agent.up:
            self.history.record(f"restart {agent.name}")
            agent.start()

    def _restart_framework(self, fw: BatchFramework) -> None:
        if not fw.up:
            self.history.record(f"restart {fw.name}")
            fw.start()

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self._timers.append(self.loop.call_later(delay, fn, *args))

    def _spawn(self, coro: Any) -> None:
        self._jobs.append(asyncio.ensure_future(coro))

    def _heal_all(self) -> None:
        self.history.record("heal all")
        for t in self._timers:
            t.cancel()
        for node in self.net.cut_nodes():
            while self.net.partitioned(node):
                self.net.heal(node)
        for agent in self.agents.values():
            self._restart_agent(agent)
        for fw in self.frameworks.values():
            self._restart_framework(fw)
        if self.election.leader is None:
            idle = next((m for m in self.masters if m.master is None), self.masters[0])
            self._elect(idle)

    # -- the run --------------------------------------------------------------------

    async def run(self) -> None:
        self.history.record(f"framework batch partition_aware={self.partition_aware}")
        self.election.elect(self.masters[0])
        for agent in self.agents.values():
            agent.start()
        for fw in self.frameworks.values():
            fw.start()
        self._workload()
        for event in self.schedule:
            self._later(event.at_s, self._inject, event)
        await asyncio.sleep(self.duration_s)
        # Let running faults finish the way they would, but not beyond the
        # longest fault: then mend whatever is still broken.
        self._heal_all()
        await self._settle()
        await self._stop()

    async def _settle(self) -> None:
        deadline = self.loop.time() + SETTLE_BOUND_S
        while self.loop.time() < deadline:
            await asyncio.sleep(5.0)
            if self._settled():
                break
        fw = self.frameworks["batch"]
        if fw.failure is not None:
            self.observer.violate("framework-failed", f"the batch framework stopped: {fw.failure!r}")
        unfinished = fw.unfinished_jobs()
        if unfinished:
            self.observer.violate(
                "no-progress",
                f"{len(unfinished)} job(s) still running {SETTLE_BOUND_S:g}s after healing: {unfinished[:3]}",
            )
        pending = {a.name: a.unacknowledged() for a in self.agents.values() if a.unacknowledged()}
        if pending:
            self.observer.violate("no-progress", f"updates never acknowledged on agents: {pending}")
        self.observer.finish()
        self.observer.compare(*self._views())

    def _settled(self) -> bool:
        fw = self.frameworks["batch"]
        if fw.failure is not None or fw.unfinished_jobs():
            return False
        if any(a.unacknowledged() for a in self.agents.values()):
            return False
        master_view, agent_view = self._views()
        return master_view == agent_view

    def _views(self) -> tuple[dict[str, set[tuple[str, str]]], dict[str, set[tuple[str, str]]]]:
        leader = self._leader()
        names = {a.agent_id: a.name for a in self.agents.values()}
        master_view: dict[str, set[tuple[str, str]]] = {a: set() for a in self.agents}
        if leader is not None and leader.master is not None:
            for agent_id, record in leader.master.state.agents.items():
                if agent_id in names and not record.gone:
                    master_view[names[agent_id]] = set(record.tasks) | set(record.lost_tasks)
        agent_view = {a.name: a.live_tasks() for a in self.agents.values()}
        return master_view, agent_view

    async def _stop(self) -> None:
        for t in self._timers:
            t.cancel()
        for agent in self.agents.values():
            await agent.crash()
            agent.stop_containers()
        for fw in self.frameworks.values():
            await fw.crash()
        for m in self.masters:
            await m.stop()
        await asyncio.gather(*self._jobs, return_exceptions=True)


def run_seed(seed: int, config: SimConfig | None = None) -> SeedResult:
    """Run one seeded history and check it (see the module docstring)."""
    config = config or SimConfig()
    started = time.perf_counter()
    holder: list[Simulation] = []

    async def main() -> None:
        sim = Simulation(seed, config)
        holder.append(sim)
        await sim.run()

    crashed: BaseException | None = None
    try:
        vloop.run(main(), start=START_S)
    except Exception as e:  # a crash of the simulated code is a finding, not the end of the sweep
        crashed = e
    sim = holder[0]
    violations = list(sim.observer.violations)
    if crashed is not None:
        violations.append(Violation("crash", sim.loop.time() - START_S, repr(crashed)))
    return SeedResult(
        seed=seed,
        sim_s=sim.loop.time() - START_S,
        steps=sim.history.steps,
        faults=sim.faults,
        schedule=sim.schedule,
        violations=violations,
        digest=sim.history.hash.hexdigest(),
        wall_s=time.perf_counter() - started,
        tail=list(sim.history.tail),
    )


def _run_one(args: tuple[int, SimConfig]) -> SeedResult:
    return run_seed(*args)


def run_seeds(seeds: Iterable[int], config: SimConfig, jobs: int = 1) -> Iterator[SeedResult]:
    """Every seed's result, in the order of ``seeds``; ``jobs`` > 1 runs them
    in that many forked processes (a seed's history does not depend on the
    process it runs in: each run builds its own loop, ids and generators)."""
    if jobs <= 1:
        for seed in seeds:
            yield run_seed(seed, config)
        return
    # fork: the children inherit the imports and the logging set-up.
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_run_one, [(seed, config) for seed in seeds], chunksize=4)


def shrink(seed: int, config: SimConfig, kind: str) -> tuple[tuple[int, ...], SeedResult | None]:
    """The smallest subset of the seed's fault schedule (indices) that still
    gives a violation of ``kind``: drop one fault at a time while it persists."""
    base = SimConfig(config.hours, config.agents, config.kinds, config.mean_fault_gap_s)
    full = full_schedule(seed, base)
    keep = list(range(len(full))) if config.keep is None else list(config.keep)
    best: SeedResult | None = None
    changed = True
    while changed:
        changed = False
        for index in list(keep):
            trial = [i for i in keep if i != index]
            result = run_seed(
                seed, SimConfig(base.hours, base.agents, base.kinds, base.mean_fault_gap_s, tuple(trial))
            )
            if any(v.kind == kind for v in result.violations):
                keep, best, changed = trial, result, True
    return tuple(keep), best


def full_schedule(seed: int, config: SimConfig) -> list[FaultEvent]:
    """The seed's full fault schedule (what ``SimConfig.keep`` indexes)."""
    agents = [f"a{i}" for i in range(1, config.agents + 1)]
    return schedule(seed, config.hours * 3600.0, agents, ["batch"], config.kinds, config.mean_fault_gap_s)
