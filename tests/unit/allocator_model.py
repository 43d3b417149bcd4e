"""What the allocator state machines (test_allocator.py,
test_allocator_properties.py) share: an allocator fed through :meth:`send`,
every event and cycle recorded, fresh ids, and the determinism check at the
end (the same events replayed into a new allocator give the same allocations);
and the small helpers the allocator tests share.

Not a test module: the test files beside it import it (pytest puts this
folder on ``sys.path``, as test_liveness.py relies on for test_master_core).
"""

from __future__ import annotations

from hypothesis.stateful import RuleBasedStateMachine

from corral.master.allocator import Allocation, Allocator
from corral.master.allocator.events import Event
from corral.resources import Resources


def make(*events: Event) -> Allocator:
    """An allocator that has handled ``events``."""
    a = Allocator()
    for e in events:
        a.handle(e)
    return a


def part_of(held: Resources, k: int) -> Resources:
    """Roughly k/4 of ``held``: scalars scaled, the lowest ports."""
    scalars = {key: v * k // 4 for key, v in held.scalars.items() if v * k // 4}
    ranges = {}
    for key, rs in held.ranges.items():
        n = rs.size() * k // 4
        if n:
            ranges[key] = rs.first(n)
    return Resources(scalars, ranges)


class AllocatorModel(RuleBasedStateMachine):
    """A base for a hypothesis state machine over one :class:`Allocator`."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = Allocator()
        self.events: list[Event | float] = []  # a float is an allocate(now)
        self.outputs: list[list[Allocation]] = []
        self.now = 0.0
        self.n = 0

    def send(self, event: Event) -> None:
        """Hand ``event`` to the allocator, and record it for the replay."""
        self.events.append(event)
        self.alloc.handle(event)

    def cycle(self) -> list[Allocation]:
        """One ``allocate(now)``, recorded for the replay."""
        self.events.append(self.now)
        out = self.alloc.allocate(self.now)
        self.outputs.append(out)
        return out

    def fresh(self, prefix: str) -> str:
        """A new id: ``prefix`` and a counter."""
        self.n += 1
        return f"{prefix}{self.n}"

    def teardown(self) -> None:
        replay = Allocator()
        outputs = []
        for item in self.events:
            if isinstance(item, float):
                outputs.append(replay.allocate(item))
            else:
                replay.handle(item)
        assert outputs == self.outputs, "same events gave different allocations"
