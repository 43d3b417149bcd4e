"""The long-running batch framework: engine + SQLite store + HTTP API.

``corral framework run batch`` (or ``corral local``, embedded) runs one. It
subscribes with the framework id kept in its database, so after a restart
(or a master failover) the master hands back its tasks and the updates it
missed; it records its API address in ``$CORRAL_HOME/batch.json`` where the
CLI looks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import structlog

from corral.cli.discovery import state_dir
from corral.frameworks.batch.api import ApiServer
from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.store import Store
from corral.frameworks.driver import SchedulerDriver, SubscribeError
from corral.frameworks.plugins import FrameworkPlugin, PluginContext, PluginError

log = structlog.get_logger(__name__)
TICK_S = 0.2
#: a week: how long the master keeps our tasks while the service is down
DEFAULT_FAILOVER_TIMEOUT_S = 7 * 24 * 3600.0


def discovery_file() -> Path:
    """Where a running service records its address (``$CORRAL_HOME/batch.json``)."""
    return state_dir() / "batch.json"


def find_service() -> dict[str, Any] | None:
    """The running service's record (address, master, db, pid), or None."""
    try:
        data = json.loads(discovery_file().read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(data)


class BatchService:
    """A batch framework that lives until :meth:`stop` (or a signal)."""

    def __init__(
        self,
        master: str,
        db: Path | str,
        *,
        listen: str = "127.0.0.1:0",
        name: str = "batch",
        failover_timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S,
        record: bool = True,
    ) -> None:
        self.master = master
        self.db = db
        self.name = name
        self.failover_timeout_s = failover_timeout_s
        self.record = record
        self.store = Store(db)
        self.engine = BatchEngine(self.store)
        self.api = ApiServer(self.engine, listen, state=self._state)
        self.driver: SchedulerDriver | None = None
        self.address = ""
        self._drive_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None

    def _state(self) -> dict[str, Any]:
        return {
            "framework_id": self.engine.framework_id,
            "master": self.master,
            "connected": bool(self.driver and self.driver.connected.is_set()),
            "db": str(self.db),
            "pid": os.getpid(),
        }

    async def start(self) -> str:
        """Serve the API and subscribe; returns the API address."""
        self.address = await self.api.start()
        if self.record:
            path = discovery_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {"address": self.address, "master": self.master, "db": str(self.db), "pid": os.getpid()}
                )
            )
            tmp.replace(path)
        self._drive_task = asyncio.create_task(self._drive())
        self._tick_task = asyncio.create_task(self._tick())
        log.info("batch.service_started", address=self.address, db=str(self.db), master=self.master)
        return self.address

    async def stop(self) -> None:
        """Close the connection (the master keeps our tasks for the failover
        timeout), the API and the database."""
        self._stopping = True
        if self.driver is not None:
            self.driver.stop()
        if self._tick_task is not None:
            self._tick_task.cancel()
        for t in (self._drive_task, self._tick_task):
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, 5.0)
        await self.api.stop()
        if self.record:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(discovery_file().read_text()).get("pid") == os.getpid():
                    discovery_file().unlink()
        self.store.close()

    async def _drive(self) -> None:
        try:
            while not self._stopping:
                self.driver = SchedulerDriver(
                    self.engine,
                    name=self.name,
                    master=self.master,
                    framework_id=self.engine.framework_id,
                    failover_timeout_s=self.failover_timeout_s,
                )
                try:
                    await self.driver.run()
                    return
                except SubscribeError as e:
                    if str(e).startswith("NOT_FOUND") and self.engine.framework_id:
                        log.warning("batch.framework_forgotten", error=str(e))
                        self.engine.forget_framework()
                        continue
                    raise
        except Exception as e:
            log.exception("batch.driver_failed")
            self.failure = e
            self.failed.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.engine.tick()
            except Exception as e:  # a bug: stop rather than run on in a bad state
                log.exception("batch.tick_failed")
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


_CONFIG_KEYS = {"db", "listen", "name", "failover_timeout_s"}


async def run_plugin(ctx: PluginContext) -> int:
    """``corral framework run batch [--config FILE]``: serve until a signal.

    Config keys: ``db`` (default ``$CORRAL_HOME/frameworks/batch/batch.db``),
    ``listen`` (default 127.0.0.1:0), ``name``, ``failover_timeout_s``."""
    unknown = set(ctx.config) - _CONFIG_KEYS
    if unknown:
        raise PluginError(f"config: unknown key(s) {sorted(unknown)}; allowed: {sorted(_CONFIG_KEYS)}")
    service = BatchService(
        ctx.master,
        Path(ctx.config.get("db", ctx.state_dir / "batch.db")),
        listen=str(ctx.config.get("listen", "127.0.0.1:0")),
        name=str(ctx.config.get("name", "batch")),
        failover_timeout_s=float(ctx.config.get("failover_timeout_s", DEFAULT_FAILOVER_TIMEOUT_S)),
    )
    address = await service.start()
    log.warning("batch.serving", address=address, db=str(service.db), master=ctx.master)
    try:
        return await service.serve_until_signal()
    finally:
        await service.stop()


plugin = FrameworkPlugin(
    name="batch",
    description="Batch jobs with retries, dependencies and cron schedules, kept in SQLite",
    run=run_plugin,
)
