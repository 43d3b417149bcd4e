"""Agents' connections: heartbeats, disconnection, the re-registration window
after a failover, gone agents, and what a new leader learns from the registry.

Admission and re-registration with tasks are in ``registration.py``; the
unreachable / back / gone model in ``liveness.py``.
"""

from __future__ import annotations

from corral.master.allocator.events import AgentAdded, AgentDeactivated, AgentRemoved, FrameworkDeactivated
from corral.master.core import liveness, policy
from corral.master.core.context import Core
from corral.master.core.domain import AgentInfo, AgentMaintenance, FrameworkInfo, RolePolicy
from corral.master.core.effects import AgentLeft
from corral.master.core.records import AGENTS, MAINTENANCE, AgentRecord, FrameworkRecord, StreamId


def heartbeat(core: Core, agent_id: str) -> None:
    agent = core.state.agents.get(agent_id)
    if agent is not None:
        agent.last_heartbeat = core.now


def disconnected(core: Core, agent_id: str, stream: StreamId) -> None:
    """Its stream ``stream`` ended (an older stream of an agent that reconnected is ignored)."""
    agent = core.state.agents.get(agent_id)
    if agent is None or agent.stream != stream:
        return
    core.close(stream)
    agent.stream = None
    if not agent.connected:
        return
    agent.connected = False
    core.allocator.handle(AgentDeactivated(agent_id))
    for offer_id in sorted(agent.offers):
        core.rescind(offer_id)
    core.emit(AgentLeft(agent_id))
    core.log.info("agent.disconnected", agent_id=agent_id)


def check_heartbeats(core: Core) -> None:
    limit = core.config.agent_heartbeat_interval_s * core.config.agent_heartbeat_misses
    for agent in list(core.state.agents.values()):
        if agent.connected and agent.stream is not None and core.now - agent.last_heartbeat > limit:
            core.log.warning(
                "agent.heartbeats_missed",
                agent_id=agent.agent_id,
                silent_s=round(core.now - agent.last_heartbeat, 1),
            )
            disconnected(core, agent.agent_id, agent.stream)


def check_reregistration(core: Core) -> None:
    """Recovered agents that did not come back in time are unreachable; those
    unreachable for ``agent_gone_timeout_s`` are gone."""
    now = core.now
    for agent in core.state.agents.values():
        if agent.reregister_deadline is not None and now >= agent.reregister_deadline:
            agent.reregister_deadline = None
            if not agent.connected and not agent.unreachable:
                agent.unreachable = True
                agent.unreachable_since = now
                policy.record_maintenance(core, agent)
                core.log.warning(
                    "agent.unreachable", agent_id=agent.agent_id, reason="did not re-register after failover"
                )
        if (
            agent.unreachable
            and not agent.gone
            and now - agent.unreachable_since >= core.config.agent_gone_timeout_s
        ):
            agent.gone = True
            liveness.gone(core, agent)
            core.allocator.handle(AgentRemoved(agent.agent_id))
            core.record(AGENTS, agent.agent_id, None)
            core.record(MAINTENANCE, agent.agent_id, None)
            core.log.warning("agent.gone", agent_id=agent.agent_id)


def recover(
    core: Core,
    agents: dict[str, AgentInfo],
    frameworks: dict[str, FrameworkInfo],
    roles: dict[str, RolePolicy],
    maintenance: dict[str, AgentMaintenance],
) -> None:
    """Before serving as a new leader: learn the agents and frameworks the
    registry lists. Agents get ``agent_reregister_timeout_s`` to come back
    with their tasks; frameworks their failover timeout to re-subscribe."""
    now = core.now
    deadline = now + core.config.agent_reregister_timeout_s
    for agent_id, info in agents.items():
        total = info.resources
        record = AgentRecord(agent_id, info, total, now, now, None, connected=False, recovered=True)
        record.reregister_deadline = deadline
        core.state.agents[agent_id] = record
        core.allocator.handle(AgentAdded(agent_id, total))
        core.allocator.handle(AgentDeactivated(agent_id))
    for framework_id, fw_info in frameworks.items():
        fw = FrameworkRecord(framework_id, fw_info, now, None, connected=False, disconnected_at=now)
        core.state.frameworks[framework_id] = fw
        core.add_known_framework(framework_id, fw_info)
        core.allocator.handle(FrameworkDeactivated(framework_id))
    for summary in roles.values():
        policy.restore_role(core, summary)
    for agent_id, record_ in maintenance.items():
        if agent_id in core.state.agents:
            policy.restore_maintenance(core, core.state.agents[agent_id], record_)
    core.log.info("master.recovered", agents=len(agents), frameworks=len(frameworks), roles=len(roles))
