"""One chaos run: cluster, workload, observer and faults on a bounded clock,
then the invariants. Whatever the run made is torn down in ``finally``, also
after Ctrl-C or SIGTERM: faults healed, the workload's frameworks and tasks
gone, and the cluster brought down if the run brought it up."""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from types import FrameType

import grpc
import structlog

from corral.chaos import invariants
from corral.chaos.injector import Applied, Injector
from corral.chaos.observer import Observer, Sample, leader_of
from corral.chaos.report import RunResult, tasks_run
from corral.chaos.schedule import KINDS, FaultEvent, ScheduleConfig, Targets, make_schedule
from corral.chaos.workload import FrameworkViews, Workload
from corral.cluster import runner, topology
from corral.cluster.state import ClusterState
from corral.cluster.topology import ClusterSpec
from corral.errors import CorralError

log = structlog.get_logger("corral.chaos")
TICK_S = 0.1
#: faults whose nodes are expected to be gone while they are in force
_KILLS = ("kill", "node", "quorum")


@dataclass(frozen=True)
class ChaosOptions:
    """What ``corral chaos`` was asked (the replay command is made from these)."""

    seed: int
    duration_s: float = 60.0
    masters: int = 3
    agents: int = 3
    zk_nodes: int = 3
    faults: tuple[str, ...] = KINDS
    cluster: str | None = None  # an existing cluster; None: bring one up (and down)
    name: str = "chaos"
    settle_s: float = 12.0
    recover_timeout_s: float = 60.0
    submit_every_s: float = 2.0
    sample_interval_s: float = 1.0
    max_fault_s: float = 8.0
    zk_session_timeout_s: float = 2.0
    agent_resources: str = "cpus:1;mem:1024;disk:2000;ports:[31000-31100]"
    keep_logs: bool = False

    def replay(self) -> str:
        cmd = f"corral chaos --seed {self.seed} --duration {self.duration_s:g}"
        if self.cluster:
            cmd += f" --cluster {self.cluster}"
        else:
            cmd += f" --masters {self.masters} --agents {self.agents}"
            if self.zk_nodes != 3:
                cmd += f" --zk-nodes {self.zk_nodes}"
        if tuple(self.faults) != KINDS:
            cmd += f" --faults {','.join(self.faults)}"
        if self.max_fault_s != ChaosOptions.max_fault_s:
            cmd += f" --max-fault {self.max_fault_s:g}"
        return cmd


def _targets(state: ClusterState) -> Targets:
    plan = state.plan
    return Targets(
        masters=tuple(n.name for n in plan.role("master")),
        agents=tuple(n.name for n in plan.role("agent")),
        zookeepers=tuple(n.name for n in plan.role("zookeeper")) if plan.own_zookeeper else (),
    )


def schedule_for(options: ChaosOptions, targets: Targets) -> list[FaultEvent]:
    cfg = ScheduleConfig(settle_s=options.settle_s, max_fault_s=max(options.max_fault_s, 2.0))
    return make_schedule(options.seed, options.duration_s, targets, options.faults, cfg)


@contextlib.contextmanager
def _interrupts_raise() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does (through ``finally``)."""

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Teardown is not cut short by a second Ctrl-C."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _bounded_wait(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / every_s) + 2):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(every_s)
    return predicate()


def _teardown_frameworks(state: ClusterState, framework_ids: list[str]) -> None:
    """Kill the workload's tasks (the frameworks themselves are stopped apart)."""
    from corral.cluster.tls import operator_credentials
    from corral.proto import operator_pb2 as op
    from corral.proto import operator_pb2_grpc
    from corral.transport import make_sync_channel

    leader = leader_of(state)
    if leader is None or not framework_ids:
        return
    n = state.plan.node(leader)
    channel = make_sync_channel(f"{n.address}:{topology.MASTER_PORT}", operator_credentials(state))
    try:
        stub = operator_pb2_grpc.OperatorStub(channel)
        for fid in framework_ids:
            with contextlib.suppress(grpc.RpcError):
                stub.Teardown(op.TeardownRequest(framework_id=fid), timeout=10.0)
    finally:
        channel.close()


