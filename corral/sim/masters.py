"""Masters in the simulation: the real :class:`Master` core behind simulated
streams, an election, and a registry in memory with ZooKeeper's fencing.

:class:`MasterNode` plays ``master/server.py`` and the servicers of
``master/services/``: it accepts streams, validates the first message, calls
the same public methods (``register_agent``, ``agent_status_updates``,
``agent_disconnected``, ``subscribe``, ``framework_disconnected``, and the
scheduler calls through the servicer's own ``dispatch_call``), and
moves messages between each connection's :class:`Outbox` and its stream.

:class:`Election` and :class:`FencedRegistry` keep the HA rules: one leader
per epoch; a write from a master whose epoch is over is refused and makes it
step down (``master/registry.py`` checks the writer's election znode in the
same transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from corral.errors import CallError
from corral.master.master import Master, MasterConfig
from corral.master.registry import InMemoryRegistry, RegistryWriter, Write
from corral.master.services.scheduler import coalesce, dispatch_call
from corral.master.streams import Outbox
from corral.master.validation import validate_agent_info, validate_framework_info
from corral.proto import agent_pb2, scheduler_pb2
from corral.sim.ids import Ids
from corral.sim.network import Network, Stream

log = structlog.get_logger(__name__)
AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage
Call = scheduler_pb2.Call
Event = scheduler_pb2.Event


class FencedRegistry:
    """The registry every master writes to; only the current epoch's leader may."""

    def __init__(self) -> None:
        self.store = InMemoryRegistry()
        self.epoch = 0
        self.fenced_writes = 0


class FencedWriter(RegistryWriter):
    """A master's registry writer: applies at once if its epoch still leads,
    else refuses and calls ``on_fenced`` (the master steps down)."""

    def __init__(self, registry: FencedRegistry, epoch: int, on_fenced: Callable[[], None]) -> None:
        super().__init__(registry.store, on_fenced)
        self.shared = registry
        self.epoch = epoch

    def put(self, kind: str, key: str, data: bytes | None) -> None:
        if self.shared.epoch != self.epoch:
            self.shared.fenced_writes += 1
            # The real writer learns it on its worker thread, after the call returned.
            asyncio.get_running_loop().call_soon(self.on_fenced)
            return
        self.shared.store.apply(Write(kind, key, data))


