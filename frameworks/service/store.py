"""The service framework's durable state: the batch framework's SQLite store
(WAL, upserts, transactions) with its own tables.

A service row holds its target version and the last version that fully
deployed (the rollback target); every version's spec is kept; every instance
(one task at the master) is written before its launch is sent and its end
before the update is acknowledged, as batch attempts are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.frameworks.batch.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, stable_version INTEGER NOT NULL,
    instances INTEGER NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL DEFAULT '',
    next_seq INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0, deploy_failures INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, number INTEGER NOT NULL, spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, version INTEGER NOT NULL, seq INTEGER NOT NULL,
    agent_id TEXT NOT NULL, hostname TEXT NOT NULL, attributes TEXT NOT NULL DEFAULT '{}',
    ports TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, healthy INTEGER,
    launched_at REAL NOT NULL, healthy_at REAL NOT NULL DEFAULT 0, ended_at REAL NOT NULL DEFAULT 0,
    killing INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_service ON instances (service);
"""


@dataclass
class ServiceRow:
    name: str
    #: the version being deployed or running
    version: int
    #: the last version that reached its instance count healthy (0: none yet)
    stable_version: int
    instances: int
    #: DEPLOYING, RUNNING, ROLLING_BACK, DELETING
    state: str
    created_at: float
    updated_at: float
    message: str = ""
    #: the next instance's number
    next_seq: int = 0
    #: failures in a row (restart backoff)
    failures: int = 0
    not_before: float = 0.0
    #: failures of the version being deployed (rollback)
    deploy_failures: int = 0
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.name


@dataclass
class VersionRow:
    id: str  # NAME.vN
    service: str
    number: int
    spec: str  # the service table as JSON
    created_at: float


@dataclass
class InstanceRow:
    id: str  # the task id: NAME.SEQ.vVERSION
    service: str
    version: int
    seq: int
    agent_id: str
    hostname: str
    state: str  # a TaskState name
    launched_at: float
    attributes: str = "{}"
    ports: str = ""
    healthy: bool | None = None
    healthy_at: float = 0.0
    ended_at: float = 0.0
    #: the framework asked for it to stop (not a failure when it does)
    killing: bool = False
    message: str = ""


@dataclass
class Snapshot:
    framework_id: str = ""
    services: list[ServiceRow] = field(default_factory=list)
    versions: list[VersionRow] = field(default_factory=list)
    instances: list[InstanceRow] = field(default_factory=list)


class ServiceStore(Store):
    """One database (SQLite or PostgreSQL, as the batch store) of services, versions and instances."""

    schema = SCHEMA
    tables: dict[type[Any], str] = {ServiceRow: "services", VersionRow: "versions", InstanceRow: "instances"}

    def load_services(self) -> Snapshot:
        """Read everything back."""
        snap = Snapshot()
        snap.framework_id = self.framework_id()
        snap.services = self._rows(ServiceRow, "ORDER BY created_at, name")
        snap.versions = self._rows(VersionRow, "ORDER BY service, number")
        snap.instances = self._rows(InstanceRow, f"ORDER BY {self.db.order_column}")
        for i in snap.instances:
            i.healthy = None if i.healthy is None else bool(i.healthy)
            i.killing = bool(i.killing)
        return snap

    def delete_service(self, name: str) -> None:
        """Forget a service, its versions and its instances."""
        for table in ("instances", "versions"):
            self.execute(f"DELETE FROM {table} WHERE service = ?", (name,))
        self.execute("DELETE FROM services WHERE id = ?", (name,))
