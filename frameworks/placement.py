"""Helpers every scheduler writes by hand: does a task fit, and packing
several tasks into one offer."""

from __future__ import annotations

from collections.abc import Sequence

from corral.frameworks.types import Offer, Task
from corral.resources import Resources


def fits(task: Task, available: Resources) -> bool:
    """Whether ``task`` fits in ``available`` (unreserved or its role's)."""
    return available.contains(task.resources)


def pack(tasks: Sequence[Task], offer: Offer) -> tuple[list[Task], Resources]:
    """First-fit: the tasks (in order) that fit in the offer together, and what
    is left. Tasks that do not fit are skipped, not a reason to stop, so a big
    task at the head does not block small ones behind it."""
    left = offer.resources
    chosen: list[Task] = []
    # What is left only shrinks, so a request that did not fit once never
    # will: remember it (by identity; array jobs share one Resources object),
    # which turns a 10,000-task backlog into a few comparisons per offer.
    too_big: set[int] = set()
    for task in tasks:
        key = id(task.resources)
        if key in too_big:
            continue
        if left.contains(task.resources):
            chosen.append(task)
            left = left - task.resources
        else:
            too_big.add(key)
    return chosen, left
