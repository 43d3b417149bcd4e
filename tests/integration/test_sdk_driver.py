"""What a framework sees of its driver: its id and name, the exit code it
stops with, ``disconnected`` only when the driver will reconnect, a deadline
on the first subscription, and logs on stderr (issue 22).

Masters only (no agent, no task): real gRPC on loopback, no root needed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.frameworks import ConnectTimeoutError, SchedulerDriver
from corral.frameworks.driver import tear_down
from corral.frameworks.types import MasterInfo
from corral.master.server import MasterServer
from corral.testing import FAST_MASTER, RecordingScheduler, eventually


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Watcher(RecordingScheduler):
    """Records what the driver tells it about itself and its connection."""

    def __init__(self) -> None:
        super().__init__(decline_unused=True)
        self.disconnects = 0
        self.seen: list[tuple[str, str, str]] = []

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        self.seen.append((framework_id, driver.framework_id, driver.framework_name))
        await super().registered(driver, framework_id, master)

    async def disconnected(self, driver: SchedulerDriver) -> None:
        self.disconnects += 1


@pytest.fixture
async def master() -> AsyncIterator[MasterServer]:
    server = MasterServer(f"127.0.0.1:{_free_port()}", FAST_MASTER)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _started(driver: SchedulerDriver) -> asyncio.Task[None]:
    runner = asyncio.create_task(driver.run())
    await eventually(lambda: driver.connected.is_set() or runner.done(), 10, "the driver to subscribe")
    assert not runner.done(), runner
    return runner


async def test_the_driver_names_the_framework_and_passes_the_exit_code(master: MasterServer) -> None:
    watcher = Watcher()
    driver = SchedulerDriver(watcher, name="sweep", master=master.address)
    assert (driver.framework_id, driver.framework_name) == ("", "sweep")
    runner = await _started(driver)
    try:
        (framework_id, seen_id, seen_name) = watcher.seen[0]
        assert framework_id
        assert (seen_id, seen_name) == (framework_id, "sweep")
        driver.stop(exit_code=7)
        async with asyncio.timeout(10):
            await runner
        assert driver.exit_code == 7
        # Its own stop is no disconnection: the driver does not reconnect.
        assert watcher.disconnects == 0
    finally:
        await tear_down(driver, runner)


async def test_teardown_is_not_a_disconnection(master: MasterServer) -> None:
    watcher = Watcher()
    driver = SchedulerDriver(watcher, name="gone", master=master.address)
    runner = await _started(driver)
    try:
        driver.teardown(exit_code=3)
        async with asyncio.timeout(10):
            await runner
        assert driver.exit_code == 3
        assert watcher.disconnects == 0
    finally:
        await tear_down(driver, runner)


async def test_disconnected_when_the_master_goes_away_and_the_driver_reconnects(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    watcher = Watcher()
    driver = SchedulerDriver(
        watcher, name="patient", master=address, reconnect_max_s=0.2, connect_timeout_s=0.5
    )
    runner = await _started(driver)
    try:
        await server.stop()
        await eventually(lambda: watcher.disconnects == 1, 10, "disconnected() after the master stopped")
        # The master stays away longer than connect_timeout_s: that deadline is
        # for the first subscription only, so the driver keeps trying (time must
        # pass here, there is no event to wait for).
        await asyncio.sleep(1.0)
        assert not runner.done(), runner
        server = MasterServer(address, FAST_MASTER)
        await server.start()
        await watcher.wait_for(lambda: watcher.subscriptions == 2, 15, "the driver to re-subscribe")
        driver.teardown()
        async with asyncio.timeout(10):
            await runner
        assert watcher.disconnects == 1
    finally:
        await tear_down(driver, runner)
        await server.stop()


async def test_a_wrong_address_ends_with_one_clear_error_at_the_deadline() -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    watcher = Watcher()
    driver = SchedulerDriver(watcher, name="lost", master=address, connect_timeout_s=1.0, reconnect_max_s=0.2)
    started = time.monotonic()
    with pytest.raises(ConnectTimeoutError) as err:
        async with asyncio.timeout(10):
            await driver.run()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5, elapsed
    assert f"could not subscribe to the master at {address} within 1 s" in str(err.value)
    assert "UNAVAILABLE" in str(err.value)  # the last failure, said once
    assert watcher.subscriptions == 0
    assert watcher.disconnects == 0


SCRIPT = """
import sys
from corral.frameworks import ConnectTimeoutError
from corral.frameworks.sync import SyncScheduler, run

try:
    run(SyncScheduler(), name="script", master=sys.argv[1], connect_timeout_s=0.5, reconnect_max_s=0.1)
except ConnectTimeoutError as e:
    print("program output:", type(e).__name__)
"""


def test_sync_run_logs_to_stderr_and_keeps_stdout_for_the_program(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    address = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, str(script), address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "program output: ConnectTimeoutError\n"
    # The driver's structlog events, on stderr: its retries and the deadline.
    assert "driver.disconnected" in proc.stderr
    assert "driver.connect_timeout" in proc.stderr
