"""The long-running service framework: engine + SQLite store + HTTP API.

``corral framework run service`` (or ``corral local``, embedded, as batch is)
runs one; it records its API address in ``$CORRAL_HOME/service.json`` where
``corral service ...`` looks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from corral.frameworks.hosting import FrameworkHost, find_running
from corral.frameworks.plugins import FrameworkPlugin
from corral.frameworks.service.api import ServiceApiServer
from corral.frameworks.service.engine import ServiceEngine
from corral.frameworks.service.store import ServiceStore

log = structlog.get_logger(__name__)


def find_service() -> dict[str, Any] | None:
    """The running service framework's record (address, master, db, pid), or None."""
    return find_running("service")


class ServiceFramework(FrameworkHost):
    """A service framework that lives until :meth:`stop` (or a signal)."""

    kind = "service"
    engine: ServiceEngine

    def build(self, db: Path | str, listen: str) -> None:
        self.store = ServiceStore(db, epoch=self.epoch)
        self.engine = ServiceEngine(self.store)
        self.api = ServiceApiServer(
            self.engine, listen, state=self._state, credentials=self.credentials, authorizer=self.authorizer
        )

    def close_store(self) -> None:
        self.store.close()


plugin = FrameworkPlugin(
    name="service",
    description="Long-running services: N healthy instances, spreading, rolling updates with rollback",
    run=ServiceFramework.run_plugin,
)
