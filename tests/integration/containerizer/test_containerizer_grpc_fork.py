"""Forking supervisors from a process that serves and calls grpc.aio must not deadlock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import grpc
import pytest

from corral.slave.containerizer import ContainerConfig, Containerizer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups"),
]


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def test_launches_while_grpc_aio_serves(
    ctz: Containerizer, make_config: Callable[..., ContainerConfig]
) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    ping = channel.unary_unary("/test.Echo/Ping")
    calls = 0
    stop = asyncio.Event()

    async def pinger() -> None:
        nonlocal calls
        while not stop.is_set():
            assert await ping(b"x", timeout=5) == b"x"
            calls += 1

    async def launch_200() -> None:
        for _ in range(200):
            config = make_config("/bin/true")
            await ctz.launch(config)
            assert (await ctz.wait(config.container_id)).exit_code == 0
            await ctz.destroy(config.container_id)

    pingers = [asyncio.create_task(pinger()) for _ in range(4)]
    try:
        await asyncio.wait_for(launch_200(), 60)
        calls_during_launches = calls
    finally:
        stop.set()
        await asyncio.gather(*pingers)
        await channel.close()
        await server.stop(0)
    assert calls_during_launches > 0
