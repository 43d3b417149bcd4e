"""A stream's outgoing queue, owned by the runtime (the core names streams by id)."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    """A stream's outgoing queue. ``send`` never blocks or fails: a message to a
    closed outbox is dropped, which is safe because every update that matters
    is retried by the agent until acknowledged."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self.closed = False

    def send(self, message: T) -> None:
        if not self.closed:
            self._queue.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)

    def pending(self) -> list[T]:
        """Take what is queued now, without waiting (tests and the simulation)."""
        out: list[T] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                out.append(item)
        return out

    async def get_batch(self, limit: int = 256) -> list[T] | None:
        """Wait for at least one message; return everything queued (up to
        ``limit``), or None once closed."""
        first = await self._queue.get()
        if first is None:
            return None
        out = [first]
        while len(out) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)
                break
            out.append(item)
        return out
