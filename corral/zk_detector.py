"""Following the leading master through ZooKeeper (corral.detector picks
this detector for a ``zk://`` URL; kept apart so that kazoo is imported only
then)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from kazoo.client import KazooState
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import WatchedEvent

from corral.zk import (
    DEFAULT_SESSION_TIMEOUT_S,
    MEMBER_PREFIX,
    ZkUrl,
    decode_info,
    make_client,
    sequence_of,
)

log = structlog.get_logger("corral.detector")


class ZooKeeperDetector:
    """Follow the leader's address through ZooKeeper.

    Robust to what kazoo's ChildrenWatch is not: ZooKeeper being down at start
    (the client keeps connecting in the background), the path being deleted
    and recreated, and a lost connection (the leader is then unknown, not the
    last one seen). A one-shot watch makes changes quick; a slow re-read is
    the safety net.

    >>> d = ZooKeeperDetector(parse_zk_url("zk://127.0.0.1:2181/corral"))  # doctest: +SKIP
    >>> await d.start(); address = await d.wait_leader(10)
    """

    def __init__(self, url: ZkUrl, session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S) -> None:
        self.url = url
        self.client = make_client(url, session_timeout_s)
        self.session_timeout_s = session_timeout_s
        self._leader: dict[str, Any] | None = None
        self._has_leader = asyncio.Event()
        self._change = asyncio.Event()  # replaced after every change
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        self._stopped = False
        self.resync_s = min(1.0, session_timeout_s / 4)

    async def start(self) -> None:
        """Never blocks on ZooKeeper: connecting goes on in the background."""
        self._loop = asyncio.get_running_loop()
        self.client.add_listener(self._state_listener)
        self.client.start_async()
        self._poller = asyncio.create_task(self._poll(), name="detector")

    async def stop(self) -> None:
        self._stopped = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self.client.stop)
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self.client.close)

    def leader(self) -> str | None:
        return str(self._leader["address"]) if self._leader else None

    def leader_info(self) -> dict[str, Any] | None:
        return self._leader

    async def wait_leader(self, timeout: float) -> str:
        """The leader's address, waiting up to ``timeout`` seconds for one."""
        try:
            async with asyncio.timeout(timeout):
                while self._leader is None:
                    await self._has_leader.wait()
        except TimeoutError:
            raise TimeoutError(f"no leading master in {self.url} after {timeout:g}s") from None
        address = self.leader()
        assert address is not None
        return address

    async def wait_moved(self, address: str) -> None:
        """Return once a leader other than ``address`` is elected: a client
        still connected there (a frozen or partitioned old leader) must move."""
        while True:
            leader = self.leader()
            if leader is not None and leader != address:
                return
            await self._change.wait()

    # -- kazoo thread -> loop -------------------------------------------------

    def _state_listener(self, state: str) -> None:
        if self._loop is None or self._stopped:
            return
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            # Cut off from ZooKeeper we cannot know who leads.
            self._loop.call_soon_threadsafe(self._publish, None)
        self._loop.call_soon_threadsafe(self._kick.set)

    def _watch(self, _event: WatchedEvent) -> None:
        if self._loop is not None and not self._stopped:
            self._loop.call_soon_threadsafe(self._kick.set)

    # -- on the loop ----------------------------------------------------------

    async def _poll(self) -> None:
        while not self._stopped:
            if self.client.connected:
                try:
                    info = await asyncio.to_thread(self._read)
                except KazooException as e:
                    log.debug("detector.read_failed", error=repr(e))
                else:
                    self._publish(info)
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.resync_s):
                    await self._kick.wait()

    def _read(self) -> dict[str, Any] | None:
        """(worker thread) The lowest member with readable data, or None."""
        try:
            children = self.client.get_children(self.url.leader_dir, watch=self._watch)
        except NoNodeError:
            self.client.exists(self.url.leader_dir, watch=self._watch)
            return None
        for name in sorted((c for c in children if c.startswith(MEMBER_PREFIX)), key=sequence_of):
            try:
                data, _ = self.client.get(f"{self.url.leader_dir}/{name}")
            except NoNodeError:
                continue
            info = decode_info(data)
            if info is not None and info.get("address"):
                return info
        return None

    def _publish(self, info: dict[str, Any] | None) -> None:
        if info != self._leader:
            log.info("detector.leader", address=info.get("address") if info else None)
        self._leader = info
        if info is None:
            self._has_leader.clear()
        else:
            self._has_leader.set()
        change, self._change = self._change, asyncio.Event()
        change.set()
