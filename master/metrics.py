"""The master's metrics (see corral/metrics.py): a collector that reads the
state at scrape time, the counters the core keeps, and the histograms the
runtime (``master/master.py``) observes (``master/latency.py``).

A master that does not lead reports ``corral_master_leading 0``, its version
and its process's figures, nothing else: its state is empty, and a collector
scraping every master must not add a standby's zeros to the leader's figures.
Everything about leading (counters, histograms) starts again at zero with each
leadership term, as a restarted process's would; ``rate()`` handles that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from corral.master.core.records import MasterCounters
from corral.metrics import process_registry, resource_families
from corral.proto import messages_pb2 as pb
from corral.resources import Resources

if TYPE_CHECKING:
    from corral.master.master import Master

TaskKey = tuple[str, str]  # (framework_id, task_id)


class MasterCollector:
    """A prometheus-client collector over a master process; ``master()`` is
    None while it does not lead. Call ``collect`` on the event loop only (see
    corral/metrics.py): it reads the state between transitions."""

    def __init__(self, master: Callable[[], Master | None], version: str) -> None:
        self._master = master
        self._version = version

    def collect(self) -> Iterator[Metric]:
        master = self._master()
        leading = GaugeMetricFamily("corral_master_leading", "1 if this master leads, else 0.")
        leading.add_metric([], 0 if master is None else 1)
        yield leading
        yield InfoMetricFamily("corral_master", "This master's version.", value={"version": self._version})
        if master is None:
            return
        yield from _gauges(master)
        yield from _counters(master.counters)
        yield from master.histograms.collect()


def registry(master: Callable[[], Master | None], version: str) -> CollectorRegistry:
    """What ``corral master --metrics-listen`` serves: the master and the process."""
    out = process_registry()
    out.register(MasterCollector(master, version))
    return out


def _gauges(master: Master) -> list[Metric]:
    state = master.state
    agents = GaugeMetricFamily("corral_master_agents", "Agents the master knows, by state.", labels=["state"])
    counts = Counter(
        "gone"
        if a.gone
        else "unreachable"
        if a.unreachable
        else ("connected" if a.connected else "disconnected")
        for a in state.agents.values()
    )
    for name in ("connected", "disconnected", "unreachable", "gone"):
        agents.add_metric([name], counts[name])
    draining = sum(
        1
        for a in state.agents.values()
        if master.allocator.has_agent(a.agent_id) and master.allocator.draining(a.agent_id)
    )
    frameworks = GaugeMetricFamily(
        "corral_master_frameworks", "Frameworks the master knows, by state.", labels=["state"]
    )
    connected = sum(1 for f in state.frameworks.values() if f.connected)
    frameworks.add_metric(["connected"], connected)
    frameworks.add_metric(["disconnected"], len(state.frameworks) - connected)
    tasks = GaugeMetricFamily(
        "corral_master_tasks", "Live tasks (not yet acknowledged as ended), by state.", labels=["state"]
    )
    by_state = Counter(
        pb.TaskState.Name(t.status.state) for f in state.frameworks.values() for t in f.tasks.values()
    )
    for name, count in sorted(by_state.items()):
        tasks.add_metric([name], count)
    total, used, offered = Resources(), Resources(), Resources()
    for a in state.agents.values():
        if a.gone:
            continue
        total = total + a.total
        used = used + state.used_on_agent(a.agent_id)
        offered = offered + state.offered_on_agent(a.agent_id)
    return [
        agents,
        GaugeMetricFamily("corral_master_agents_draining", "Agents put under maintenance.", value=draining),
        frameworks,
        tasks,
        GaugeMetricFamily("corral_master_offers", "Offers outstanding.", value=len(state.offers)),
        *resource_families(
            "corral_master",
            "Resources of the agents not gone (kind: total, used by tasks, offered)",
            {"total": total, "used": used, "offered": offered},
        ),
    ]


def _counters(c: MasterCounters) -> list[Metric]:
    ended = CounterMetricFamily(
        "corral_master_tasks_ended", "Tasks that reached a terminal state, by state.", labels=["state"]
    )
    for name, count in sorted(c.tasks_ended.items()):
        ended.add_metric([name], count)
    return [
        CounterMetricFamily(
            "corral_master_allocation_runs", "Allocation cycles run.", value=c.allocation_runs
        ),
        CounterMetricFamily(
            "corral_master_allocation_seconds",
            "Time spent in allocation cycles (corral_master_allocation_cycle_seconds has their spread).",
            value=c.allocation_seconds,
        ),
        CounterMetricFamily("corral_master_offers_sent", "Offers sent to frameworks.", value=c.offers_sent),
        CounterMetricFamily(
            "corral_master_tasks_launched", "Tasks sent to agents to launch.", value=c.tasks_launched
        ),
        ended,
        CounterMetricFamily(
            "corral_master_agents_marked_unreachable",
            "Agents marked unreachable.",
            value=c.agents_marked_unreachable,
        ),
    ]
