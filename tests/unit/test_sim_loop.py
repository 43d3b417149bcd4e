"""The virtual clock: timers run unchanged, time jumps, a stall is an error."""

from __future__ import annotations

import asyncio
import time

import pytest

from corral.sim.loop import SimulationStalled, run


def test_an_hour_of_sleeps_and_timeouts_passes_in_no_wall_time() -> None:
    async def main() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        loop.call_later(10, order.append, "b")
        loop.call_later(5, order.append, "a")
        t0 = loop.time()
        await asyncio.sleep(3600)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.sleep(10)
        return loop.time() - t0, order

    started = time.perf_counter()
    elapsed, order = run(main(), start=100.0)
    assert elapsed == 3605.0
    assert order == ["a", "b"]
    assert time.perf_counter() - started < 1.0


def test_a_loop_with_nothing_to_do_says_so() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationStalled):
        run(main())
