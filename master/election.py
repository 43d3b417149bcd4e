"""Leader election: who is the master right now.

Two backends behind one small interface, so nothing else in the master knows
which runs: :class:`StandaloneElection` (leads at once, no ZooKeeper) and
:class:`ZooKeeperElection` (ephemeral sequential znodes, lowest sequence
leads, each contender watches only its predecessor: no herd effect).

A leader that loses its ZooKeeper connection stops leading at once (the
``on_change`` callback with False): while disconnected it cannot know whether
its session, and so its leadership, still exists. When the connection returns
with the same session it may lead again; after the session is lost it
contends anew with a new znode.

A master started while ZooKeeper has no quorum keeps trying to connect, as a
Mesos master does (0.5, 1, 2 ... s apart, at most :data:`CONNECT_BACKOFF_MAX_S`,
logging ``election.zk_unreachable`` with the hosts each time), serving gRPC
meanwhile (it answers that it does not lead); ``connect_timeout_s`` > 0 makes
it give up after that long with :class:`ZooKeeperUnreachable`, one sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from kazoo.client import KazooState
from kazoo.exceptions import KazooException, NoAuthError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import WatchedEvent
from kazoo.security import Permissions

from corral.errors import CorralError
from corral.zk import (
    DEFAULT_SESSION_TIMEOUT_S,
    MEMBER_PREFIX,
    ZkAccessDenied,
    ZkCredentials,
    ZkUrl,
    encode_info,
    make_client,
    secure_tree,
    sequence_of,
)

log = structlog.get_logger(__name__)

OnChange = Callable[[bool], None]
#: the longest wait between two attempts to reach ZooKeeper at start
CONNECT_BACKOFF_MAX_S = 10.0
_CONNECT_BACKOFF_FIRST_S = 0.5


class ZooKeeperUnreachable(CorralError):
    """ZooKeeper could not be reached within the master's connect timeout."""


class Election(Protocol):
    leading: bool

    async def start(self, on_change: OnChange) -> None: ...
    async def stop(self) -> None: ...


class StandaloneElection:
    """The only master: leads from the start."""

    def __init__(self) -> None:
        self.leading = False

    async def start(self, on_change: OnChange) -> None:
        self.leading = True
        on_change(True)

    async def stop(self) -> None:
        self.leading = False


