"""frameworks/driver.py tear_down(): the end of a short-lived framework (the
CLI's `run` and `submit --local`, corral.testing.framework)."""

from __future__ import annotations

import asyncio
from typing import cast

from corral.frameworks.driver import SchedulerDriver, tear_down


class Driver:
    """run() returns once torn down, or never if ``deaf``."""

    def __init__(self, deaf: bool = False) -> None:
        self.deaf = deaf
        self.torn_down = asyncio.Event()
        self.teardowns = 0

    async def run(self) -> None:
        await self.torn_down.wait()
        if self.deaf:
            await asyncio.sleep(3600)

    def teardown(self) -> None:
        self.teardowns += 1
        self.torn_down.set()


async def test_tear_down_ends_a_running_driver() -> None:
    driver = Driver()
    runner = asyncio.create_task(driver.run())
    await tear_down(cast(SchedulerDriver, driver), runner)
    assert driver.teardowns == 1
    assert runner.done()
    assert not runner.cancelled()


async def test_tear_down_leaves_a_finished_driver_alone() -> None:
    driver = Driver()
    driver.torn_down.set()
    runner = asyncio.create_task(driver.run())
    await runner
    await tear_down(cast(SchedulerDriver, driver), runner)
    assert driver.teardowns == 0


async def test_tear_down_cancels_a_driver_that_does_not_stop() -> None:
    driver = Driver(deaf=True)
    runner = asyncio.create_task(driver.run())
    await tear_down(cast(SchedulerDriver, driver), runner, timeout_s=0.2)
    assert driver.teardowns == 1
    assert runner.cancelled()


async def test_tear_down_does_not_raise_the_drivers_error() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("subscribe refused")

    driver = Driver()
    runner = asyncio.create_task(failing())
    await tear_down(cast(SchedulerDriver, driver), runner)
    assert isinstance(runner.exception(), RuntimeError)
