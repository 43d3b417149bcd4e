"""Finding the leading master, for agents, the framework SDK and the CLI.

``host:port`` gives a :class:`StaticDetector`; ``zk://hosts/path`` a
:class:`corral.zk_detector.ZooKeeperDetector` that reads the same election
znodes the masters write and follows every change of leader. That one lives
in its own module, imported only for a ``zk://`` URL, so that a client of a
single master (``corral run`` against ``corral local``) never loads kazoo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

import grpc
import structlog

from corral.zk import DEFAULT_SESSION_TIMEOUT_S, is_zk_url, parse_zk_url

log = structlog.get_logger(__name__)

#: Trailing metadata key in which a non-leading master names the leader.
LEADER_METADATA_KEY = "corral-leader"


class MasterDetector(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def leader(self) -> str | None: ...
    async def wait_leader(self, timeout: float) -> str: ...
    async def wait_moved(self, address: str) -> None: ...


class StaticDetector:
    """A fixed address: standalone masters and tests."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def leader(self) -> str | None:
        return self.address

    async def wait_leader(self, timeout: float) -> str:
        return self.address

    async def wait_moved(self, address: str) -> None:
        """A fixed address never moves: wait forever (until cancelled)."""
        await asyncio.Event().wait()


def detector_for(master: str, session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S) -> MasterDetector:
    """``zk://...`` follows the leader through ZooKeeper; anything else is an address."""
    if is_zk_url(master):
        from corral.zk_detector import ZooKeeperDetector

        return ZooKeeperDetector(parse_zk_url(master), session_timeout_s)
    return StaticDetector(master)


def leader_from_error(error: grpc.RpcError) -> str | None:
    """The leader's address a non-leading master named, if any."""
    trailing = getattr(error, "trailing_metadata", None)
    metadata: Any = trailing() if callable(trailing) else None
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == LEADER_METADATA_KEY:
            return value if isinstance(value, str) else bytes(value).decode()
    return None


class LeaderFinder:
    """Where a client dials next: the master a non-leading one redirected us
    to, else the detector's current leader. Used by agents and the SDK."""

    def __init__(self, master: str, session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S) -> None:
        self.detector = detector_for(master, session_timeout_s)
        self._redirect: str | None = None

    async def start(self) -> None:
        await self.detector.start()

    async def stop(self) -> None:
        await self.detector.stop()

    async def address(self, timeout: float) -> str | None:
        """The address to dial, or None if no leader is known within ``timeout``."""
        if self._redirect is not None:
            address, self._redirect = self._redirect, None
            return address
        try:
            return await self.detector.wait_leader(timeout)
        except TimeoutError:
            return None

    async def session(self, session: Coroutine[Any, Any, None], address: str) -> None:
        """Run a client's session with ``address`` until it ends, or until
        another master is elected: a partitioned or frozen old leader may keep
        the stream open long after it stopped leading."""
        run = asyncio.ensure_future(session)
        moved = asyncio.ensure_future(self.detector.wait_moved(address))
        try:
            await asyncio.wait({run, moved}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (run, moved):
                if not t.done():
                    t.cancel()
            await asyncio.gather(run, moved, return_exceptions=True)
        if run.done() and not run.cancelled() and run.exception() is not None:
            raise run.exception()  # type: ignore[misc]
        if moved.done() and not moved.cancelled():
            log.info("detector.leader_moved", away_from=address, to=self.detector.leader())

    def failed(self, error: grpc.RpcError, address: str = "") -> None:
        """Remember a redirect carried by an UNAVAILABLE answer from ``address``."""
        code = error.code() if callable(getattr(error, "code", None)) else None
        if code == grpc.StatusCode.UNAVAILABLE:
            leader = leader_from_error(error)
            self._redirect = leader if leader != address else None
