"""What a transition of the master core asks the runtime to do.

Transitions never touch a stream, a timer, the registry or a log sink: they
return these frozen values, in order, and ``master/master.py`` carries them
out (``Master._carry_out``). The messages are the core's own values
(``messages.py``); the runtime turns them into the wire's in ``master/wire.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.master.core.domain import AgentInfo, AgentMaintenance, FrameworkInfo, RolePolicy
from corral.master.core.messages import AgentCommand, FrameworkEvent
from corral.master.core.records import StreamId


@dataclass(frozen=True)
class SendToFramework:
    """Queue ``event`` on a framework's stream (dropped if it has closed)."""

    stream: StreamId
    event: FrameworkEvent


@dataclass(frozen=True)
class SendToAgent:
    """Queue ``message`` on an agent's stream (dropped if it has closed)."""

    stream: StreamId
    message: AgentCommand


@dataclass(frozen=True)
class CloseStream:
    """End a stream: its writer stops and the peer sees it close."""

    stream: StreamId


#: what a registry record holds, by kind (records.py: AGENTS, FRAMEWORKS, ROLES, MAINTENANCE)
RegistryRecord = AgentInfo | FrameworkInfo | RolePolicy | AgentMaintenance


@dataclass(frozen=True)
class WriteRegistry:
    """Persist (``data``) or delete (None) one registry record, in order; the
    runtime serializes it (``master/wire.py``)."""

    kind: str
    key: str
    data: RegistryRecord | None


@dataclass(frozen=True)
class AllocateSoon:
    """Something freed resources: run an allocation cycle within
    ``allocation_batch_s`` rather than at the next interval."""


@dataclass(frozen=True)
class AgentLeft:
    """An agent's stream is gone: questions pending on it (sandbox reads,
    usage) fail now rather than at their deadline."""

    agent_id: str


class Decision(Protocol):
    """An authorization answer (``master/authz.py``'s ``Decision``)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class AuditDenied:
    """A refusal by the ACL policy, for the audit log."""

    decision: Decision
    call: str
    fields: dict[str, Any] = field(default_factory=dict)


Effect = SendToFramework | SendToAgent | CloseStream | WriteRegistry | AllocateSoon | AgentLeft | AuditDenied
