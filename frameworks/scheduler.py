"""The base class framework authors subclass. Every callback is a documented
no-op, so a scheduler overrides only what it cares about."""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.frameworks.types import MasterInfo, Offer, TaskStatus

if TYPE_CHECKING:
    from corral.frameworks.driver import SchedulerDriver


class Scheduler:
    """Callbacks of a framework scheduler, called one at a time by the driver.

    Example: a scheduler that runs one ``echo`` and stops::

        from corral.frameworks import Scheduler, SchedulerDriver, Task
        from corral.resources import Resources

        class Hello(Scheduler):
            launched = False

            async def offers(self, driver, offers):
                for offer in offers:
                    if not self.launched:
                        task = Task("hello", "echo hello", Resources.of(cpus=0.1, mem=32))
                        driver.launch(offer, [task])
                        self.launched = True
                    else:
                        driver.decline(offer)

            async def status_update(self, driver, status):
                if status.state.is_terminal:
                    driver.stop()

        await SchedulerDriver(Hello(), name="hello", master="127.0.0.1:5050").run()
    """

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        """Subscribed (first time or again after a reconnect, with the same id)."""

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        """New offers. Use them with ``driver.launch`` or give them back with
        ``driver.decline``; an offer left alone expires after the master's
        offer timeout."""
        for offer in offers:
            driver.decline(offer)

    async def rescinded(self, driver: SchedulerDriver, offer_id: str) -> None:
        """An offer is no longer valid (expired, or its agent went away)."""

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        """A task changed state. The driver acknowledges it after this returns
        (unless the driver was made with ``auto_acknowledge=False``)."""

    async def message(self, driver: SchedulerDriver, agent_id: str, data: bytes) -> None:
        """A framework message from an executor."""

    async def error(self, driver: SchedulerDriver, code: str, message: str) -> None:
        """The master rejected a call (``code`` is a gRPC status name such as
        ``INVALID_ARGUMENT``); the connection stays up."""

    async def disconnected(self, driver: SchedulerDriver) -> None:
        """The connection to the master broke and the driver is reconnecting.
        Never called after the framework's own ``driver.stop()`` or
        ``driver.teardown()``: the driver does not reconnect then."""
