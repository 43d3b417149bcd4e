"""A master's stop() ends its timers even when a wake-up and the cancel arrive
together (found by `corral chaos`: on Python 3.11 ``asyncio.wait_for``
swallows a cancel whose inner wait completed in the same loop iteration, so
the allocation loop ran on, ``stop()`` never returned, and the server's
transition lock stayed held: elected again later, that master never served,
and the cluster had no leader)."""

from __future__ import annotations

import asyncio

from corral.master.master import Master, MasterConfig


async def test_stop_returns_when_an_allocation_is_asked_for_at_the_same_moment() -> None:
    for _ in range(50):
        master = Master(MasterConfig(allocation_interval_s=1.0))
        master.start()
        await asyncio.sleep(0.01)
        master.allocate_soon()  # e.g. an agent disconnecting as the master steps down
        try:
            await asyncio.wait_for(master.stop(), 3.0)
        except TimeoutError:
            raise AssertionError("Master.stop() hung: a timer swallowed its cancellation") from None
