"""Fault schedules: from a seed, which fault hits which node when, for how long.

Pure (``random.Random`` from the seed and the node names in, events out),
like ``corral/chaos/schedule.py``. Faults fall between a warm-up and the end
of the run; each heals by itself after its duration, and whatever is still
broken at the end is healed before the settle period in which the cluster
must make progress. A schedule is a list, so a violation's schedule can be
shrunk by dropping events (``run.shrink``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: kind -> (targets, shortest, longest duration in seconds)
KINDS: dict[str, tuple[str, float, float]] = {
    "agent-crash": ("agent", 0.5, 60.0),  # kill -9 of the agent; containers run on
    "agent-partition": ("agent", 1.0, 90.0),  # held messages; past 15 s the streams break
    "agent-disconnect": ("agent", 0.0, 0.0),  # a reset stream; the agent redials
    "framework-crash": ("framework", 0.5, 30.0),  # restarts from its store
    "framework-partition": ("framework", 1.0, 60.0),
    "framework-disconnect": ("framework", 0.0, 0.0),
    "master-failover": ("master", 2.0, 12.0),  # session lost; the other master is elected
}
WARMUP_S = 20.0


@dataclass(frozen=True)
class FaultEvent:
    at_s: float
    kind: str
    target: str
    duration_s: float

    def __str__(self) -> str:
        lasting = f" for {self.duration_s:.1f}s" if self.duration_s else ""
        return f"{self.at_s:9.2f}s {self.kind} {self.target}{lasting}"


def schedule(
    seed: int,
    duration_s: float,
    agents: list[str],
    frameworks: list[str],
    kinds: tuple[str, ...] = tuple(KINDS),
    mean_gap_s: float = 45.0,
) -> list[FaultEvent]:
    """Faults at exponential gaps (mean ``mean_gap_s``) from the warm-up to the end."""
    rng = random.Random(f"faults-{seed}")
    events: list[FaultEvent] = []
    if not kinds:
        return events
    t = WARMUP_S
    while True:
        t += rng.expovariate(1.0 / mean_gap_s)
        if t >= duration_s:
            return events
        kind = rng.choice(kinds)
        role, low, high = KINDS[kind]
        targets = {"agent": agents, "framework": frameworks, "master": ["@leader"]}[role]
        duration = rng.uniform(low, high) if high else 0.0
        events.append(FaultEvent(round(t, 3), kind, rng.choice(targets), round(duration, 3)))
