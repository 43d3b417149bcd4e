"""Weighted Dominant Resource Fairness ordering of clients.

The sorter only answers "who is furthest below their fair share?"; the
allocator decides what to give. Mesos keeps the same split (sorter.hpp vs
hierarchical.cpp): one role sorter, one framework sorter per role. Pure and
deterministic. Ties in weighted share break as Mesos' ``compareDRF`` does:
first by how many allocations the client has been given (fewer first), then
by name, so clients that keep returning to a zero share take turns instead
of the first name always winning.

Speed: shares are computed from per-name milli totals (roles dropped), never
from :class:`Resources` arithmetic, and the order is kept incrementally in a
sorted list of ``(weighted share, allocation count, name)``: a change to one client is one
``bisect`` removal and one insertion (O(log n) comparisons, a C ``memmove``),
so an allocation cycle never re-sorts every client for every agent. Only a
change of the cluster total (an agent joins or leaves) changes every share;
that marks the order stale and it is rebuilt once, at the next read.
"""

from __future__ import annotations

import functools
from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping
from typing import Protocol

from corral.resources import Resources

#: Scalars by name, roles dropped, in milli-units.
Quantities = dict[str, int]


def quantities(resources: Resources) -> Quantities:
    """Scalars of ``resources`` by name, every role added up."""
    out: Quantities = {}
    for (name, _), v in resources.scalars.items():
        out[name] = out.get(name, 0) + v
    return out


class Sorter(Protocol):
    def add(self, client: str, weight: float = 1.0) -> None: ...
    def remove(self, client: str) -> None: ...
    def allocated(self, client: str, resources: Resources) -> None: ...
    def unallocated(self, client: str, resources: Resources) -> None: ...
    def update_weight(self, client: str, weight: float) -> None: ...
    def set_total(self, total: Resources) -> None: ...
    def share(self, client: str) -> float: ...
    def sort(self) -> list[str]: ...


