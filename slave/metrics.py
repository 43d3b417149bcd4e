"""The agent's metrics (see corral/metrics.py), read from its state at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sized
from typing import Protocol

from corral.codec import State
from corral.metrics import Metric
from corral.proto import messages_pb2 as pb
from corral.resources import MILLI, Resources


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


def collect(agent: AgentView, version: str) -> list[Metric]:
    """Every metric family of an agent process."""
    tasks = Metric("corral_agent_tasks", "Tasks on this agent not yet acknowledged as ended, by state.")
    for name, count in sorted(Counter(pb.TaskState.Name(r.state) for r in agent.tasks.values()).items()):
        tasks.add(count, state=name)
    resources = Metric(
        "corral_agent_resources", "Scalar resources this agent offers (cpus, mem MiB, disk MiB)."
    )
    for name in sorted(n for n in agent.total.names() if agent.total.scalar(n)):
        resources.add(agent.total.scalar(name) / MILLI, resource=name)
    pending = sum(len(q) for q in agent.updates.pending().values())
    return [
        Metric("corral_agent_registered", "1 while registered with a master, else 0.").add(
            1 if agent.registered.is_set() and agent.connected else 0
        ),
        Metric("corral_agent_info", "This agent's version (always 1).").add(1, version=version),
        tasks,
        Metric("corral_agent_containers", "Containers the containerizer holds.").add(
            len(agent.containerizer.containers())
        ),
        Metric("corral_agent_status_updates_pending", "Status updates not yet acknowledged.").add(pending),
        Metric("corral_agent_sandboxes_completed", "Finished tasks' sandboxes kept for logs.").add(
            len(agent.completed)
        ),
        Metric(
            "corral_agent_checkpoint_failures_total",
            "Checkpoint writes that failed (a full disk).",
            "counter",
        ).add(agent.checkpoint_failures),
        resources,
    ]