class ZooKeeperElection:
    """Contend for leadership under ``<url.path>/leader/``.

    ``info`` (the MasterInfo as a dict) is the znode's data, which detectors
    read to find the leader's address. Kazoo calls back on its own thread;
    every decision is taken on the asyncio loop.
    """

    def __init__(
        self,
        url: ZkUrl,
        info: dict[str, Any],
        session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S,
        connect_timeout_s: float = 0.0,
        credentials: ZkCredentials | None = None,
        registry_kinds: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        #: with these the znodes are the masters' own (corral/zk.py, "Access")
        self.credentials = credentials
        self.registry_kinds = registry_kinds
        self.connect_timeout_s = connect_timeout_s  # 0: keep trying
        self.info = info
        self.session_timeout_s = session_timeout_s
        self.client = make_client(url, session_timeout_s, credentials)
        self.leading = False
        self.znode: str | None = None  # full path of our member znode
        self._on_change: OnChange = lambda _: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._connected = True
        self._check_lock = asyncio.Lock()
        self._checks: set[asyncio.Task[None]] = set()
        self._generation = 0

    async def start(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self.client.add_listener(self._state_listener)
        await self._connect()
        if self._stopped:
            return  # stopped while connecting: the client is closed
        await asyncio.to_thread(self._prepare)
        await self._contend()

    def _prepare(self) -> None:
        """(blocking) The leader's folder, and with credentials the ACLs of
        the tree (an open one made by masters without credentials is taken
        over). Raises ZkAccessDenied when other credentials own it."""
        if self.credentials is None:
            refused = ZkAccessDenied(
                f"ZooKeeper refused this master {self.url.leader_dir}: masters with credentials own "
                "it (give this one the same --zk-credentials file)"
            )
            try:
                self.client.ensure_path(self.url.leader_dir)
                acl, _ = self.client.get_acls(self.url.leader_dir)
            except NoAuthError:
                raise refused from None
            # A folder that exists answers ensure_path without a check; only
            # its ACL tells whether we may add our member znode to it.
            if not any(a.id.scheme == "world" and a.perms & Permissions.CREATE for a in acl):
                raise refused
            return
        secure_tree(self.client, self.url, self.credentials, self.registry_kinds)
        self.client.ensure_path(self.url.leader_dir, acl=self.credentials.public_acl())

    async def _connect(self) -> None:
        """Connect to ZooKeeper, retrying with backoff until it answers (or the
        connect timeout passes). Each attempt waits up to a session timeout."""
        started = time.monotonic()
        delay = _CONNECT_BACKOFF_FIRST_S
        attempt = 0
        while not self._stopped:
            attempt += 1
            try:
                await asyncio.to_thread(self.client.start, self.session_timeout_s)
            except KazooTimeoutError:
                waited = time.monotonic() - started
                if self.connect_timeout_s > 0 and waited >= self.connect_timeout_s:
                    raise ZooKeeperUnreachable(
                        f"cannot reach ZooKeeper at {self.url.hosts} after {waited:.0f}s "
                        f"(--zk-connect-timeout {self.connect_timeout_s:g})"
                    ) from None
                log.warning(
                    "election.zk_unreachable",
                    hosts=self.url.hosts,
                    attempt=attempt,
                    waited_s=round(waited, 1),
                    retry_in_s=delay,
                )
                if self.connect_timeout_s > 0:
                    delay = max(0.0, min(delay, started + self.connect_timeout_s - time.monotonic()))
                await asyncio.sleep(delay)
                delay = min(delay * 2 or _CONNECT_BACKOFF_FIRST_S, CONNECT_BACKOFF_MAX_S)
                continue
            if attempt > 1:
                log.info("election.zk_connected", hosts=self.url.hosts, attempts=attempt)
            return

    async def stop(self) -> None:
        """Leave the election at once: closing the session deletes our znode,
        so a successor takes over in milliseconds instead of a session timeout."""
        self._stopped = True
        self._set_leading(False)
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self.client.stop)
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self.client.close)

    # -- kazoo thread -> loop -------------------------------------------------

    def _state_listener(self, state: str) -> None:
        if self._loop is not None and not self._stopped:
            self._loop.call_soon_threadsafe(self._on_state, state)

    def _watch(self, _event: WatchedEvent) -> None:
        if self._loop is not None and not self._stopped:
            self._loop.call_soon_threadsafe(self._schedule_check)

    # -- on the loop ----------------------------------------------------------

    def _on_state(self, state: str) -> None:
        if state in (KazooState.SUSPENDED, KazooState.LOST):
            # Decisions taken before this point are stale (see _from_thread).
            self._generation += 1
        if state == KazooState.SUSPENDED:
            self._connected = False
            if self.leading:
                log.warning("election.suspended", znode=self.znode)
            self._set_leading(False)
        elif state == KazooState.LOST:
            self._connected = False
            self.znode = None  # the server deleted it with the session
            log.warning("election.session_lost")
            self._set_leading(False)
        elif state == KazooState.CONNECTED:
            self._connected = True
            self._schedule_check()

    def _schedule_check(self) -> None:
        if not self._stopped:
            task = asyncio.ensure_future(self._contend())
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _contend(self) -> None:
        delay = 0.1
        while True:
            async with self._check_lock:
                if self._stopped or not self._connected:
                    return
                generation = self._generation
                try:
                    await asyncio.to_thread(self._contend_blocking, generation)
                    return
                except NoAuthError:
                    # The tree's owners changed under us (another master took
                    # it over with credentials this one does not have).
                    log.error("election.access_denied", path=self.url.leader_dir, hint="--zk-credentials")
                    self._set_leading(False)
                except KazooException as e:
                    log.warning("election.check_failed", error=repr(e))
                    self._set_leading(False)
            # Still connected but it failed (e.g. the path was deleted): retry.
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    def _contend_blocking(self, generation: int) -> None:
        """(kazoo calls, run in a worker thread) Create our znode if needed,
        then lead (watching our own znode) or watch the predecessor."""
        client = self.client
        if self.znode is None or client.exists(self.znode) is None:
            # Our znode is gone (deleted by hand, or with a session): whatever
            # we believed, we do not lead until the new one is first.
            self._from_thread(False, generation)
            self.znode = client.create(
                f"{self.url.leader_dir}/{MEMBER_PREFIX}",
                encode_info(self.info),
                # readable by anyone: detectors find the leader without credentials
                acl=None if self.credentials is None else self.credentials.public_acl(),
                ephemeral=True,
                sequence=True,
                makepath=True,
            )
        mine = self.znode.rsplit("/", 1)[1]
        while True:
            members = sorted(
                (c for c in client.get_children(self.url.leader_dir) if c.startswith(MEMBER_PREFIX)),
                key=sequence_of,
            )
            if mine not in members:
                raise NoNodeError(self.znode)
            index = members.index(mine)
            if index == 0:
                # A leader watches its own znode: if it disappears while the
                # session lives, another contender already took over.
                if client.exists(self.znode, watch=self._watch) is None:
                    continue
                self._from_thread(True, generation)
                return
            predecessor = f"{self.url.leader_dir}/{members[index - 1]}"
            self._from_thread(False, generation)
            # Watch only the one just ahead of us; if it vanished meanwhile, look again.
            if client.exists(predecessor, watch=self._watch) is not None:
                return

    def _from_thread(self, leading: bool, generation: int) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._decide, leading, generation)

    def _decide(self, leading: bool, generation: int) -> None:
        # A "you lead" computed before a suspension or a lost session must
        # not land after it.
        if leading and generation != self._generation:
            return
        self._set_leading(leading)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading or (leading and (self._stopped or not self._connected)):
            return
        self.leading = leading
        log.info("election.leading" if leading else "election.not_leading", znode=self.znode)
        self._on_change(leading)
