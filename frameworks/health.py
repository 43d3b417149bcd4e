"""A task's health check as framework authors write it (the agent runs it;
see ``slave/health.py``).

>>> HealthCheck("http", port=8080, path="/healthz", interval_s=2).to_proto().port
8080
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.proto import messages_pb2 as pb

KINDS = ("command", "tcp", "http")


@dataclass(frozen=True)
class HealthCheck:
    """``kind`` is "command" (exit 0 is healthy), "tcp" (the port accepts a
    connection) or "http" (GET ``path`` answers 200-399). Zero times take the
    agent's defaults (interval 10 s, timeout 20 s, grace 10 s, 3 failures)."""

    kind: str
    command: str = ""
    port: int = 0
    path: str = ""
    interval_s: float = 0.0
    timeout_s: float = 0.0
    grace_period_s: float = 0.0
    consecutive_failures: int = 0
    env: Mapping[str, str] = field(default_factory=dict)

    def to_proto(self) -> pb.HealthCheck:
        kind = {"command": pb.HealthCheck.COMMAND, "tcp": pb.HealthCheck.TCP, "http": pb.HealthCheck.HTTP}
        check = pb.HealthCheck(
            type=kind.get(self.kind, pb.HealthCheck.TYPE_UNSPECIFIED),
            port=self.port,
            path=self.path,
            interval_s=self.interval_s,
            timeout_s=self.timeout_s,
            grace_period_s=self.grace_period_s,
            consecutive_failures=self.consecutive_failures,
        )
        if self.kind == "command":
            check.command.CopyFrom(pb.CommandInfo(shell=True, value=self.command, environment=dict(self.env)))
        return check
