"""The master's metrics (see corral/metrics.py): counters kept as things happen,
gauges read from the state at scrape time.

A master that does not lead reports ``corral_master_leading 0`` and nothing
else: its state is empty, and a collector scraping every master must not add
a standby's zeros to the leader's figures.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from corral.master.core.records import MasterCounters
from corral.metrics import Metric
from corral.proto import messages_pb2 as pb
from corral.resources import MILLI, Resources

if TYPE_CHECKING:
    from corral.master.master import Master


def collect(master: Master | None, version: str) -> list[Metric]:
    """Every metric family of a master process; ``master`` is None when it does not lead."""
    leading = Metric("corral_master_leading", "1 if this master leads, else 0.")
    info = Metric("corral_master_info", "This master's version (always 1).").add(1, version=version)
    if master is None:
        return [leading.add(0), info]
    return [leading.add(1), info, *_gauges(master), *_counters(master.counters)]


def _gauges(master: Master) -> list[Metric]:
    state = master.state
    agents = Metric("corral_master_agents", "Agents the master knows, by state.")
    counts = Counter(
        "gone"
        if a.gone
        else "unreachable"
        if a.unreachable
        else ("connected" if a.connected else "disconnected")
        for a in state.agents.values()
    )
    for name in ("connected", "disconnected", "unreachable", "gone"):
        agents.add(counts[name], state=name)
    draining = sum(
        1
        for a in state.agents.values()
        if master.allocator.has_agent(a.agent_id) and master.allocator.draining(a.agent_id)
    )
    frameworks = Metric("corral_master_frameworks", "Frameworks the master knows, by state.")
    connected = sum(1 for f in state.frameworks.values() if f.connected)
    frameworks.add(connected, state="connected").add(len(state.frameworks) - connected, state="disconnected")
    tasks = Metric("corral_master_tasks", "Live tasks (not yet acknowledged as ended), by state.")
    by_state = Counter(
        pb.TaskState.Name(t.status.state) for f in state.frameworks.values() for t in f.tasks.values()
    )
    for name, count in sorted(by_state.items()):
        tasks.add(count, state=name)
    total, used, offered = Resources(), Resources(), Resources()
    for a in state.agents.values():
        if a.gone:
            continue
        total = total + a.total
        used = used + state.used_on_agent(a.agent_id)
        offered = offered + state.offered_on_agent(a.agent_id)
    resources = Metric(
        "corral_master_resources", "Scalar resources of the agents: total, used by tasks, offered."
    )
    for name in sorted(n for n in total.names() if total.scalar(n)):  # ports are ranges
        for kind, res in (("total", total), ("used", used), ("offered", offered)):
            resources.add(_scalar(res, name), resource=name, kind=kind)
    return [
        agents,
        Metric("corral_master_agents_draining", "Agents put under maintenance.").add(draining),
        frameworks,
        tasks,
        Metric("corral_master_offers", "Offers outstanding.").add(len(state.offers)),
        resources,
    ]


def _scalar(res: Resources, name: str) -> float:
    """A resource's amount in its user unit (cpus, MiB), all roles together."""
    return res.scalar(name) / MILLI


def _counters(c: MasterCounters) -> list[Metric]:
    ended = Metric(
        "corral_master_tasks_ended_total", "Tasks that reached a terminal state, by state.", "counter"
    )
    for name, count in sorted(c.tasks_ended.items()):
        ended.add(count, state=name)
    return [
        Metric("corral_master_allocation_runs_total", "Allocation cycles run.", "counter").add(
            c.allocation_runs
        ),
        Metric("corral_master_allocation_seconds_total", "Time spent in allocation cycles.", "counter").add(
            c.allocation_seconds
        ),
        Metric("corral_master_offers_sent_total", "Offers sent to frameworks.", "counter").add(c.offers_sent),
        Metric("corral_master_tasks_launched_total", "Tasks sent to agents to launch.", "counter").add(
            c.tasks_launched
        ),
        ended,
        Metric("corral_master_agents_marked_unreachable_total", "Agents marked unreachable.", "counter").add(
            c.agents_marked_unreachable
        ),
    ]
