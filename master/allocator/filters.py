"""Decline filters (Mesos' ``RefusedOfferFilter``), per framework, role and
agent: adding one, REVIVE clearing a role's, and whether one holds an offer
back. Pure: functions over a framework's ``filters`` book (model.py)."""

from __future__ import annotations

from collections.abc import Iterable

from corral.master.allocator.model import FrameworkState, OfferFilter
from corral.resources import Resources


def add_filter(fw: FrameworkState, agent_id: str, role: str, offer_filter: OfferFilter) -> None:
    """Each decline is a filter of its own: a newer, shorter one does not cut
    an older one short."""
    fw.filters.setdefault(agent_id, {}).setdefault(role, []).append(offer_filter)


def clear_roles(fw: FrameworkState, roles: Iterable[str]) -> None:
    """REVIVE of ``roles``: their filters go, the other roles' stay."""
    revived = set(roles)
    for agent_id in list(fw.filters):
        by_role = fw.filters[agent_id]
        for r in revived & by_role.keys():
            del by_role[r]
        if not by_role:
            del fw.filters[agent_id]


def filtered(fw: FrameworkState, agent_id: str, role: str, offer: Resources, now: float, cycle: int) -> bool:
    """Whether a filter of ``fw`` in ``role`` holds ``offer`` of the agent back
    during cycle number ``cycle``; filters past their time are dropped on the way."""
    by_role = fw.filters.get(agent_id)
    if not by_role:
        return False
    filters = by_role.get(role)
    if not filters:
        return False
    live = [f for f in filters if f.active(now, cycle)]
    if len(live) != len(filters):
        if live:
            by_role[role] = live
        else:
            del by_role[role]
            if not by_role:
                del fw.filters[agent_id]
    return any(f.refused.contains(offer) for f in live)
