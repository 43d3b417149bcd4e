"""A network partition for tests: a TCP proxy on loopback that can be cut
and healed, so a framework (or any client) loses its master the way a
network would, and comes back through its own reconnect logic.

    async with partitionable(cluster.master_address) as link:
        async with framework(link.address, failover_timeout_s=60) as (driver, rec):
            ...
            await link.cut()      # every connection through it is closed, new ones refused
            ...
            link.heal()           # connections go through again

Bytes are forwarded as they are (plaintext or TLS alike); nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

#: bytes read per forward step
_CHUNK = 1 << 16


class Link:
    """A proxy from ``address`` (its own loopback port) to ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.address = ""
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def cut(self) -> None:
        """Close every connection through the link and refuse new ones until :meth:`heal`."""
        self.cut_off = True
        for w in list(self._writers):
            w.close()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def heal(self) -> None:
        """Let connections through again (clients reconnect by themselves)."""
        self.cut_off = False

    async def stop(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        host, port = self.target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()


@contextlib.asynccontextmanager
async def partitionable(target: str) -> AsyncIterator[Link]:
    """A :class:`Link` to ``target`` (HOST:PORT), stopped on exit."""
    link = Link(target)
    await link.start()
    try:
        yield link
    finally:
        await link.stop()
