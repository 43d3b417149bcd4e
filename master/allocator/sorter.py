"""Weighted Dominant Resource Fairness ordering of clients.

The sorter only answers "who is furthest below their fair share?"; the
allocator decides what to give. Mesos keeps the same split (sorter.hpp vs
hierarchical.cpp), which lets the role level and the framework level reuse one
sorter. Pure and deterministic: ties break by client name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from corral.resources import Resources, dominant_share


class Sorter(Protocol):
    def add(self, client: str, weight: float = 1.0) -> None: ...
    def remove(self, client: str) -> None: ...
    def allocated(self, client: str, resources: Resources) -> None: ...
    def unallocated(self, client: str, resources: Resources) -> None: ...
    def update_weight(self, client: str, weight: float) -> None: ...
    def set_total(self, total: Resources) -> None: ...
    def share(self, client: str) -> float: ...
    def sort(self) -> list[str]: ...


@dataclass
class DRFSorter:
    """DRF over the cluster total; ``share / weight`` orders clients
    (Ghodsi et al., "Dominant Resource Fairness", NSDI 2011)."""

    total: Resources = field(default_factory=Resources)
    _weights: dict[str, float] = field(default_factory=dict)
    _allocations: dict[str, Resources] = field(default_factory=dict)

    def add(self, client: str, weight: float = 1.0) -> None:
        if weight <= 0:
            raise ValueError(f"weight of {client!r}: must be > 0, got {weight}")
        self._weights[client] = weight
        self._allocations.setdefault(client, Resources())

    def remove(self, client: str) -> None:
        self._weights.pop(client, None)
        self._allocations.pop(client, None)

    def contains(self, client: str) -> bool:
        return client in self._weights

    def allocated(self, client: str, resources: Resources) -> None:
        self._allocations[client] = self._allocations.get(client, Resources()) + resources

    def unallocated(self, client: str, resources: Resources) -> None:
        current = self._allocations.get(client, Resources())
        self._allocations[client] = current.subtract_clamped(resources)

    def allocation(self, client: str) -> Resources:
        return self._allocations.get(client, Resources())

    def update_weight(self, client: str, weight: float) -> None:
        if client not in self._weights:
            raise KeyError(client)
        if weight <= 0:
            raise ValueError(f"weight of {client!r}: must be > 0, got {weight}")
        self._weights[client] = weight

    def set_total(self, total: Resources) -> None:
        self.total = total

    def share(self, client: str) -> float:
        return dominant_share(self._allocations.get(client, Resources()), self.total)

    def weighted_share(self, client: str) -> float:
        return self.share(client) / self._weights.get(client, 1.0)

    def sort(self) -> list[str]:
        return sorted(self._weights, key=lambda c: (self.weighted_share(c), c))