def check_weight(what: str, weight: float) -> None:
    """Refuse a weight that is not a finite number above zero, naming ``what``."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not weight > 0
        or weight == float("inf")
    ):
        raise ValueError(f"weight of {what}: must be a finite number > 0, got {weight}")


class DRFSorter:
    """DRF over the cluster total; ``share / weight`` orders clients
    (Ghodsi et al., "Dominant Resource Fairness", NSDI 2011).

    A client can be deactivated: it keeps its allocation (and its share counts
    for its parent) but is left out of :meth:`sort` and :meth:`iter_active`.
    """

    def __init__(self, total: Mapping[str, int] | None = None) -> None:
        # Shared, not copied: the allocator keeps one total for every sorter
        # and changes it in place, then calls set_total to mark orders stale.
        self._total: Mapping[str, int] = total if total is not None else {}
        self._weights: dict[str, float] = {}
        self._alloc: dict[str, Quantities] = {}
        # Allocations ever made to a client (Mesos' Allocation::count): only
        # grows, like Mesos', and restarts at 0 with a new leader.
        self._count: dict[str, int] = {}
        self._key: dict[str, tuple[float, int, str]] = {}  # entry in _order of active clients
        self._active: set[str] = set()
        self._order: list[tuple[float, int, str]] = []
        self._stale = False

    # -- clients --------------------------------------------------------------

    def add(self, client: str, weight: float = 1.0, *, active: bool = True) -> None:
        check_weight(repr(client), weight)
        if client in self._weights:
            self.update_weight(client, weight)
            self.activate(client) if active else self.deactivate(client)
            return
        self._weights[client] = float(weight)
        self._alloc[client] = {}
        self._count[client] = 0
        if active:
            self._active.add(client)
            self._insert(client)

    def remove(self, client: str) -> None:
        if client not in self._weights:
            return
        self.deactivate(client)
        del self._weights[client]
        del self._alloc[client]
        del self._count[client]

    def contains(self, client: str) -> bool:
        return client in self._weights

    def is_active(self, client: str) -> bool:
        return client in self._active

    def activate(self, client: str) -> None:
        if client not in self._weights:
            raise KeyError(client)
        if client not in self._active:
            self._active.add(client)
            self._insert(client)

    def deactivate(self, client: str) -> None:
        if client in self._active:
            self._active.discard(client)
            self._drop(client)

    def clients(self) -> list[str]:
        return sorted(self._weights)

    def size(self) -> int:
        return len(self._weights)

    def has_active(self) -> bool:
        return bool(self._active)

    def weight(self, client: str) -> float:
        return self._weights[client]

    def update_weight(self, client: str, weight: float) -> None:
        if client not in self._weights:
            raise KeyError(client)
        check_weight(repr(client), weight)
        self._drop(client)
        self._weights[client] = float(weight)
        self._insert(client)

    # -- allocations ----------------------------------------------------------

    def allocated(self, client: str, resources: Resources) -> None:
        self.add_quantities(client, quantities(resources))

    def unallocated(self, client: str, resources: Resources) -> None:
        self.add_quantities(client, {n: -v for n, v in quantities(resources).items()})

    def add_quantities(self, client: str, delta: Mapping[str, int]) -> None:
        """Add (or with negative values, remove) scalars; clamped at zero.
        A delta that adds anything counts as one allocation for tie-breaks."""
        if not delta:
            return
        alloc = self._alloc.get(client)
        if alloc is None:
            raise KeyError(client)
        self._drop(client)
        added = 0
        for name, v in delta.items():
            added |= v > 0
            left = alloc.get(name, 0) + v
            if left > 0:
                alloc[name] = left
            else:
                alloc.pop(name, None)
        self._count[client] += added
        self._insert(client)

    def allocation(self, client: str) -> Resources:
        alloc = self._alloc.get(client, {})
        return Resources(scalars={(n, ""): v for n, v in alloc.items()})

    def allocation_quantities(self, client: str) -> Mapping[str, int]:
        return self._alloc.get(client, {})

    # -- totals and shares ----------------------------------------------------

    @property
    def total(self) -> Resources:
        return Resources(scalars={(n, ""): v for n, v in self._total.items() if v})

    def set_total(self, total: Resources | Mapping[str, int]) -> None:
        self._total = quantities(total) if isinstance(total, Resources) else total
        self._stale = True

    def share(self, client: str) -> float:
        """Dominant share: the largest fraction of any scalar of the total."""
        alloc = self._alloc.get(client)
        if not alloc:
            return 0.0
        total = self._total
        share = 0.0
        for name, v in alloc.items():
            t = total.get(name, 0)
            if t > 0:
                s = v / t
                share = max(share, s)
        return share

    def weighted_share(self, client: str) -> float:
        return self.share(client) / self._weights.get(client, 1.0)

    def allocation_count(self, client: str) -> int:
        """How many allocations the client has been given (the tie-break)."""
        return self._count.get(client, 0)

    # -- order ----------------------------------------------------------------

    def sort(self) -> list[str]:
        """Active clients, lowest weighted share first; ties by fewer
        allocations, then by name."""
        return list(self.iter_active())

    def iter_active(self) -> Iterator[str]:
        """Like :meth:`sort` without copying. Do not change the sorter while
        iterating: stop at the client you change."""
        if self._stale:
            self._rebuild()
        for _, _, client in self._order:
            yield client

    def first(self) -> str | None:
        if self._stale:
            self._rebuild()
        return self._order[0][2] if self._order else None

    def _rebuild(self) -> None:
        self._key = {c: (self.weighted_share(c), self._count[c], c) for c in self._active}
        self._order = sorted(self._key.values())
        self._stale = False

    def _insert(self, client: str) -> None:
        if client not in self._active or self._stale:
            return
        entry = (self.share(client) / self._weights[client], self._count[client], client)
        self._key[client] = entry
        insort(self._order, entry)

    def _drop(self, client: str) -> None:
        if self._stale:
            return
        key = self._key.pop(client, None)
        if key is None:
            return
        i = bisect_left(self._order, key)
        del self._order[i]


def parent_of(role: str) -> str:
    """``eng/ml`` -> ``eng``; a top-level role's parent is the root ``""``."""
    head, _, _ = role.rpartition("/")
    return head


@functools.lru_cache(maxsize=65536)
def ancestors_and_self(role: str) -> tuple[str, ...]:
    """``eng/ml/x`` -> ``("eng", "eng/ml", "eng/ml/x")`` (cached: the hot path asks often)."""
    parts = role.split("/")
    return tuple("/".join(parts[: i + 1]) for i in range(len(parts)))