class ChaosRun:
    """Runs :class:`ChaosOptions` once; :meth:`run` returns the result and the samples."""

    def __init__(self, options: ChaosOptions, say: Callable[[str], None] = lambda _m: None) -> None:
        self.options = options
        self.say = say
        self.state: ClusterState | None = None
        self.made_cluster = False
        self.workload: Workload | None = None
        self.observer: Observer | None = None
        self.injector: Injector | None = None
        self.lock = threading.Lock()
        self.active: list[Applied] = []
        self.applied: list[Applied] = []
        self.samples: list[Sample] = []

    def _faulted(self) -> tuple[str, ...]:
        return tuple(
            sorted({n for a in self.active if a.event.kind.split("-", 1)[1] in _KILLS for n in a.nodes})
        )

    def run(self) -> RunResult:
        o = self.options
        result = RunResult(seed=o.seed, duration_s=o.duration_s, replay=o.replay())
        began = time.monotonic()
        try:
            with _interrupts_raise():
                self._run(result)
        except KeyboardInterrupt:
            result.error = "interrupted"
            raise
        except CorralError as e:
            result.error = str(e)
        finally:
            with _uninterruptible():
                self._teardown(result)
            result.wall_s = time.monotonic() - began
        return result

    def _up(self) -> ClusterState:
        o = self.options
        if o.cluster:
            return ClusterState.load(o.cluster)
        spec = ClusterSpec(
            name=o.name,
            masters=o.masters,
            agents=o.agents,
            zk_nodes=o.zk_nodes,
            agent_resources=(o.agent_resources,),
            zk_session_timeout_s=o.zk_session_timeout_s,
        )
        self.made_cluster = True  # `up` cleans up after itself if it fails
        return runner.up(spec, timeout_s=120.0, on_progress=self.say)

    def _run(self, result: RunResult) -> None:
        o = self.options
        state = self.state = self._up()
        plan = asdict(state.plan)
        result.cluster = {**plan, "subnet": str(state.plan.subnet)}
        targets = _targets(state)
        events = schedule_for(o, targets)
        self.say(f"seed {o.seed}: {len(events)} faults over {o.duration_s:g}s")
        for e in events:
            self.say(f"  {e.describe()}")
        workload = self.workload = Workload(
            state.plan.zk_url,
            state.directory / f"chaos-{o.seed}",
            o.seed,
            agents=len(targets.agents),
            submit_every_s=o.submit_every_s,
            cluster=state,
        )
        workload.start()
        self.say("workload started: batch and service frameworks subscribed, service deployed")
        t0 = time.monotonic()
        self.injector = Injector(state, lambda: leader_of(state))
        self.observer = Observer(state, t0, self._faulted, self.lock, o.sample_interval_s)
        self.observer.start()
        self._inject(events, t0)
        self._settle(result)

    def _inject(self, events: list[FaultEvent], t0: float) -> None:
        o = self.options
        assert self.injector is not None
        assert self.workload is not None
        pending = list(events)
        end = t0 + o.duration_s
        submit_until = end - min(o.settle_s, 6.0)
        for _ in range(int(o.duration_s / TICK_S) + 10_000):
            now = time.monotonic()
            if now >= end:
                break
            with self.lock:
                for a in [a for a in self.active if t0 + a.event.heal_at_s <= now]:
                    self.injector.heal(a, now - t0)
                    self.active.remove(a)
                    self.say(f"{now - t0:6.1f}s healed {a.event.kind} {','.join(a.nodes)}")
                while pending and t0 + pending[0].at_s <= now:
                    a = self.injector.apply(pending.pop(0), now - t0)
                    self.active.append(a)
                    self.applied.append(a)
                    extra = f" ({'; '.join(a.errors)})" if a.errors else ""
                    self.say(f"{now - t0:6.1f}s {a.event.kind} {','.join(a.nodes)}{extra}")
            if now < submit_until:
                self.workload.tick(now)
            time.sleep(max(0.0, min(TICK_S, end - time.monotonic())))

    def _settle(self, result: RunResult) -> None:
        """Heal what is left, wait for the cluster and the jobs, then the final checks."""
        o = self.options
        assert self.injector is not None
        assert self.workload is not None
        assert self.observer is not None
        workload, observer = self.workload, self.observer
        with self.lock:
            for a in self.active:
                self.injector.heal(a, time.monotonic() - observer.started_at)
            self.active.clear()
            problems = self.injector.heal_all()
        if problems:
            raise CorralError(f"could not heal: {'; '.join(problems)}")
        self.say("every fault healed; waiting for the jobs to end")
        _bounded_wait(lambda: not workload.unfinished_jobs(), o.recover_timeout_s)
        observer.stop()
        final_checks = ("registry agrees", "framework saw", "cluster recovered", "every submitted")
        deadline = time.monotonic() + o.recover_timeout_s
        for _ in range(int(o.recover_timeout_s) + 2):
            views = workload.views()
            final = observer.sample()
            checks = invariants.check_all(observer.taken(), final, views)
            settled = all(c.ok for c in checks if any(c.name.startswith(f) for f in final_checks))
            if settled or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        self.samples = [*observer.taken(), final]
        result.checks = checks
        self._views = views
        result.jobs = len(workload.job_ids)
        result.submit_errors = workload.submit_errors
        result.tasks = tasks_run(self.samples)
        result.samples = len(self.samples)

    def _teardown(self, result: RunResult) -> None:
        try:
            self._stop_and_record(result)
        finally:
            # Whatever failed above, the cluster this run made goes.
            state = self.state
            if self.made_cluster and state is not None:
                left = runner.down(state, keep_directory=self.options.keep_logs)
                if left:
                    problem = f"cluster {state.name} not fully removed: {'; '.join(left)}"
                    result.error = result.error or problem
                else:
                    self.say(f"cluster {state.name} down; nothing left")

    def _stop_and_record(self, result: RunResult) -> None:
        if self.observer is not None:
            self.observer.stop()
        result.faults = [
            {
                "at_s": a.event.at_s,
                "kind": a.event.kind,
                "nodes": list(a.nodes),
                "duration_s": a.event.duration_s,
                "errors": a.errors,
            }
            for a in self.applied
        ]
        state = self.state
        if state is None:
            return
        if not self.made_cluster and self.injector is not None:
            with self.lock:
                problems = self.injector.heal_all()
            if problems:
                result.error = result.error or f"could not heal: {'; '.join(problems)}"
        views: FrameworkViews | None = getattr(self, "_views", None)
        if self.workload is not None:
            ids = list((views.framework_ids if views else {}).values())
            if not ids:
                with contextlib.suppress(Exception):
                    ids = list(self.workload.views().framework_ids.values())
            if not self.made_cluster:
                with contextlib.suppress(CorralError, grpc.RpcError, OSError):
                    _teardown_frameworks(state, [i for i in ids if i])
            self.workload.stop()
            if not self.made_cluster and not self.options.keep_logs:
                shutil.rmtree(self.workload.directory, ignore_errors=True)
