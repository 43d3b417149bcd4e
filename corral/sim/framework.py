"""Simulated frameworks: the real SDK driver's dispatch and the real batch
engine, over a simulated stream.

:class:`SimDriver` is the SDK's :class:`SchedulerDriver` with its gRPC
session replaced: the subclass overrides only ``run`` (connect, back off
from 50 ms to 5 s, re-subscribe with the same framework id) and drives the
driver through its public session seam (``subscribe_call``, ``receive``,
``session_ended``, ``stopping``), which its gRPC session uses too; it keeps
everything else: the verbs, the dispatch (callbacks one at a time,
acknowledgement after the callback, explicit then implicit reconciliation
after every re-subscription). :class:`BatchFramework` plays
``frameworks/hosting.py``: a :class:`BatchEngine` on a store that survives a
crash (SQLite in memory, kept by the simulation), ticked every 0.2 s, driven
again with the stored framework id after a restart, and made to forget its
framework when the master answers NOT_FOUND.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from corral.errors import SubscribeError
from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.store import Store
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.types import TaskStatus
from corral.proto import scheduler_pb2
from corral.sim.ids import Ids
from corral.sim.invariants import Observer
from corral.sim.network import Network

Call = scheduler_pb2.Call
Event = scheduler_pb2.Event
TICK_S = 0.2
_FATAL = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "PERMISSION_DENIED"}


class SimDriver(SchedulerDriver):
    """The SDK driver on a simulated stream (see the module docstring)."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        name: str,
        node: str,
        net: Network,
        leader: Callable[[], object | None],
        observer: Observer,
        framework_id: str = "",
        failover_timeout_s: float = 7 * 24 * 3600.0,
        partition_aware: bool = True,
    ) -> None:
        super().__init__(
            scheduler,
            name=name,
            master="sim",
            framework_id=framework_id,
            failover_timeout_s=failover_timeout_s,
            partition_aware=partition_aware,
        )
        # Not the machine's: the history must not depend on where it runs.
        self.info.user, self.info.hostname = "sim", node
        self.node = node
        self.net = net
        self.leader = leader
        self.observer = observer

    async def run(self) -> None:
        delay = 0.05
        while not self.stopping:
            if await self._sim_session():
                delay = 0.05
            if self.stopping:
                break
            await asyncio.sleep(delay)
            delay = min(self.reconnect_max_s, delay * 2)
        if self.failure is not None:
            raise self.failure

    async def _sim_session(self) -> bool:
        from corral.sim.masters import MasterNode

        node = self.leader()
        if node is None:
            return False
        assert isinstance(node, MasterNode)
        stream = self.net.open(self.node, node.name, node.accept_framework)
        if stream is None:
            await asyncio.sleep(5.0)  # the dial times out
            return False
        events: asyncio.Queue[object | None] = asyncio.Queue()
        stream.listen(events.put_nowait)
        stream.on_close(lambda _s: events.put_nowait(None))
        stream.send_to_server(self.subscribe_call())
        outq: asyncio.Queue[Call | None] = asyncio.Queue()

        async def send() -> None:
            while (call := await outq.get()) is not None:
                stream.send_to_server(call)

        sender = asyncio.ensure_future(send())
        subscribed = False
        try:
            while (event := await events.get()) is not None:
                assert isinstance(event, Event)
                subscribed = subscribed or event.type == Event.SUBSCRIBED
                self._observe(event)
                if not await self.receive(event, outq):
                    return subscribed
        finally:
            self.session_ended()
            outq.put_nowait(None)
            await asyncio.gather(sender, return_exceptions=True)
            stream.close("CANCELLED", "the framework closed the stream")
        if not subscribed and stream.close_code in _FATAL:
            raise SubscribeError(f"{stream.close_code}: {stream.close_message}")
        if self.tells_disconnected(subscribed):
            await self.scheduler.disconnected(self)
        return subscribed

    def _observe(self, event: Event) -> None:
        """The invariants see every update the framework receives, before its callback."""
        if event.type == Event.UPDATE:
            raw = ([event.update.status] if event.HasField("update") else []) + [
                u.status for u in event.updates
            ]
            for status in raw:
                self.observer.framework_update(self.framework_id, status)

    def acknowledge(self, statuses: Iterable[TaskStatus]) -> None:
        statuses = list(statuses)
        for s in statuses:
            if s.uuid:
                self.observer.framework_acknowledged(self.framework_id, s.uuid)
        super().acknowledge(statuses)


class BatchFramework:
    """The batch framework process: engine + driver + ticks; its store survives a crash."""

    def __init__(
        self,
        name: str,
        net: Network,
        leader: Callable[[], object | None],
        observer: Observer,
        ids: Ids,
        record: Callable[[str], None],
        *,
        partition_aware: bool = True,
    ) -> None:
        self.name = name
        #: without PARTITION_AWARE the master tells it LOST for UNREACHABLE and
        #: kills such a task when its agent returns (Mesos since 1.1)
        self.partition_aware = partition_aware
        self.net = net
        self.leader = leader
        self.observer = observer
        self.ids = ids
        self.record = record
        self.store = Store(":memory:")
        self.engine: BatchEngine | None = None
        self.driver: SimDriver | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: BaseException | None = None
        #: jobs submitted while the process was down wait for it (a client retrying)
        self._queued: list[tuple[Mapping[str, Any], str]] = []

    @property
    def up(self) -> bool:
        return self.engine is not None

    def start(self) -> None:
        loop = self.net.loop
        self.engine = BatchEngine(self.store, clock=loop.time, ids=self.ids.hex)
        for data, job_name in self._queued:
            self.engine.submit(data, default_name=job_name)
        self._queued = []
        self._tasks = [asyncio.ensure_future(self._drive()), asyncio.ensure_future(self._tick())]

    def submit(self, data: Mapping[str, Any], name: str) -> None:
        if self.engine is None:
            self._queued.append((data, name))
        else:
            self.engine.submit(data, default_name=name)

    async def crash(self) -> None:
        """The framework process dies: its stream breaks; the store stays."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for stream in self.net.of(self.name):
            stream.close("UNAVAILABLE", "the framework died")
        self.engine, self.driver = None, None

    async def _drive(self) -> None:
        engine = self.engine
        assert engine is not None
        while True:
            self.driver = SimDriver(
                engine,
                name=self.name,
                node=self.name,
                net=self.net,
                leader=self.leader,
                observer=self.observer,
                framework_id=engine.framework_id,
                partition_aware=self.partition_aware,
            )
            try:
                await self.driver.run()
                return
            except SubscribeError as e:
                if str(e).startswith("NOT_FOUND") and engine.framework_id:
                    self.record(f"framework.forgotten {self.name}")
                    engine.forget_framework()
                    continue
                self.failure = e
                return
            except Exception as e:  # a bug in the engine: the run reports it
                self.failure = e
                return

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if self.engine is not None:
                try:
                    self.engine.tick()
                except Exception as e:  # a bug in the engine: the run reports it
                    self.failure = e
                    return

    def unfinished_jobs(self) -> list[str]:
        if self.engine is None:
            return ["(framework down)"]
        return sorted(j.id for j in self.engine.jobs.values() if j.state == "RUNNING")
