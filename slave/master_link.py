"""The agent's stream to the master: find the leader, dial, register, read, redial.

:class:`MasterLink` owns the gRPC channel and stream and the outgoing queue;
what to send first and what to do with each message are the agent's
(:class:`Peer`); when to dial again and when a heartbeat is due are the
:class:`~corral.slave.session.Session`'s. A session that ends with the master
refusing the agent stops the link for good (:attr:`MasterLink.fatal`); one
that ends with the agent declared gone makes the agent start over as a new
agent; any other end is a lost connection, dialled again after the backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import grpc
import grpc.aio

from corral.detector import LeaderFinder
from corral.proto import agent_pb2, agent_pb2_grpc
from corral.slave.agent_config import AgentRejected
from corral.slave.session import Outcome, Session, outcome
from corral.transport import Credentials, drain, make_channel

AgentMessage = agent_pb2.AgentMessage
MasterMessage = agent_pb2.MasterMessage
Outq = asyncio.Queue[AgentMessage | None]


class Peer(Protocol):
    """What the link needs of the agent."""

    def register_message(self) -> AgentMessage: ...

    def handle(self, message: MasterMessage, outq: Outq) -> None: ...

    async def start_over(self, reason: str) -> None: ...

    def disconnected(self) -> None: ...


class MasterLink:
    def __init__(
        self,
        master: str,
        credentials: Callable[[], Credentials],
        session: Session,
        peer: Peer,
        log: Callable[[], Any],
        *,
        reconnect_max_s: float = 5.0,
    ) -> None:
        self.master = master
        self._credentials = credentials
        self.session = session
        self._peer = peer
        self._log = log
        self.reconnect_max_s = reconnect_max_s
        #: set while registered with a master
        self.registered = asyncio.Event()
        #: why the link stopped for good (the master rejected the agent)
        self.fatal: BaseException | None = None
        #: no more dialling once set
        self.stopping = False
        #: the stream's outgoing queue, once registered on it
        self.outq: Outq | None = None

    def send(self, message: AgentMessage) -> bool:
        """Queue a message to the master; False while not registered."""
        if self.outq is None:
            return False
        self.outq.put_nowait(message)
        return True

    async def run(self) -> None:
        """Dial until stopped or rejected."""
        finder = LeaderFinder(self.master)
        await finder.start()
        try:
            while not self.stopping:
                address = await finder.address(timeout=self.reconnect_max_s)
                registered = False
                if address is not None:
                    registered = await self._connect(finder, address)
                    if self.fatal is not None or self.stopping:
                        return
                else:
                    self._log().warning("agent.no_leader", master=self.master)
                await asyncio.sleep(self.session.next_delay(registered))
        finally:
            await finder.stop()

    async def _connect(self, finder: LeaderFinder, address: str) -> bool:
        """One session with the master at ``address``; True if it was registered."""
        channel = make_channel(address, self._credentials())
        registered = False
        try:
            await finder.session(self._session(channel), address)
        except grpc.aio.AioRpcError as e:
            ended = outcome(e.code().name, e.details() or "")
            if ended is Outcome.REJECTED:
                self.fatal = AgentRejected(e.details() or "registration rejected")
                self._log().error("agent.rejected", reason=e.details())
                return False
            if ended is Outcome.GONE:
                await self._peer.start_over(e.details() or "")
                return False
            finder.failed(e, address)
            self._log().info("agent.connection_lost", code=e.code().name, details=e.details())
        finally:
            registered = self.registered.is_set()
            self.outq = None
            self._peer.disconnected()
            self.session.ended()
            self.registered.clear()
            await channel.close(None)
        return registered

    async def _session(self, channel: grpc.aio.Channel) -> None:
        stub = agent_pb2_grpc.AgentStub(channel)
        outq: Outq = asyncio.Queue()
        outq.put_nowait(self._peer.register_message())

        call = stub.Connect(drain(outq), metadata=self._credentials().metadata())
        try:
            async for message in call:
                if message.WhichOneof("message") == "registered":
                    self.outq = outq  # what the agent sends goes on this stream from now
                try:
                    self._peer.handle(message, outq)
                except Exception:
                    # One bad message must not take the agent (and its tasks) down.
                    self._log().exception("agent.message_failed", kind=message.WhichOneof("message"))
        finally:
            outq.put_nowait(None)
            call.cancel()
