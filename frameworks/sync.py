"""A synchronous face of the SDK for simple scripts.

Write plain ``def`` callbacks and call :func:`run`; it runs the async driver
(same connection handling, acknowledgements, reconnects) underneath::

    from corral.frameworks import Task
    from corral.frameworks.sync import SyncScheduler, run
    from corral.resources import Resources

    class Hello(SyncScheduler):
        launched = False

        def offers(self, driver, offers):
            for offer in offers:
                if self.launched:
                    driver.decline(offer)
                else:
                    driver.launch(offer, [Task("hi", "echo hi", Resources.of(cpus=0.1, mem=32))])
                    self.launched = True

        def status_update(self, driver, status):
            if status.state.is_terminal:
                driver.stop()

    run(Hello(), name="hello", master="127.0.0.1:5050")

The callbacks run on the driver's event loop: keep them short (the driver's
verbs only queue calls, so they never block).
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.types import MasterInfo, Offer, TaskStatus


class SyncScheduler:
    """The callbacks of :class:`~corral.frameworks.Scheduler` as plain functions."""

    def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        """Subscribed (again, after a reconnect)."""

    def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        """New offers; the default declines them."""
        for offer in offers:
            driver.decline(offer)

    def rescinded(self, driver: SchedulerDriver, offer_id: str) -> None:
        """An offer is no longer valid."""

    def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        """A task changed state (acknowledged after this returns)."""

    def message(self, driver: SchedulerDriver, agent_id: str, data: bytes) -> None:
        """A framework message from an executor."""

    def error(self, driver: SchedulerDriver, code: str, message: str) -> None:
        """The master rejected a call."""

    def disconnected(self, driver: SchedulerDriver) -> None:
        """The connection broke; the driver is reconnecting."""


class AsyncAdapter(Scheduler):
    """Runs a :class:`SyncScheduler`'s callbacks from the async driver."""

    def __init__(self, sync: SyncScheduler) -> None:
        self.sync = sync

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        self.sync.registered(driver, framework_id, master)

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        self.sync.offers(driver, offers)

    async def rescinded(self, driver: SchedulerDriver, offer_id: str) -> None:
        self.sync.rescinded(driver, offer_id)

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        self.sync.status_update(driver, status)

    async def message(self, driver: SchedulerDriver, agent_id: str, data: bytes) -> None:
        self.sync.message(driver, agent_id, data)

    async def error(self, driver: SchedulerDriver, code: str, message: str) -> None:
        self.sync.error(driver, code, message)

    async def disconnected(self, driver: SchedulerDriver) -> None:
        self.sync.disconnected(driver)


def run(scheduler: SyncScheduler, *, name: str, master: str, **driver_options: Any) -> None:
    """Block until the scheduler calls ``driver.stop()`` (or ``teardown()``).

    ``driver_options`` go to :class:`~corral.frameworks.SchedulerDriver`
    (``failover_timeout_s``, ``roles``, ...)."""

    async def main() -> None:
        await SchedulerDriver(AsyncAdapter(scheduler), name=name, master=master, **driver_options).run()

    asyncio.run(main())
