"""The agent's metrics (see corral/metrics.py): a collector that reads the
agent's state at scrape time, and the histogram of status-update round trips.

``corral agent`` serves one agent; ``corral local`` serves its master and all
its agents on one endpoint, each agent's samples labelled ``agent_id`` (one
process: its ``process_*`` figures must appear once, not once per agent).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from corral.codec import State
from corral.metrics import ROUND_TRIP_BUCKETS_S, labelled, merged, process_registry, resource_families
from corral.proto import messages_pb2 as pb
from corral.resources import Resources


class AgentHistograms:
    """One agent's histograms (in no registry: :class:`AgentCollector` reports them)."""

    def __init__(self) -> None:
        self.status_update_round_trip = Histogram(
            "corral_agent_status_update_round_trip_seconds",
            "From a status update's first send by this agent to the framework's "
            "acknowledgement reaching it, retries included.",
            buckets=ROUND_TRIP_BUCKETS_S,
            registry=None,
        )

    def collect(self) -> list[Metric]:
        return list(self.status_update_round_trip.collect())


class _Task(Protocol):
    @property
    def state(self) -> State: ...


class _Updates(Protocol):
    def pending(self) -> Mapping[tuple[str, str], Sized]: ...


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class _Containers(Protocol):
    def containers(self) -> Sized: ...


class AgentView(Protocol):
    """What the metrics read of an agent (slave/agent.py's Agent)."""

    @property
    def agent_id(self) -> str: ...
    @property
    def tasks(self) -> Mapping[tuple[str, str], _Task]: ...
    @property
    def total(self) -> Resources: ...
    @property
    def updates(self) -> _Updates: ...
    @property
    def registered(self) -> _Flag: ...
    @property
    def connected(self) -> bool: ...
    @property
    def containerizer(self) -> _Containers: ...
    @property
    def completed(self) -> Sized: ...
    @property
    def checkpoint_failures(self) -> int: ...
    @property
    def histograms(self) -> AgentHistograms: ...


class AgentCollector:
    """A prometheus-client collector over the agents of one process. With one
    agent the samples carry no agent label; with several (``corral local``)
    each carries ``agent_id``. Call ``collect`` on the event loop only (see
    corral/metrics.py)."""

    def __init__(self, agents: Sequence[AgentView], version: str) -> None:
        self._agents = agents
        self._version = version

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily("corral_agent", "This agent's version.", value={"version": self._version})
        label = len(self._agents) > 1
        families: list[Metric] = []
        for agent in self._agents:
            labels = {"agent_id": agent.agent_id} if label else {}
            families += labelled([*_families(agent), *agent.histograms.collect()], labels)
        yield from merged(families)


def registry(agents: Sequence[AgentView], version: str) -> CollectorRegistry:
    """What ``corral agent --metrics-listen`` serves: the agents and the process."""
    out = process_registry()
    out.register(AgentCollector(agents, version))
    return out


def _families(agent: AgentView) -> list[Metric]:
    tasks = GaugeMetricFamily(
        "corral_agent_tasks", "Tasks on this agent not yet acknowledged as ended, by state.", labels=["state"]
    )
    for name, count in sorted(Counter(pb.TaskState.Name(r.state) for r in agent.tasks.values()).items()):
        tasks.add_metric([name], count)
    pending = sum(len(q) for q in agent.updates.pending().values())
    return [
        GaugeMetricFamily(
            "corral_agent_registered",
            "1 while registered with a master, else 0.",
            value=1 if agent.registered.is_set() and agent.connected else 0,
        ),
        tasks,
        GaugeMetricFamily(
            "corral_agent_containers",
            "Containers the containerizer holds.",
            value=len(agent.containerizer.containers()),
        ),
        GaugeMetricFamily(
            "corral_agent_status_updates_pending", "Status updates not yet acknowledged.", value=pending
        ),
        GaugeMetricFamily(
            "corral_agent_sandboxes_completed",
            "Finished tasks' sandboxes kept for logs.",
            value=len(agent.completed),
        ),
        CounterMetricFamily(
            "corral_agent_checkpoint_failures",
            "Checkpoint writes that failed (a full disk).",
            value=agent.checkpoint_failures,
        ),
        *resource_families("corral_agent", "Resources this agent offers", {"": agent.total}),
    ]
