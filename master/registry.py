"""The durable registry: which agents were admitted and which frameworks
registered, so a new leader knows whom to wait for.

Two backends behind one interface: :class:`InMemoryRegistry` (standalone: there
is no other master to hand over to) and :class:`ZooKeeperRegistry`. Every
ZooKeeper write is one transaction that also checks the writer's own election
znode, so a deposed leader (its session gone, its znode deleted) cannot change
the registry even if kazoo has silently opened a new session (FACTS.md).

Writes stay off the hot path of task launches: only admitting an agent and
registering or removing a framework write, through :class:`RegistryWriter`,
which applies them in order on a worker thread.

Layout under the cluster path::

    <path>/registry/agents/<agent_id>          AgentInfo (protobuf bytes)
    <path>/registry/frameworks/<framework_id>  FrameworkInfo (protobuf bytes)
    <path>/registry/roles/<role, '/' as %2F>   RoleSummary: weight and quota (protobuf bytes)
    <path>/registry/maintenance/<agent_id>     AgentMaintenance: draining, dynamic reservations
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError, RolledBackError

from corral.errors import CorralError
from corral.master.core.records import (
    AGENTS,
    FRAMEWORKS,
    KINDS,
    MAINTENANCE,
    ROLES,
    role_key,  # noqa: F401 (re-exported: callers name the registry)
)
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.zk import ZkUrl

log = structlog.get_logger(__name__)


class FencedError(CorralError):
    """A registry write was refused because this master no longer leads."""


@dataclass
class RegistryState:
    agents: dict[str, pb.AgentInfo] = field(default_factory=dict)
    frameworks: dict[str, pb.FrameworkInfo] = field(default_factory=dict)
    roles: dict[str, op.RoleSummary] = field(default_factory=dict)
    maintenance: dict[str, op.AgentMaintenance] = field(default_factory=dict)


def _parse(kind: str, data: bytes) -> pb.AgentInfo | pb.FrameworkInfo | op.RoleSummary | op.AgentMaintenance:
    if kind == AGENTS:
        return pb.AgentInfo.FromString(data)
    if kind == FRAMEWORKS:
        return pb.FrameworkInfo.FromString(data)
    if kind == MAINTENANCE:
        return op.AgentMaintenance.FromString(data)
    return op.RoleSummary.FromString(data)


@dataclass(frozen=True)
class Write:
    kind: str  # one of KINDS
    key: str
    data: bytes | None  # None deletes


def _table(state: RegistryState, kind: str) -> dict[str, object]:
    tables: dict[str, dict[str, object]] = {
        AGENTS: state.agents,  # type: ignore[dict-item]
        FRAMEWORKS: state.frameworks,  # type: ignore[dict-item]
        ROLES: state.roles,  # type: ignore[dict-item]
        MAINTENANCE: state.maintenance,  # type: ignore[dict-item]
    }
    return tables[kind]


class Registry(Protocol):
    def load(self) -> RegistryState: ...
    def apply(self, write: Write) -> None: ...


class InMemoryRegistry:
    """Standalone masters: kept only for symmetry and tests."""

    def __init__(self) -> None:
        self.state = RegistryState()

    def load(self) -> RegistryState:
        return RegistryState(
            dict(self.state.agents),
            dict(self.state.frameworks),
            dict(self.state.roles),
            dict(self.state.maintenance),
        )

    def apply(self, write: Write) -> None:
        table = _table(self.state, write.kind)
        if write.data is None:
            table.pop(write.key, None)
        else:
            table[write.key] = _parse(write.kind, write.data)


class ZooKeeperRegistry:
    """Blocking kazoo calls: run them on a worker thread (RegistryWriter does)."""

    def __init__(self, client: KazooClient, url: ZkUrl, fence: Callable[[], str | None]) -> None:
        self.client = client
        self.root = f"{url.path.rstrip('/')}/registry"
        self.fence = fence
        self._ready: set[str] = set()

    def load(self) -> RegistryState:
        state = RegistryState()
        for kind in KINDS:
            base = f"{self.root}/{kind}"
            self.client.ensure_path(base)
            for name in self.client.get_children(base):
                try:
                    data, _ = self.client.get(f"{base}/{name}")
                except NoNodeError:
                    continue
                try:
                    _table(state, kind)[name] = _parse(kind, data)
                except Exception:  # a corrupt entry must not stop a failover
                    log.exception("registry.corrupt_entry", path=f"{base}/{name}")
        return state

    def apply(self, write: Write) -> None:
        fence = self.fence()
        if fence is None:
            raise FencedError("not leading: no election znode to fence the write with")
        base = f"{self.root}/{write.kind}"
        if base not in self._ready:
            self.client.ensure_path(base)
            self._ready.add(base)
        path = f"{base}/{write.key}"
        exists = self.client.exists(path) is not None
        if write.data is None and not exists:
            return
        txn = self.client.transaction()
        # Our election znode must still be there (version 0: it is never
        # modified), or nothing in this transaction happens.
        txn.check(fence, 0)
        if write.data is None:
            txn.delete(path)
        elif exists:
            txn.set_data(path, write.data)
        else:
            txn.create(path, write.data)
        results = txn.commit()
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            return
        if isinstance(results[0], Exception) and not isinstance(results[0], RolledBackError):
            raise FencedError(f"registry write to {path} fenced off: {type(results[0]).__name__}")
        raise KazooException(f"registry write to {path} failed: {results}")


class RegistryWriter:
    """Applies writes in order on a worker thread; a fenced write calls
    ``on_fenced`` (the server steps down) and drops the rest."""

    def __init__(self, registry: Registry, on_fenced: Callable[[], None]) -> None:
        self.registry = registry
        self.on_fenced = on_fenced
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-writer")

    def put(self, kind: str, key: str, data: bytes | None) -> None:
        self._queue.put_nowait(Write(kind, key, data))

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued write is applied (tests, clean shutdown)."""
        async with asyncio.timeout(timeout):
            await self._queue.join()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            write = await self._queue.get()
            try:
                if write is None:
                    return
                await asyncio.to_thread(self.registry.apply, write)
            except FencedError as e:
                log.error("registry.fenced", error=str(e))
                self.on_fenced()
            except (KazooException, OSError) as e:
                # Off the hot path and retried on the next change of the same
                # key; a failover reconciles with the agents anyway.
                log.warning("registry.write_failed", kind=write.kind if write else None, error=repr(e))
            finally:
                self._queue.task_done()