def is_within(role: str, ancestor: str) -> bool:
    """True when ``role`` is ``ancestor`` or one of its sub-roles."""
    return role == ancestor or role.startswith(ancestor + "/")


#: The client standing for a role's own frameworks inside its node, next to
#: its sub-roles (Mesos' "virtual leaf").
OWN = "."


class RoleSorter:
    """Hierarchical DRF over roles (Mesos' sorter tree): siblings are ordered
    by the weighted share of their whole subtree; :meth:`iter_roles` walks the
    tree depth first, lowest share first at every level, and yields the active
    roles. A role's weight applies among its siblings; a role's own frameworks
    compete with its sub-roles as the client ``"."`` of weight 1."""

    def __init__(self) -> None:
        self._nodes: dict[str, DRFSorter] = {"": DRFSorter()}
        self._weights: dict[str, float] = {}
        self._total: Mapping[str, int] = {}
        self._active: set[str] = set()

    def add(self, role: str) -> None:
        node = self._nodes.get(role)
        if node is not None and node.contains(OWN):
            return
        for path in ancestors_and_self(role):
            if path not in self._nodes:
                self._nodes[path] = DRFSorter(self._total)
                up = parent_of(path)
                parent = self._nodes[up]
                if up and not self._has_children(up) and parent.contains(OWN):
                    # First sub-role: from now on the role's own share is
                    # tracked apart from its subtree's (until now the same).
                    parent.add_quantities(OWN, self._nodes[parent_of(up)].allocation_quantities(up))
                parent.add(path, self._weights.get(path, 1.0), active=False)
        self._nodes[role].add(OWN, active=False)

    def _has_children(self, role: str) -> bool:
        node = self._nodes[role]
        return len(node.clients()) > (1 if node.contains(OWN) else 0)

    def contains(self, role: str) -> bool:
        return role in self._nodes

    def roles(self) -> list[str]:
        return sorted(r for r in self._nodes if r)

    def set_weight(self, role: str, weight: float) -> None:
        check_weight(f"role {role!r}", weight)
        self._weights[role] = float(weight)
        self.add(role)
        self._nodes[parent_of(role)].update_weight(role, weight)

    def weight(self, role: str) -> float:
        return self._weights.get(role, 1.0)

    def set_active(self, role: str, active: bool) -> None:
        """A role is active while it has a framework that wants offers."""
        self.add(role)
        if active == (role in self._active):
            return
        if active:
            self._active.add(role)
        else:
            self._active.discard(role)
        node = self._nodes[role]
        node.activate(OWN) if active else node.deactivate(OWN)
        path = role
        while path:
            up = parent_of(path)
            parent = self._nodes[up]
            if self._nodes[path].has_active():
                parent.activate(path)
            else:
                parent.deactivate(path)
            path = up

    def is_active(self, role: str) -> bool:
        return role in self._active

    def add_quantities(self, role: str, delta: Mapping[str, int]) -> None:
        if not delta:
            return
        node = self._nodes[role]
        if node.size() > 1:  # a leaf's own share is its subtree's: not tracked twice
            node.add_quantities(OWN, delta)
        path = role
        while path:
            up = parent_of(path)
            self._nodes[up].add_quantities(path, delta)
            path = up

    def set_total(self, total: Mapping[str, int]) -> None:
        """``total`` is shared with the nodes, not copied (see DRFSorter)."""
        self._total = total
        for node in self._nodes.values():
            node.set_total(self._total)

    def share(self, role: str) -> float:
        """The dominant share of ``role`` and its sub-roles together."""
        if role not in self._nodes:
            return 0.0
        return self._nodes[parent_of(role)].share(role)

    def weighted_share(self, role: str) -> float:
        return self.share(role) / self.weight(role)

    def iter_roles(self, node: str = "") -> Iterator[str]:
        """Active roles in fair order. Stop iterating before changing shares."""
        for client in self._nodes[node].iter_active():
            if client == OWN:
                yield node
            else:
                yield from self.iter_roles(client)

    def sort(self) -> list[str]:
        return list(self.iter_roles())
