"""A master process: gRPC server, election, and the master core while leading.

The process serves gRPC whether or not it leads. When the election says it
leads, it starts a fresh :class:`Master`; when it stops leading (another was
elected, or its ZooKeeper connection went), it stops that core at once, which
closes every agent and framework stream so their clients go and find the new
leader. Without ``zk`` the election is standalone and leads from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import structlog
from kazoo.exceptions import KazooException

from corral import __version__
from corral.detector import MasterDetector, StaticDetector
from corral.malformed import MalformedRequests
from corral.master import metrics as master_metrics
from corral.master.audit import AuditLog
from corral.master.authz import ALLOW_ALL, DEFAULT_POLICY, Authorizer
from corral.master.call_validation import validate_operator_request
from corral.master.core.records import KINDS
from corral.master.election import Election, StandaloneElection, ZooKeeperElection
from corral.master.leadership import Leadership
from corral.master.master import Master, MasterConfig, new_id
from corral.master.registry import InMemoryRegistry, Registry, RegistryWriter, ZooKeeperRegistry
from corral.master.services.agent import AgentService
from corral.master.services.guard import Guard
from corral.master.services.operator import OperatorService
from corral.master.services.scheduler import SchedulerService
from corral.metrics import MetricsServer
from corral.proto import agent_pb2_grpc, operator_pb2_grpc, scheduler_pb2_grpc
from corral.proto import messages_pb2 as pb
from corral.transport import Credentials, bind, make_server
from corral.zk import DEFAULT_SESSION_TIMEOUT_S, ZkCredentials, parse_zk_url
from corral.zk_detector import ZooKeeperDetector

log = structlog.get_logger(__name__)


class MasterServer:
    """Serve a master on ``host:port`` (port 0 picks a free one).

    >>> server = MasterServer("127.0.0.1:0", zk="zk://127.0.0.1:2181/corral")  # doctest: +SKIP
    >>> await server.start(); print(server.address, server.leading); await server.stop()
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:5050",
        config: MasterConfig | None = None,
        credentials: Credentials | None = None,
        *,
        zk: str | None = None,
        zk_session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S,
        zk_connect_timeout_s: float = 0.0,
        zk_credentials: ZkCredentials | None = None,
        advertise: str | None = None,
        metrics_listen: str | None = None,
        policy: str | None = None,
        audit_log: str | None = None,
    ) -> None:
        self.listen = listen
        #: serve Prometheus metrics on this HOST:PORT (see corral/metrics.py)
        self.metrics = (
            MetricsServer(metrics_listen, master_metrics.registry(lambda: self.master, __version__))
            if metrics_listen
            else None
        )
        self.config = config or MasterConfig()
        self.credentials = credentials
        # Clients are authenticated only when their certificates are required:
        # then the built-in policy applies; without TLS nobody is, and the
        # insecure default allows everything (a policy file applies to claims).
        authenticated = credentials is not None and credentials.secure and credentials.root_certificates
        self.authorizer = Authorizer(DEFAULT_POLICY if authenticated else ALLOW_ALL, policy)
        self.guard = Guard(self.authorizer, AuditLog(audit_log))
        self.zk = zk
        self.zk_session_timeout_s = zk_session_timeout_s
        self.zk_connect_timeout_s = zk_connect_timeout_s  # 0: keep trying (election.py)
        #: the masters' ZooKeeper identity: znodes are theirs (corral/zk.py, "Access")
        self.zk_credentials = zk_credentials
        self.advertise = advertise
        self.master: Master | None = None
        self.address = ""
        self.info = pb.MasterInfo(id=new_id(), hostname=socket.gethostname(), version=__version__)
        self.election: Election = StandaloneElection()
        self.detector: MasterDetector = StaticDetector("")
        self.leadership = Leadership(self._leader_address)
        self._server = make_server(credentials, [self._malformed_requests()])
        self._transitions: list[asyncio.Task[None]] = []
        self._watch: asyncio.Task[None] | None = None
        self.registry: Registry = InMemoryRegistry()
        self._writer: RegistryWriter | None = None
        self._lock = asyncio.Lock()

    def _malformed_requests(self) -> MalformedRequests:
        """Garbage and oversized requests get INVALID_ARGUMENT on every service."""
        return MalformedRequests(
            max_bytes={
                "corral.v1.Scheduler": self.config.max_call_bytes,
                "corral.v1.Operator": self.config.max_operator_request_bytes,
            },
            checks={"corral.v1.Operator": validate_operator_request},
        )

    def _leader_address(self) -> str | None:
        leader = self.detector.leader()
        # Never send a client back to ourselves: we just refused to lead.
        return leader if leader != self.address else None

    @property
    def leading(self) -> bool:
        return self.master is not None

    async def start(self) -> str:
        host = self.listen.rsplit(":", 1)[0]
        port = bind(self._server, self.listen, self.credentials)
        self.address = self.advertise or f"{host}:{port}"
        self.info.address = self.address
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(
            SchedulerService(self.leadership, self.guard, self.config), self._server
        )
        agent_pb2_grpc.add_AgentServicer_to_server(AgentService(self.leadership, self.guard), self._server)
        operator_pb2_grpc.add_OperatorServicer_to_server(
            OperatorService(self.leadership, self.info, self.guard), self._server
        )
        if self.authorizer.path is not None:
            self._watch = asyncio.create_task(self._watch_policy())
        await self._server.start()
        if self.metrics is not None:
            await self.metrics.start()
        if self.zk:
            url = parse_zk_url(self.zk)
            info = {
                "id": self.info.id,
                "address": self.address,
                "hostname": self.info.hostname,
                "version": self.info.version,
            }
            election = ZooKeeperElection(
                url,
                info,
                self.zk_session_timeout_s,
                self.zk_connect_timeout_s,
                credentials=self.zk_credentials,
                registry_kinds=KINDS,
            )
            self.election = election
            self.detector = ZooKeeperDetector(url, self.zk_session_timeout_s)
            self.registry = ZooKeeperRegistry(election.client, url, lambda: election.znode)
        else:
            self.detector = StaticDetector(self.address)
        await self.detector.start()
        await self.election.start(self._on_leadership)
        tls = bool(self.credentials and self.credentials.secure)
        if not tls:
            # Allowed on loopback (tests, `corral local --insecure`) or with --insecure.
            log.warning(
                "master.plaintext", address=self.address, reason="no TLS: callers are not authenticated"
            )
        log.info("master.started", address=self.address, master_id=self.info.id, zk=self.zk, tls=tls)
        return self.address

    def _on_leadership(self, leading: bool) -> None:
        task = asyncio.ensure_future(self._become(leading))
        self._transitions.append(task)
        task.add_done_callback(self._transitions.remove)

    async def _become(self, leading: bool) -> None:
        async with self._lock:  # transitions happen one at a time, in order
            if leading and self.master is None and self.election.leading:
                try:
                    state = await asyncio.to_thread(self.registry.load)
                except KazooException as e:
                    log.error("registry.load_failed", error=repr(e))
                    return  # not serving; the next leadership change tries again
                if not self.election.leading:
                    return  # lost it while loading
                master = Master(self.config, address=self.address, master_id=self.info.id)
                master.authorizer, master.audit = self.authorizer, self.guard.audit
                master.recover(state)
                writer = RegistryWriter(self.registry, self._fenced)
                writer.start()
                master.registry = writer
                master.start()
                self.master, self._writer = master, writer
                self.leadership.current = master
                log.info("master.leading", address=self.address, master_id=self.info.id)
            elif not leading and self.master is not None:
                master, self.master = self.master, None
                self.leadership.current = None
                log.warning("master.stepped_down", master_id=self.info.id)
                await master.stop()
                if self._writer is not None:
                    await self._writer.stop()
                    self._writer = None

    async def _watch_policy(self, interval_s: float = 1.0) -> None:
        """Reload the ACL policy file when it changes (SIGHUP also reloads it)."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.authorizer.reload_if_changed)

    def _fenced(self) -> None:
        """A registry write was refused: we are not the leader any more."""
        self._on_leadership(False)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._writer is not None:
            # Let queued registry writes land while we still hold the fence.
            with contextlib.suppress(TimeoutError):
                await self._writer.flush(timeout=2.0)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.election.stop()
        await asyncio.gather(*self._transitions, return_exceptions=True)
        async with self._lock:
            if self.master is not None:
                await self.master.stop()
                self.master = None
                self.leadership.current = None
            if self._writer is not None:
                await self._writer.stop()
                self._writer = None
        await self.detector.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        await self._server.stop(grace_s)
        self.guard.audit.close()

    async def wait(self) -> None:
        await self._server.wait_for_termination()
