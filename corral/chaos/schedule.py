"""The fault schedule: pure and seeded, so ``corral chaos --seed N`` replays it.

Faults come one after another (each healed before the next starts, after a
random gap), from ``warmup_s`` after the start until ``settle_s`` before the
end, so the cluster has a quiet stretch to settle before the invariants are
checked. A master fault's target may be :data:`LEADER`, resolved to whichever
master leads when the fault is applied.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import CorralError

#: every kind of fault, in the order the report lists them
KINDS: tuple[str, ...] = (
    "master-kill",  # kill -9, started again when healed
    "agent-kill",
    "master-pause",  # SIGSTOP, SIGCONT when healed
    "agent-pause",
    "master-partition",  # its veth down, up when healed
    "agent-partition",
    "zk-node",  # kill -9 of one ZooKeeper node, started again when healed
    "zk-quorum",  # kill -9 of a majority of the ensemble
)
#: a master fault's target meaning "the master leading when the fault is applied"
LEADER = "@leader"
MAX_EVENTS = 10_000


class ScheduleError(CorralError, ValueError):
    """A schedule cannot be made as asked (the message names the option)."""


@dataclass(frozen=True)
class Targets:
    """The cluster's node names by role."""

    masters: tuple[str, ...]
    agents: tuple[str, ...]
    zookeepers: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaultEvent:
    """One fault: applied ``at_s`` seconds after the start, healed ``duration_s`` later."""

    at_s: float
    kind: str
    targets: tuple[str, ...]
    duration_s: float

    @property
    def heal_at_s(self) -> float:
        return self.at_s + self.duration_s

    def describe(self) -> str:
        return f"{self.at_s:6.1f}s {self.kind} {','.join(self.targets)} for {self.duration_s:.1f}s"


@dataclass(frozen=True)
class ScheduleConfig:
    """Timing of a schedule (seconds)."""

    warmup_s: float = 3.0
    settle_s: float = 10.0
    min_gap_s: float = 1.0
    max_gap_s: float = 4.0
    min_fault_s: float = 2.0
    max_fault_s: float = 8.0


def possible_kinds(kinds: Sequence[str], targets: Targets) -> list[str]:
    """The asked kinds this cluster has targets for (no ZooKeeper faults on an
    ensemble the cluster did not start). Unknown kinds are an error."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ScheduleError(f"--faults: unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    have = {"master": bool(targets.masters), "agent": bool(targets.agents), "zk": bool(targets.zookeepers)}
    return [k for k in KINDS if k in kinds and have[k.split("-")[0]]]


def _targets(rng: random.Random, kind: str, targets: Targets) -> tuple[str, ...]:
    role, _, what = kind.partition("-")
    if role == "master":
        return (LEADER,) if rng.random() < 0.5 else (rng.choice(targets.masters),)
    if role == "agent":
        return (rng.choice(targets.agents),)
    if what == "node":
        return (rng.choice(targets.zookeepers),)
    majority = len(targets.zookeepers) // 2 + 1
    return tuple(sorted(rng.sample(targets.zookeepers, majority)))


def make_schedule(
    seed: int,
    duration_s: float,
    targets: Targets,
    kinds: Sequence[str] = KINDS,
    config: ScheduleConfig | None = None,
) -> list[FaultEvent]:
    """The faults of a run of ``duration_s`` seconds, the same for the same arguments.

    Every event starts at or after ``warmup_s`` and is healed by
    ``duration_s - settle_s``; events do not overlap.
    """
    cfg = config or ScheduleConfig()
    if not 0 < cfg.min_fault_s <= cfg.max_fault_s:
        raise ScheduleError(f"fault durations: need 0 < min <= max, got {cfg.min_fault_s}, {cfg.max_fault_s}")
    if not 0 <= cfg.min_gap_s <= cfg.max_gap_s:
        raise ScheduleError(f"gaps: need 0 <= min <= max, got {cfg.min_gap_s}, {cfg.max_gap_s}")
    if duration_s <= 0:
        raise ScheduleError(f"--duration: must be > 0, got {duration_s}")
    usable = possible_kinds(kinds, targets)
    rng = random.Random(seed)
    end = duration_s - cfg.settle_s
    events: list[FaultEvent] = []
    t = cfg.warmup_s
    for _ in range(MAX_EVENTS):
        if not usable:
            break
        t += rng.uniform(cfg.min_gap_s, cfg.max_gap_s) if events else 0.0
        kind = rng.choice(usable)
        length = rng.uniform(cfg.min_fault_s, cfg.max_fault_s)
        if t + length > end:
            # The last fault may still fit if shorter.
            length = end - t
            if length < cfg.min_fault_s:
                break
        event = FaultEvent(round(t, 2), kind, _targets(rng, kind, targets), round(length, 2))
        if event.heal_at_s > end:
            break
        events.append(event)
        t = event.heal_at_s
    return events
