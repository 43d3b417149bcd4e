"""Latencies the master's runtime observes for its metrics: how long a task
takes from launch to RUNNING, how long an allocation cycle takes.

Each leadership term has its own (``Master.histograms``): like the core's
counters they start at zero when a master begins to lead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric

from corral.codec import State, is_terminal
from corral.metrics import ALLOCATION_BUCKETS_S, LAUNCH_BUCKETS_S
from corral.proto import messages_pb2 as pb

TaskKey = tuple[str, str]  # (framework_id, task_id)


@dataclass
class LaunchTimer:
    """When each task was sent to its agent, until its first TASK_RUNNING.

    Pure: the runtime passes the time. At most ``limit`` tasks are timed (the
    oldest is dropped first): a task whose RUNNING never comes through an
    agent (killed in flight, its agent gone and the master deciding it LOST)
    must not be kept for ever.
    """

    limit: int = 100_000
    _sent: dict[TaskKey, float] = field(default_factory=dict)

    def sent(self, keys: Iterable[TaskKey], now: float) -> None:
        for key in keys:
            self._sent.pop(key, None)  # a relaunch starts its clock again
            self._sent[key] = now
        while len(self._sent) > self.limit:
            del self._sent[next(iter(self._sent))]

    def status(self, key: TaskKey, state: State, now: float) -> float | None:
        """The launch latency if this is the task's first RUNNING, else None.
        A clock that stepped back gives None, never a negative latency."""
        if state == pb.TASK_RUNNING:
            started = self._sent.pop(key, None)
            return None if started is None or now < started else now - started
        if is_terminal(state):
            self._sent.pop(key, None)
        return None

    def __len__(self) -> int:
        return len(self._sent)


class MasterHistograms:
    """One leadership term's histograms (not in any registry: the collector
    reports them while this master leads)."""

    def __init__(self) -> None:
        self.task_launch = Histogram(
            "corral_master_task_launch_seconds",
            "From the master sending a task to its agent (the ACCEPT that launched it) "
            "to the agent's first TASK_RUNNING reaching the master.",
            buckets=LAUNCH_BUCKETS_S,
            registry=None,
        )
        self.allocation_cycle = Histogram(
            "corral_master_allocation_cycle_seconds",
            "Time one allocation cycle takes, offers sent included.",
            buckets=ALLOCATION_BUCKETS_S,
            registry=None,
        )
        self.launch_timer = LaunchTimer()

    def collect(self) -> list[Metric]:
        return [*self.task_launch.collect(), *self.allocation_cycle.collect()]
