"""What a service needs next: how many instances to start and which to stop.
Pure: a function of the live instances, no clock, no I/O.

In steady state (every live instance is of the target version) it starts or
stops instances to reach ``instances``, stopping unhealthy ones first, then
the newest. During a rolling update (some live instances are of another
version) it works as a Kubernetes Deployment does:

- at most ``instances + max_surge`` run at once;
- healthy instances never drop below ``instances - max_unavailable`` by its
  doing: an old healthy instance is stopped only while there are more healthy
  ones than that; old unhealthy ones are stopped at once (they count for nothing);
- new instances start while there are fewer than ``instances`` of them.

A rollback is the same walk with the previous version as the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Live:
    """A live instance (running or starting, not being stopped)."""

    id: str
    version: int
    healthy: bool
    #: launch order: higher is newer
    seq: int


@dataclass(frozen=True)
class Plan:
    launch: int
    kill: tuple[str, ...]


def min_healthy(instances: int, max_unavailable: int) -> int:
    """The fewest healthy instances the service may have while it changes."""
    return max(0, instances - max_unavailable)


def plan(target: int, instances: int, max_unavailable: int, max_surge: int, live: Sequence[Live]) -> Plan:
    """The next step towards ``instances`` healthy instances of version ``target``."""
    new = [i for i in live if i.version == target]
    old = [i for i in live if i.version != target]
    if not old:
        if len(new) > instances:
            surplus = sorted(new, key=lambda i: (i.healthy, -i.seq))[: len(new) - instances]
            return Plan(0, tuple(i.id for i in surplus))
        return Plan(instances - len(new), ())
    kills = [i.id for i in old if not i.healthy]
    budget = sum(i.healthy for i in live) - min_healthy(instances, max_unavailable)
    # Oldest first: the instances that have run longest go first, as in a Deployment.
    for i in sorted((i for i in old if i.healthy), key=lambda i: i.seq):
        if budget <= 0:
            break
        kills.append(i.id)
        budget -= 1
    remaining = len(live) - len(kills)
    launch = max(0, min(instances - len(new), instances + max_surge - remaining))
    return Plan(launch, tuple(kills))
