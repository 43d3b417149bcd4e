"""Which master core, if any, this process runs now.

A master process always serves gRPC, leading or not. The servicers ask
:meth:`Leadership.require` first: a non-leading master answers every call with
UNAVAILABLE and the leader's address in the trailing metadata key
``corral-leader`` (DESIGN.md), which agents, the SDK and the CLI follow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import grpc
import grpc.aio

from corral.detector import LEADER_METADATA_KEY
from corral.master.master import Master


class Leadership:
    def __init__(self, leader_address: Callable[[], str | None]) -> None:
        self.current: Master | None = None
        self._leader_address = leader_address

    async def require(self, context: grpc.aio.ServicerContext[Any, Any]) -> Master:
        """The leading master core, or abort the call with UNAVAILABLE."""
        if self.current is None:
            await self.refuse(context)
        assert self.current is not None
        return self.current

    async def refuse(self, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        leader = self._leader_address()
        if leader:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"this master is not leading; the leader is {leader}",
                trailing_metadata=((LEADER_METADATA_KEY, leader),),
            )
        await context.abort(grpc.StatusCode.UNAVAILABLE, "this master is not leading and no leader is known")
        raise AssertionError("unreachable: abort raises")
