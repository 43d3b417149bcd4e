"""The simulated network: streams between a client (agent or framework) and a
master, with seeded per-message delay, drops and partitions.

A :class:`Stream` is one gRPC stream: two directions, each FIFO (HTTP/2 keeps
a stream's messages in order; only *when* they arrive varies). Closing it
drops what is in flight and tells both ends, as a broken connection does.

A **partition** cuts a node off: its streams hold their messages (TCP
retransmits); if it heals within ``keepalive_s`` they arrive late, otherwise
keepalives declare the connection dead and both ends see it break, as gRPC's
10 s keepalive with a 5 s timeout does (corral/transport.py). New connections
from or to a partitioned node fail.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: how long a silent connection lives before keepalives break it (10 s + 5 s)
KEEPALIVE_S = 15.0


@dataclass
class _Direction:
    deliver: Callable[[object], None]
    queue: deque[tuple[float, object]] = field(default_factory=deque)
    last_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


class Stream:
    """One bidirectional stream between ``client`` and ``server``.

    The first message to the server goes to ``first`` (the server's accept);
    the server then takes the rest with :meth:`serve` and the client its
    side with :meth:`listen`. ``on_close`` callbacks run once, with the
    stream, when either end or the network closes it.
    """

    def __init__(
        self, net: Network, client: str, server: str, first: Callable[[Stream, object], None]
    ) -> None:
        self.net = net
        self.client = client
        self.server = server
        self.closed = False
        self.close_code = ""
        self.close_message = ""
        self._up = _Direction(lambda message: first(self, message))
        self._down = _Direction(self._ignore)
        self._on_close: list[Callable[[Stream], None]] = []

    @staticmethod
    def _ignore(message: object) -> None:
        pass

    def serve(self, receive: Callable[[object], None]) -> None:
        self._up.deliver = receive

    def listen(self, receive: Callable[[object], None]) -> None:
        self._down.deliver = receive

    def on_close(self, callback: Callable[[Stream], None]) -> None:
        if self.closed:
            callback(self)
        else:
            self._on_close.append(callback)

    @property
    def held(self) -> bool:
        return self.net.partitioned(self.client) or self.net.partitioned(self.server)

    def send_to_server(self, message: object) -> None:
        self._send(self._up, message)

    def send_to_client(self, message: object) -> None:
        self._send(self._down, message)

    def _send(self, d: _Direction, message: object) -> None:
        if self.closed:
            return
        now = self.net.loop.time()
        at = max(d.last_at, now + self.net.delay())
        d.last_at = at
        d.queue.append((at, message))
        self._schedule(d)

    def _schedule(self, d: _Direction) -> None:
        if d.timer is not None or not d.queue or self.closed or self.held:
            return
        d.timer = self.net.loop.call_at(d.queue[0][0], self._deliver, d)

    def _deliver(self, d: _Direction) -> None:
        d.timer = None
        now = self.net.loop.time()
        while d.queue and not self.closed and not self.held and d.queue[0][0] <= now:
            _, message = d.queue.popleft()
            self.net.step(self, message)
            d.deliver(message)
        self._schedule(d)

    def release(self) -> None:
        """The partition healed: what was held goes now, in order."""
        now = self.net.loop.time()
        for d in (self._up, self._down):
            d.queue = deque((max(at, now), m) for at, m in d.queue)
            self._schedule(d)

    def close(self, code: str = "CANCELLED", message: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_message = code, message
        for d in (self._up, self._down):
            d.queue.clear()
            if d.timer is not None:
                d.timer.cancel()
                d.timer = None
        self.net.streams.pop(self, None)
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback(self)


class Network:
    """Every stream of one simulation, the partitions, and the delays."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        step: Callable[[Stream, object], None],
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.step = step
        #: open streams in the order they opened (a dict as an ordered set:
        #: iterating a set of objects follows their addresses, not the seed)
        self.streams: dict[Stream, None] = {}
        #: node -> how many partitions hold it now
        self._cut: dict[str, int] = {}
        #: per-message one-way delay: mostly sub-millisecond, a tail to 50 ms
        self.base_delay_s = 0.0005
        self.slow_delay_s = 0.05
        self.slow_fraction = 0.02

    def delay(self) -> float:
        if self.rng.random() < self.slow_fraction:
            return self.rng.uniform(self.base_delay_s, self.slow_delay_s)
        return self.rng.uniform(self.base_delay_s / 2, self.base_delay_s * 2)

    def cut_nodes(self) -> list[str]:
        return sorted(self._cut)

    def partitioned(self, node: str) -> bool:
        return self._cut.get(node, 0) > 0

    def open(self, client: str, server: str, first: Callable[[Stream, object], None]) -> Stream | None:
        """A new stream whose first message goes to ``first``, or None if
        either end is cut off (the dial times out)."""
        if self.partitioned(client) or self.partitioned(server):
            return None
        stream = Stream(self, client, server, first)
        self.streams[stream] = None
        return stream

    def of(self, node: str) -> list[Stream]:
        """The node's open streams, oldest first."""
        return [s for s in self.streams if node in (s.client, s.server)]

    def drop(self, node: str, code: str = "UNAVAILABLE") -> int:
        """Break every stream of ``node`` (a reset connection); returns how many."""
        streams = self.of(node)
        for s in streams:
            s.close(code, "connection reset")
        return len(streams)

    def cut(self, node: str) -> None:
        """Partition ``node`` from everyone until :meth:`heal`."""
        self._cut[node] = self._cut.get(node, 0) + 1
        held = self.of(node)
        self.loop.call_later(KEEPALIVE_S, self._keepalive_expired, node, held)

    def _keepalive_expired(self, node: str, held: list[Stream]) -> None:
        if not self.partitioned(node):
            return
        for s in held:
            s.close("UNAVAILABLE", "keepalive timed out")

    def heal(self, node: str) -> None:
        n = self._cut.get(node, 0) - 1
        if n > 0:
            self._cut[node] = n
            return
        self._cut.pop(node, None)
        for s in self.of(node):
            s.release()
