"""Offers: made from the allocator's decisions, declined, expired.

An offer is used at most once; ACCEPT (``launch.py``) removes it. Declined
and expired offers go back to the allocator, a decline with the framework's
refusal filter (``default_refuse_s`` when it gives none, as Mesos does).
"""

from __future__ import annotations

import math

from corral.errors import CallError
from corral.master.allocator.events import ResourcesRecovered
from corral.master.core import messages as msg
from corral.master.core.context import Core
from corral.master.core.domain import Offer
from corral.master.core.records import OfferRecord


def allocate(core: Core) -> int:
    """One allocation cycle at ``core.now``; returns how many offers were made."""
    by_framework: dict[str, list[Offer]] = {}
    for alloc in core.allocator.allocate(core.now):
        fw = core.state.frameworks.get(alloc.framework_id)
        agent = core.state.agents.get(alloc.agent_id)
        if fw is None or agent is None or not fw.connected or fw.stream is None:
            core.allocator.handle(
                ResourcesRecovered(alloc.framework_id, alloc.agent_id, alloc.resources, role=alloc.role)
            )
            continue
        offer_id = f"{core.info.id}-O{next(core.offer_seq)}"
        record = OfferRecord(offer_id, fw.framework_id, agent.agent_id, alloc.resources, core.now, alloc.role)
        core.state.offers[offer_id] = record
        fw.offers.add(offer_id)
        agent.offers.add(offer_id)
        by_framework.setdefault(fw.framework_id, []).append(
            Offer(
                offer_id,
                fw.framework_id,
                agent.agent_id,
                agent.info.hostname,
                alloc.resources,
                agent.info.attributes,
                alloc.role,
            )
        )
    for fw_id, offers in by_framework.items():
        core.to_framework(core.state.frameworks[fw_id], msg.Offers(tuple(offers)))
    count = sum(len(o) for o in by_framework.values())
    if count:
        core.log.debug("offers.sent", offers=count, frameworks=len(by_framework))
    core.counters.allocation_runs += 1
    core.counters.offers_sent += count
    return count


def expire(core: Core) -> None:
    """Rescind offers older than ``offer_timeout_s``."""
    limit = core.config.offer_timeout_s
    expired = [o.offer_id for o in core.state.offers.values() if core.now - o.created_at >= limit]
    for offer_id in expired:
        core.log.info("offer.expired", offer_id=offer_id)
        core.rescind(offer_id)


def decline(core: Core, framework_id: str, offer_ids: list[str], refuse_s: float | None) -> None:
    fw = core.framework(framework_id)
    refuse = core.config.default_refuse_s if refuse_s is None else refuse_s
    if refuse < 0 or math.isnan(refuse):
        raise CallError("INVALID_ARGUMENT", f"decline.filters.refuse_seconds: must be >= 0, got {refuse}")
    unknown = []
    for offer_id in offer_ids:
        offer = core.state.offers.get(offer_id)
        if offer is None or offer.framework_id != fw.framework_id:
            unknown.append(offer_id)
            continue
        core.remove_offer(offer_id)
        core.allocator.handle(
            ResourcesRecovered(framework_id, offer.agent_id, offer.resources, refuse, core.now, offer.role)
        )
    core.allocate_soon()
    if unknown:
        raise CallError("NOT_FOUND", f"decline.offer_ids: not valid offers of this framework: {unknown}")
