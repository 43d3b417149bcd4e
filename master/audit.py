"""The audit log: every refused call and every operator action, with its principal.

Events go to structlog under the logger ``corral.audit`` (``audit.denied``,
``audit.action``) and, when the master is given ``--audit-log FILE``, as JSON
lines appended to that file as well, so an operator can keep them apart from
the master's chatter (Nomad's audit log and Kubernetes' audit backend do the
same). Writes are small and line-buffered; a failing file is logged once and
does not fail the call it records.
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

import structlog

from corral.master.authz import Decision

log = structlog.get_logger("corral.audit")


class AuditLog:
    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._broken = False
        if path is not None:
            # Opened at start so a bad path is an error the operator sees at once.
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            self._file.flush()

    def _write(self, event: str, fields: dict[str, Any]) -> None:
        if self._file is None or self._broken:
            return
        try:
            self._file.write(json.dumps({"ts": time.time(), "event": event, **fields}, sort_keys=True) + "\n")
        except OSError as e:
            self._broken = True
            log.error("audit.file_failed", path=self.path, error=str(e))

    def denied(self, decision: Decision, call: str, **fields: Any) -> None:
        """A call refused by the policy (or by ownership: ``decision.rule`` is None)."""
        record = {
            "principal": decision.principal,
            "action": decision.action,
            "object": decision.object,
            "call": call,
            "reason": decision.message,
            **fields,
        }
        log.warning("audit.denied", **record)
        self._write("audit.denied", record)

    def action(self, principal: object, call: str, **fields: Any) -> None:
        """An operator action that was carried out (or attempted: ``outcome``)."""
        record = {"principal": str(principal), "call": call, **fields}
        log.info("audit.action", **record)
        self._write("audit.action", record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