class MasterNode:
    """One master process: leads (runs a :class:`Master`) or not."""

    def __init__(
        self,
        name: str,
        net: Network,
        registry: FencedRegistry,
        config: MasterConfig,
        ids: Ids,
        record: Callable[[str], None],
    ) -> None:
        self.name = name
        self.net = net
        self.registry = registry
        self.config = config
        self.ids = ids
        self.record = record
        self.master: Master | None = None
        self.epoch = -1
        self.alive = True
        self._pumps: dict[asyncio.Task[None], None] = {}
        self._stopping: asyncio.Task[None] | None = None

    # -- leadership -------------------------------------------------------------

    def lead(self, epoch: int) -> None:
        """Elected: load the registry and start a fresh core, as server.py does."""
        loop = asyncio.get_running_loop()
        master = Master(
            self.config,
            address=self.name,
            clock=loop.time,
            master_id=f"{self.name}-e{epoch}",
            ids=self.ids.prefixed,
        )
        master.recover(self.registry.store.load())
        master.registry = FencedWriter(self.registry, epoch, self.step_down)
        master.start()
        self.master, self.epoch = master, epoch
        self.record(f"master.lead {self.name} epoch={epoch}")

    def step_down(self) -> None:
        """Not leading any more: stop the core, which closes every stream."""
        master, self.master = self.master, None
        if master is None:
            return
        self.record(f"master.step_down {self.name} epoch={self.epoch}")
        for stream in self.net.of(self.name):
            stream.close("UNAVAILABLE", "the master stepped down")
        self._stopping = asyncio.ensure_future(master.stop())

    async def stop(self) -> None:
        self.step_down()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._stopping is not None:
            await self._stopping

    # -- agents -----------------------------------------------------------------

    def accept_agent(self, stream: Stream, first: object) -> None:
        """The first message of ``Agent.Connect`` (as master/services/agent.py)."""
        assert isinstance(first, AgentMessage)
        master = self.master
        if master is None:
            stream.close("UNAVAILABLE", "this master is not leading")
            return
        if first.WhichOneof("message") != "register":
            stream.close("FAILED_PRECONDITION", "the first message must be register")
            return
        reg = first.register
        errors, total = validate_agent_info(reg.agent_info)
        if errors:
            stream.close("INVALID_ARGUMENT", "; ".join(errors))
            return
        outbox: Outbox[object] = Outbox()
        try:
            agent_id = master.register_agent(
                reg.agent_info, total, list(reg.tasks), list(reg.frameworks), outbox, list(reg.task_infos)
            )
        except CallError as e:
            stream.close(e.code, e.message)
            return

        def receive(message: object) -> None:
            assert isinstance(message, AgentMessage)
            if self.master is not master:
                return
            master.agent_heartbeat(agent_id)
            kind = message.WhichOneof("message")
            if kind == "status_updates":
                master.agent_status_updates(agent_id, list(message.status_updates.statuses))
            elif kind == "register":
                outbox.send(
                    MasterMessage(error=MasterMessage.Error(code="FAILED_PRECONDITION", message="registered"))
                )

        stream.serve(receive)
        stream.on_close(lambda _s: outbox.close())
        self._pump(outbox, stream, lambda: master.agent_disconnected(agent_id, outbox), lambda b: b)

    # -- frameworks -------------------------------------------------------------

    def accept_framework(self, stream: Stream, first: object) -> None:
        """The first call of ``Scheduler.Subscribe`` (as master/services/scheduler.py)."""
        assert isinstance(first, Call)
        master = self.master
        if master is None:
            stream.close("UNAVAILABLE", "this master is not leading")
            return
        if first.type != Call.SUBSCRIBE:
            stream.close("FAILED_PRECONDITION", "the first call must be SUBSCRIBE")
            return
        info = first.subscribe.framework_info
        errors = validate_framework_info(info)
        if errors:
            stream.close("INVALID_ARGUMENT", "; ".join(errors))
            return
        outbox: Outbox[object] = Outbox()
        try:
            fw = master.subscribe(info, outbox, "")
        except CallError as e:
            stream.close(e.code, e.message)
            return
        framework_id = fw.framework_id

        def receive(message: object) -> None:
            assert isinstance(message, Call)
            if self.master is not master:
                return
            try:
                dispatch_call(master, framework_id, message)
            except CallError as e:
                error = Event.Error(code=e.code, message=f"{Call.Type.Name(message.type)}: {e.message}")
                outbox.send(Event(type=Event.ERROR, error=error))

        stream.serve(receive)
        stream.on_close(lambda _s: outbox.close())
        self._pump(outbox, stream, lambda: master.framework_disconnected(framework_id, outbox), coalesce)

    # -- streams ----------------------------------------------------------------

    def _pump(
        self,
        outbox: Outbox[object],
        stream: Stream,
        disconnected: Callable[[], None],
        shape: Callable[[list[object]], list[object]] | Callable[[list[object]], list[Event]],
    ) -> None:
        """The servicer's writer loop: outbox -> stream until either closes."""

        async def pump() -> None:
            try:
                while True:
                    batch = await outbox.get_batch()
                    if batch is None:
                        break
                    for message in shape(batch):
                        stream.send_to_client(message)
            finally:
                stream.close("OK", "the master closed the stream")
                disconnected()

        task = asyncio.ensure_future(pump())
        self._pumps[task] = None
        task.add_done_callback(lambda t: self._pumps.pop(t, None))


class Election:
    """Who leads, by epoch. A new leader is elected ``session_s`` after the
    old one's session ends (ZooKeeper's session timeout)."""

    def __init__(self, nodes: list[MasterNode]) -> None:
        self.nodes = nodes
        self.leader: MasterNode | None = None
        self.registry = nodes[0].registry

    def elect(self, node: MasterNode) -> None:
        self.registry.epoch += 1
        self.leader = node
        node.lead(self.registry.epoch)

    def depose(self) -> MasterNode | None:
        """The leader's session is gone: the epoch ends (its writes are fenced
        from now on); it keeps serving until it notices."""
        old, self.leader = self.leader, None
        self.registry.epoch += 1
        return old
