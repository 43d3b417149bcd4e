"""The servicers' one door to authorization: ask, audit a refusal, answer it.

A refusal is PERMISSION_DENIED naming the principal, the action and the
object (``principal operator:bob may not kill_task owner:framework:a``), and
it is written to the audit log before the call is aborted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from corral.identity import Principal, principal_of
from corral.master.audit import AuditLog
from corral.master.authz import ALLOW_ALL, Authorizer, Decision

Ctx = grpc.aio.ServicerContext


@dataclass
class Guard:
    authorizer: Authorizer = field(default_factory=lambda: Authorizer(ALLOW_ALL))
    audit: AuditLog = field(default_factory=AuditLog)

    def principal(self, context: Ctx[Any, Any]) -> Principal:
        return principal_of(context)

    def allows(self, principal: Principal | str, action: str, obj: str) -> bool:
        """For filtering what a view shows: no audit event per hidden row."""
        return self.authorizer.decide(principal, action, obj).allowed

    def check(
        self, principal: Principal | str, action: str, objects: str | Iterable[str], call: str
    ) -> Decision:
        """Decide, and audit a refusal; the caller answers it."""
        objs = [objects] if isinstance(objects, str) else list(objects)
        decision = self.authorizer.decide_all(principal, action, objs)
        if not decision.allowed:
            self.audit.denied(decision, call)
        return decision

    async def require(
        self,
        context: Ctx[Any, Any],
        principal: Principal | str,
        action: str,
        objects: str | Iterable[str],
        call: str,
    ) -> None:
        """Abort the call with PERMISSION_DENIED unless the policy allows it."""
        decision = self.check(principal, action, objects, call)
        if not decision.allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, decision.message)

    def refused(self, principal: Principal | str, action: str, obj: str, why: str, call: str) -> None:
        """Audit a refusal the policy did not decide (ownership of an id)."""
        self.audit.denied(Decision(False, str(principal), action, obj, note=why), call)
