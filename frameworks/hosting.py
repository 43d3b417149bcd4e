"""Running a bundled framework as a long-lived service: an engine (a
:class:`~corral.frameworks.Scheduler` with durable state), its HTTP API and a
driver that re-subscribes with the framework id kept in the engine's store.

The batch and service frameworks are both this shape; each is a subclass that
makes its store, engine and API. It records its API address in
``$CORRAL_HOME/<kind>.json`` where the CLI looks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any, Protocol

import structlog

from corral.cli.discovery import state_dir
from corral.errors import SubscribeError
from corral.frameworks.agents import AgentWatch
from corral.frameworks.batch.sql import describe, is_postgres_url
from corral.frameworks.batch.store import FencedError, Store, take_lead
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.http_api import JsonServer
from corral.frameworks.placement import Candidate
from corral.frameworks.plugins import PluginContext, PluginError
from corral.frameworks.scheduler import Scheduler
from corral.master.authz import Authorizer
from corral.master.election import ZooKeeperElection
from corral.transport import Credentials
from corral.zk import DEFAULT_SESSION_TIMEOUT_S, parse_zk_url

log = structlog.get_logger(__name__)
TICK_S = 0.2
#: a week: how long the master keeps our tasks while the service is down
DEFAULT_FAILOVER_TIMEOUT_S = 7 * 24 * 3600.0


class Engine(Protocol):
    """What a hosted engine offers besides the Scheduler callbacks."""

    framework_id: str

    def tick(self) -> None: ...

    def forget_framework(self) -> None: ...

    def set_agents(self, agents: list[Candidate]) -> None: ...


def discovery_file(kind: str) -> Path:
    """Where a running service of this kind records its address."""
    return state_dir() / f"{kind}.json"


def find_running(kind: str) -> dict[str, Any] | None:
    """The running service's record (address, master, db, pid), or None."""
    try:
        data = json.loads(discovery_file(kind).read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(data)


CONFIG_KEYS = frozenset({"db", "listen", "name", "failover_timeout_s", "zk", "zk_session_timeout_s"})


class FrameworkHost:
    """A framework that lives until :meth:`stop` (or a signal). Subclasses set
    ``kind`` and make ``self.store`` (opened with ``epoch=self.epoch``),
    ``self.engine`` and ``self.api`` in :meth:`build`.

    **Standbys** (``zk``): several instances share one PostgreSQL database
    and contend through ZooKeeper (the masters' election: lowest sequence
    leads). Only the leader builds its engine, serves the API and subscribes;
    before it reads the state it takes a new epoch in the database
    (store.py, "Fencing"), so a deposed leader can no longer record nor,
    since a launch follows its record, launch. A leader that loses its
    ZooKeeper leadership stops (``failed``; the process exits 1 for its
    supervisor to start it again as a standby), as Marathon and Chronos do:
    a half-deposed engine must not run on.
    """

    kind = "framework"
    engine: Scheduler
    api: JsonServer
    store: Store

    def __init__(
        self,
        master: str,
        db: Path | str,
        *,
        listen: str = "127.0.0.1:0",
        name: str = "",
        failover_timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S,
        record: bool = True,
        credentials: Credentials | None = None,
        acls: str | Path | None = None,
        zk: str | None = None,
        zk_session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S,
    ) -> None:
        self.master = master
        #: for the driver and, with a certificate, the HTTP API's mutual TLS
        self.credentials = credentials
        #: who may use the HTTP API: the master's policy file (``use_api``),
        #: reloaded when it changes; None: the built-in policy (operators)
        self.authorizer = Authorizer(path=None if acls is None else str(acls))
        self.db = db
        self.name = name or self.kind
        self.failover_timeout_s = failover_timeout_s
        self.record = record
        self.driver: SchedulerDriver | None = None
        self.address = ""
        self._drive_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        #: lists the cluster's agents for "never fits" and explanations
        self._agents = AgentWatch(self._leader, self._driver_credentials, self._set_agents)
        self._stopping = False
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        #: the epoch this instance leads in among standbys (None: no standbys)
        self.epoch: int | None = None
        self.election: ZooKeeperElection | None = None
        self._listen = listen
        self._built = False
        self._becoming: asyncio.Task[None] | None = None
        if zk:
            if not is_postgres_url(str(db)):
                raise PluginError(
                    f'zk: instances with standbys need a database they share: db = "postgresql://...", '
                    f"not {describe(db)}"
                )
            holder = {"kind": self.kind, "hostname": socket.gethostname(), "pid": os.getpid()}
            self.election = ZooKeeperElection(parse_zk_url(zk), holder, zk_session_timeout_s)
        else:
            self._build()

    def _build(self) -> None:
        self.build(self.db, self._listen)
        self._built = True

    @property
    def leading(self) -> bool:
        """Whether this instance runs the engine (always, without standbys)."""
        return self._built

    def build(self, db: Path | str, listen: str) -> None:
        """Open the store and make ``self.engine`` and ``self.api`` (subclasses)."""
        raise NotImplementedError

    @classmethod
    async def run_plugin(cls, ctx: PluginContext) -> int:
        """``corral framework run KIND [--config FILE]``: serve until a signal.

        Config keys: ``db`` (default ``$CORRAL_HOME/frameworks/KIND/KIND.db``),
        ``listen`` (default 127.0.0.1:0), ``name``, ``failover_timeout_s``."""
        unknown = set(ctx.config) - CONFIG_KEYS
        if unknown:
            raise PluginError(f"config: unknown key(s) {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}")
        host = cls(
            ctx.master,
            _db_target(ctx.config.get("db"), ctx.state_dir / f"{cls.kind}.db"),
            listen=str(ctx.config.get("listen", "127.0.0.1:0")),
            name=str(ctx.config.get("name", cls.kind)),
            failover_timeout_s=float(ctx.config.get("failover_timeout_s", DEFAULT_FAILOVER_TIMEOUT_S)),
            credentials=ctx.credentials,
            acls=ctx.acls,
            zk=str(ctx.config["zk"]) if ctx.config.get("zk") else None,
            zk_session_timeout_s=float(ctx.config.get("zk_session_timeout_s", DEFAULT_SESSION_TIMEOUT_S)),
        )
        address = await host.start()
        if address:
            log.warning(
                "framework.serving", kind=cls.kind, address=address, db=describe(host.db), master=ctx.master
            )
        else:
            log.warning("framework.standby", kind=cls.kind, zk=ctx.config.get("zk"), db=describe(host.db))
        try:
            return await host.serve_until_signal()
        finally:
            await host.stop()

    @property
    def _engine(self) -> Engine:
        return self.engine  # type: ignore[return-value]

    def close_store(self) -> None:
        """Close the engine's database (subclasses)."""

    def _state(self) -> dict[str, Any]:
        return {
            "framework_id": self._engine.framework_id,
            "master": self.master,
            "connected": bool(self.driver and self.driver.connected.is_set()),
            "db": describe(self.db),
            "pid": os.getpid(),
            "epoch": self.epoch,
        }

    async def start(self) -> str:
        """Serve the API and subscribe; returns the API address. With
        standbys: contend for leadership and return "" at once (the rest
        happens on becoming leader; see :attr:`leading`)."""
        if self.election is not None:
            await self.election.start(self._on_leadership)
            return ""
        return await self._serve()

    def _on_leadership(self, leading: bool) -> None:
        if leading and not self._built and self._becoming is None and not self._stopping:
            self._becoming = asyncio.ensure_future(self._become_leader())
        elif not leading and (self._built or self._becoming is not None) and not self._stopping:
            self._fail(FencedError(f"{self.kind}: lost its ZooKeeper leadership; a standby takes over"))

    async def _become_leader(self) -> None:
        try:
            holder = f"{socket.gethostname()}:{os.getpid()}"
            self.epoch = await asyncio.to_thread(take_lead, self.db, holder)
            log.warning("framework.leading", kind=self.kind, epoch=self.epoch, holder=holder)
            self._build()
            await self._serve()
        except Exception as e:
            log.exception("framework.lead_failed", kind=self.kind)
            self._fail(e)

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            log.error("framework.stopping", kind=self.kind, error=str(error))
            self.failure = error
        self.failed.set()

    async def _serve(self) -> str:
        self.address = await self.api.start()
        if self.record:
            path = discovery_file(self.kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "address": self.address,
                        "master": self.master,
                        "db": str(self.db),
                        "pid": os.getpid(),
                        # clients must dial https with an operator certificate
                        "tls": bool(self.credentials and self.credentials.secure),
                    }
                )
            )
            tmp.replace(path)
        self._drive_task = asyncio.create_task(self._drive())
        self._tick_task = asyncio.create_task(self._tick())
        self._agents.start()
        log.info(
            "framework.service_started",
            kind=self.kind,
            address=self.address,
            db=describe(self.db),
            master=self.master,
        )
        return self.address

    async def stop(self) -> None:
        """Close the connection (the master keeps our tasks for the failover
        timeout), the API and the database."""
        self._stopping = True
        if self.election is not None:
            await self.election.stop()
        if self._becoming is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._becoming
        if not self._built:
            return
        if self.driver is not None:
            self.driver.stop()
        if self._tick_task is not None:
            self._tick_task.cancel()
        await self._agents.stop()
        for t in (self._drive_task, self._tick_task):
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    async with asyncio.timeout(5.0):
                        await t
        await self.api.stop()
        if self.record:
            path = discovery_file(self.kind)
            with contextlib.suppress(OSError, ValueError):
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()
        self.close_store()

    def _leader(self) -> str | None:
        """The leading master's address while subscribed, else None."""
        d = self.driver
        if d is None or not d.connected.is_set() or d.master_info is None:
            return None
        return d.master_info.address or None

    def _driver_credentials(self) -> Credentials | None:
        return self.driver.credentials if self.driver is not None else self.credentials

    def _set_agents(self, agents: list[Candidate]) -> None:
        self._engine.set_agents(agents)

    async def _drive(self) -> None:
        try:
            while not self._stopping:
                self.driver = SchedulerDriver(
                    self.engine,
                    name=self.name,
                    master=self.master,
                    framework_id=self._engine.framework_id,
                    failover_timeout_s=self.failover_timeout_s,
                    credentials=self.credentials,
                    # A long-lived service waits for its master however long it takes.
                    connect_timeout_s=None,
                )
                try:
                    await self.driver.run()
                    return
                except SubscribeError as e:
                    if str(e).startswith("NOT_FOUND") and self._engine.framework_id:
                        log.warning("framework.forgotten", kind=self.kind, error=str(e))
                        self._engine.forget_framework()
                        continue
                    raise
        except Exception as e:
            log.exception("framework.driver_failed", kind=self.kind)
            self.failure = e
            self.failed.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._engine.tick()
            except Exception as e:  # a bug: stop rather than run on in a bad state
                log.exception("framework.tick_failed", kind=self.kind)
                self.failure = e
                self.failed.set()
                return

    async def serve_until_signal(self) -> int:
        """Run until SIGTERM/SIGINT (0) or a fatal error (1)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.failed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 1 if self.failure is not None else 0


def _db_target(value: object, default: Path) -> Path | str:
    """The config's ``db``: a PostgreSQL URL as it is (a Path would fold its
    ``//``), else a SQLite file."""
    if value is None:
        return default
    text = str(value)
    return text if is_postgres_url(text) else Path(text)
