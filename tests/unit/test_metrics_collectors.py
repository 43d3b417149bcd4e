"""The collectors against the state they read, the histograms' observations,
and the exposition checked by promtool (no network: a master runtime fed
calls with a hand-driven clock, agents as plain objects)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from corral.codec import resources_to_proto
from corral.master import metrics as master_metrics
from corral.master.latency import LaunchTimer
from corral.master.master import Master, MasterConfig
from corral.master.streams import Outbox
from corral.proto import messages_pb2 as pb
from corral.proto import scheduler_pb2
from corral.resources import Resources
from corral.slave import metrics as agent_metrics
from corral.slave.agent_core import AgentCore
from corral.slave.status_updates import StatusUpdateManager

Op = scheduler_pb2.Operation
MIB = 1024 * 1024


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _running_task(now: list[float]) -> tuple[Master, str, str]:
    """A master with one agent and one framework whose task t1 was launched
    at t=1000 and reported RUNNING at t=1000.3."""
    master = Master(MasterConfig(), clock=lambda: now[0])
    agent_box: Outbox[object] = Outbox()
    fw_box: Outbox[object] = Outbox()
    total = Resources.parse("cpus:2;mem:1024;disk:512")
    agent_id = master.register_agent(pb.AgentInfo(hostname="h1"), total, [], [], agent_box)
    fw = master.subscribe(pb.FrameworkInfo(name="fw", user="root"), fw_box)
    master.run_allocation()
    offers = [o for e in fw_box.pending() for o in e.offers.offers]  # type: ignore[attr-defined]
    task = pb.TaskInfo(
        task_id="t1",
        name="t1",
        resources=resources_to_proto(Resources.of(cpus=0.5, mem=64)),
        command=pb.CommandInfo(shell=True, value="true"),
    )
    master.accept(
        fw.framework_id, [offers[0].id], [Op(type=Op.LAUNCH, launch=Op.Launch(task_infos=[task]))], None
    )
    now[0] += 0.3
    running = pb.TaskStatus(
        task_id="t1", framework_id=fw.framework_id, agent_id=agent_id, state=pb.TASK_RUNNING, uuid=b"u1"
    )
    master.agent_status_updates(agent_id, [running])
    return master, agent_id, fw.framework_id


def test_master_gauges_and_counters_match_its_state() -> None:
    now = [1000.0]
    master, _, fw_id = _running_task(now)
    reg = master_metrics.registry(lambda: master, "9.9")
    assert _value(reg, "corral_master_leading") == 1
    assert _value(reg, "corral_master_info", version="9.9") == 1
    assert _value(reg, "corral_master_agents", state="connected") == 1
    assert _value(reg, "corral_master_frameworks", state="connected") == 1
    assert _value(reg, "corral_master_tasks", state="TASK_RUNNING") == 1
    assert _value(reg, "corral_master_tasks_launched_total") == 1
    assert _value(reg, "corral_master_offers_sent_total") == 1
    assert _value(reg, "corral_master_cpus", kind="total") == 2
    assert _value(reg, "corral_master_cpus", kind="used") == 0.5
    # bytes, not MiB
    assert _value(reg, "corral_master_memory_bytes", kind="total") == 1024 * MIB
    assert _value(reg, "corral_master_memory_bytes", kind="used") == 64 * MIB
    assert _value(reg, "corral_master_disk_bytes", kind="total") == 512 * MIB
    assert _value(reg, "process_resident_memory_bytes") is not None  # the process collector

    # The state changes; the next scrape follows (nothing cached).
    ended = pb.TaskStatus(task_id="t1", framework_id=fw_id, state=pb.TASK_FINISHED, uuid=b"u2")
    master.agent_status_updates(next(iter(master.state.agents)), [ended])
    assert _value(reg, "corral_master_tasks", state="TASK_RUNNING") is None
    assert _value(reg, "corral_master_tasks", state="TASK_FINISHED") == 1


def test_launch_latency_and_allocation_cycles_are_observed() -> None:
    now = [1000.0]
    master, agent_id, fw_id = _running_task(now)
    reg = master_metrics.registry(lambda: master, "9.9")
    assert _value(reg, "corral_master_task_launch_seconds_count") == 1
    assert abs((_value(reg, "corral_master_task_launch_seconds_sum") or 0) - 0.3) < 1e-6
    assert _value(reg, "corral_master_task_launch_seconds_bucket", le="0.25") == 0
    assert _value(reg, "corral_master_task_launch_seconds_bucket", le="0.5") == 1
    # A retried RUNNING is not a second launch.
    again = pb.TaskStatus(
        task_id="t1", framework_id=fw_id, agent_id=agent_id, state=pb.TASK_RUNNING, uuid=b"u1"
    )
    master.agent_status_updates(agent_id, [again])
    assert _value(reg, "corral_master_task_launch_seconds_count") == 1
    cycles = _value(reg, "corral_master_allocation_cycle_seconds_count")
    assert cycles == _value(reg, "corral_master_allocation_runs_total") == 1
    master.run_allocation()
    assert _value(reg, "corral_master_allocation_cycle_seconds_count") == 2


def test_a_standby_reports_that_it_does_not_lead_and_its_process() -> None:
    reg = master_metrics.registry(lambda: None, "9.9")
    families = {m.name for m in reg.collect()}
    assert {f for f in families if f.startswith("corral_")} == {"corral_master_leading", "corral_master"}
    assert _value(reg, "corral_master_leading") == 0
    assert "process_cpu_seconds" in families


def test_the_launch_timer_forgets_what_will_never_run() -> None:
    timer = LaunchTimer(limit=2)
    timer.sent([("f", "a"), ("f", "b")], 10.0)
    assert timer.status(("f", "a"), pb.TASK_STARTING, 11.0) is None  # not yet
    assert timer.status(("f", "a"), pb.TASK_FAILED, 11.0) is None  # ended before RUNNING
    assert timer.status(("f", "a"), pb.TASK_RUNNING, 12.0) is None
    timer.sent([("f", "c"), ("f", "d")], 13.0)  # over the limit: b, the oldest, goes
    assert len(timer) == 2
    assert timer.status(("f", "b"), pb.TASK_RUNNING, 14.0) is None
    assert timer.status(("f", "c"), pb.TASK_RUNNING, 12.0) is None  # the clock stepped back
    assert timer.status(("f", "d"), pb.TASK_RUNNING, 15.5) == 2.5


def test_a_status_update_round_trip_runs_from_its_first_send_to_its_ack() -> None:
    seen: list[float] = []
    connected = [False]
    updates = StatusUpdateManager(lambda _: connected[0], observe_round_trip=seen.append)
    status = updates.update(pb.TaskStatus(framework_id="f", task_id="t", state=pb.TASK_RUNNING), 100.0)
    connected[0] = True
    updates.resend_all(101.0)  # first sent now
    updates.tick(200.0)  # a retry does not restart the clock
    assert updates.acknowledge(("f", "t"), b"stale", 201.0) is None
    assert seen == []
    assert updates.acknowledge(("f", "t"), status.uuid, 101.5 + 100) is not None
    assert seen == [100.5]


@dataclass
class _Flag:
    value: bool = True

    def is_set(self) -> bool:
        return self.value


@dataclass
class _Containers:
    ids: list[str] = field(default_factory=list)

    def containers(self) -> list[str]:
        return self.ids


@dataclass
class _Run:
    state: int


@dataclass
class _FakeAgent:
    """The part of an Agent the collector reads (agent_metrics.AgentView)."""

    agent_id: str
    total: Resources
    core: AgentCore
    tasks: dict[tuple[str, str], _Run] = field(default_factory=dict)
    registered: _Flag = field(default_factory=_Flag)
    connected: bool = True
    containerizer: _Containers = field(default_factory=_Containers)
    completed: list[str] = field(default_factory=list)
    checkpoint_failures: int = 0
    histograms: agent_metrics.AgentHistograms = field(default_factory=agent_metrics.AgentHistograms)

    @property
    def updates(self) -> StatusUpdateManager:
        return self.core.updates


def _agent(agent_id: str, tmp: Path, total: str) -> _FakeAgent:
    histograms = agent_metrics.AgentHistograms()
    core = AgentCore(
        tmp / agent_id,
        new_suffix=lambda: "x",
        connected=True,
        observe_round_trip=histograms.status_update_round_trip.observe,
    )
    return _FakeAgent(agent_id, Resources.parse(total), core, histograms=histograms)


def _one_ack(agent: _FakeAgent, sent: float, acked: float) -> None:
    status = agent.updates.update(pb.TaskStatus(framework_id="f", task_id="t", state=pb.TASK_RUNNING), sent)
    agent.updates.acknowledge(("f", "t"), status.uuid, acked)


def test_agent_collector_one_agent_unlabelled(tmp_path: Path) -> None:
    agent = _agent("a1", tmp_path, "cpus:4;mem:2048;disk:100;gpus:1;fpga:2")
    agent.tasks[("f", "t")] = _Run(pb.TASK_RUNNING)
    agent.containerizer.ids.append("c1")
    agent.checkpoint_failures = 3
    _one_ack(agent, 10.0, 10.02)
    reg = agent_metrics.registry([agent], "9.9")
    assert _value(reg, "corral_agent_registered") == 1
    assert _value(reg, "corral_agent_info", version="9.9") == 1
    assert _value(reg, "corral_agent_tasks", state="TASK_RUNNING") == 1
    assert _value(reg, "corral_agent_containers") == 1
    assert _value(reg, "corral_agent_checkpoint_failures_total") == 3
    assert _value(reg, "corral_agent_memory_bytes") == 2048 * MIB
    assert _value(reg, "corral_agent_disk_bytes") == 100 * MIB
    assert _value(reg, "corral_agent_gpus") == 1
    assert _value(reg, "corral_agent_scalar_resources", resource="fpga") == 2
    assert _value(reg, "corral_agent_status_update_round_trip_seconds_count") == 1
    assert _value(reg, "corral_agent_status_update_round_trip_seconds_bucket", le="0.025") == 1
    assert _value(reg, "corral_agent_status_update_round_trip_seconds_bucket", le="0.01") == 0
    agent.registered.value = False
    assert _value(reg, "corral_agent_registered") == 0


def test_several_agents_share_one_family_per_metric_labelled_by_agent(
    tmp_path: Path, promtool: Callable[[str], None]
) -> None:
    a1, a2 = _agent("a1", tmp_path, "cpus:1;mem:256"), _agent("a2", tmp_path, "cpus:3;mem:512")
    _one_ack(a2, 10.0, 11.0)
    reg = agent_metrics.registry([a1, a2], "9.9")
    names = [m.name for m in reg.collect()]
    assert len(names) == len(set(names)), names
    assert _value(reg, "corral_agent_cpus", agent_id="a1") == 1
    assert _value(reg, "corral_agent_cpus", agent_id="a2") == 3
    assert _value(reg, "corral_agent_status_update_round_trip_seconds_count", agent_id="a1") == 0
    assert _value(reg, "corral_agent_status_update_round_trip_seconds_count", agent_id="a2") == 1
    promtool(generate_latest(reg).decode())


def test_promtool_accepts_the_master_exposition(promtool: Callable[[str], None]) -> None:
    now = [1000.0]
    master, _, _ = _running_task(now)
    promtool(generate_latest(master_metrics.registry(lambda: master, "9.9")).decode())
    promtool(generate_latest(master_metrics.registry(lambda: None, "9.9")).decode())


def test_promtool_check_can_fail(promtool: Callable[[str], None]) -> None:
    try:
        promtool("# TYPE x counter\nx 1\n")  # a counter without _total
    except AssertionError:
        return
    raise AssertionError("promtool accepted a counter named without _total")
