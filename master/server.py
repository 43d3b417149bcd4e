"""A master process: the Master plus its gRPC server."""

from __future__ import annotations

import structlog

from corral.master.master import Master, MasterConfig
from corral.master.services.agent import AgentService
from corral.master.services.operator import OperatorService
from corral.master.services.scheduler import SchedulerService
from corral.proto import agent_pb2_grpc, operator_pb2_grpc, scheduler_pb2_grpc
from corral.transport import Credentials, bind, make_server

log = structlog.get_logger(__name__)


class MasterServer:
    """Serve a standalone master on ``host:port`` (port 0 picks a free one).

    >>> server = MasterServer("127.0.0.1:0")   # doctest: +SKIP
    >>> await server.start(); print(server.address); await server.stop()
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:5050",
        config: MasterConfig | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.listen = listen
        self.config = config or MasterConfig()
        self.credentials = credentials
        self.master: Master | None = None
        self.address = ""
        self._server = make_server(credentials)

    async def start(self) -> str:
        host = self.listen.rsplit(":", 1)[0]
        port = bind(self._server, self.listen, self.credentials)
        self.address = f"{host}:{port}"
        self.master = Master(self.config, address=self.address)
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerService(self.master), self._server)
        agent_pb2_grpc.add_AgentServicer_to_server(AgentService(self.master), self._server)
        operator_pb2_grpc.add_OperatorServicer_to_server(OperatorService(self.master), self._server)
        await self._server.start()
        self.master.start()
        log.info("master.started", address=self.address, master_id=self.master.info.id)
        return self.address

    async def stop(self, grace_s: float = 1.0) -> None:
        if self.master is not None:
            await self.master.stop()
        await self._server.stop(grace_s)

    async def wait(self) -> None:
        await self._server.wait_for_termination()
