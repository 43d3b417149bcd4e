"""The agent's metrics (see corral/metrics.py), read from its state at scrape time."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from corral.metrics import Metric
from corral.proto import messages_pb2 as pb
from corral.resources import MILLI

if TYPE_CHECKING:
    from corral.slave.agent import Agent


def collect(agent: Agent, version: str) -> list[Metric]:
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
