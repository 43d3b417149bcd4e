"""The long-running batch framework: engine + SQLite store + HTTP API.

``corral framework run batch`` (or ``corral local``, embedded) runs one. It
subscribes with the framework id kept in its database, so after a restart
(or a master failover) the master hands back its tasks and the updates it
missed; it records its API address in ``$CORRAL_HOME/batch.json`` where the
CLI looks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from corral.frameworks.batch.api import ApiServer
from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.store import Store
from corral.frameworks.hosting import FrameworkHost, find_running
from corral.frameworks.hosting import discovery_file as _discovery_file
from corral.frameworks.plugins import FrameworkPlugin

log = structlog.get_logger(__name__)


def discovery_file() -> Path:
    """Where a running service records its address (``$CORRAL_HOME/batch.json``)."""
    return _discovery_file("batch")


def find_service() -> dict[str, Any] | None:
    """The running service's record (address, master, db, pid), or None."""
    return find_running("batch")


class BatchService(FrameworkHost):
    """A batch framework that lives until :meth:`stop` (or a signal)."""

    kind = "batch"
    engine: BatchEngine

    def build(self, db: Path | str, listen: str) -> None:
        self.store = Store(db, epoch=self.epoch)
        self.engine = BatchEngine(self.store)
        self.api = ApiServer(
            self.engine, listen, state=self._state, credentials=self.credentials, authorizer=self.authorizer
        )

    def close_store(self) -> None:
        self.store.close()


plugin = FrameworkPlugin(
    name="batch",
    description="Batch jobs with retries, dependencies and cron schedules, kept in SQLite",
    run=BatchService.run_plugin,
)
