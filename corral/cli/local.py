"""``corral local``: a master and N agents in one process, no ZooKeeper."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from corral import __version__
from corral.master import metrics as master_metrics
from corral.master.master import MasterConfig
from corral.master.server import MasterServer
from corral.metrics import MetricsServer
from corral.resources import Resources
from corral.slave import metrics as agent_metrics
from corral.slave.agent import Agent, AgentConfig
from corral.transport import Credentials

if TYPE_CHECKING:
    from corral.pki import CertificateAuthority

log = structlog.get_logger(__name__)


@dataclass
class LocalCluster:
    """An embedded cluster: one standalone master and ``agents`` agents, each
    with an equal share of this machine (or ``agent_resources`` each).

    >>> async with LocalCluster(agents=2, work_dir=Path("/tmp/c")) as cluster:  # doctest: +SKIP
    ...     print(cluster.master_address)
    """

    agents: int = 1
    work_dir: Path = field(default_factory=lambda: Path("/tmp/corral-local"))
    listen: str = "127.0.0.1:0"
    agent_resources: Resources | None = None
    master_config: MasterConfig = field(default_factory=MasterConfig)
    cgroup_prefix: str = ""
    attributes: list[dict[str, str]] = field(default_factory=list)
    #: the agents' shared image store; None: <work_dir>/images
    image_store: Path | None = None
    #: where tasks may name image tarballs by path (AgentConfig.image_import_dirs)
    image_import_dirs: tuple[Path, ...] = ()
    #: host paths tasks may bind (AgentConfig.allowed_host_paths)
    allowed_host_paths: tuple[Path, ...] = ()
    #: mutual TLS with a CA of its own in ``<work_dir>/tls``: a certificate for
    #: the master, each agent (``agent:<hostname>``) and, on demand, whoever
    #: :meth:`credentials` is asked for (frameworks, the operator)
    tls: bool = False
    #: serve the master's and every agent's metrics on this HOST:PORT (one
    #: endpoint, agents labelled ``agent_id``: see slave/metrics.py)
    metrics_listen: str | None = None

    def __post_init__(self) -> None:
        self.tls_dir = self.work_dir / "tls"
        self._ca = self._make_ca() if self.tls else None
        self.server = MasterServer(
            self.listen, self.master_config, self._issue("master:local"), policy=self._policy_file()
        )
        self.agent_list: list[Agent] = []
        self.metrics: MetricsServer | None = None
        self.master_address = ""
        self.cgroup_prefix = self.cgroup_prefix or f"corral/local-{os.getpid()}"

    @property
    def acls(self) -> str | None:
        """The cluster's ACL policy file (None without TLS), for the frameworks' APIs too."""
        return self._policy_file()

    def _policy_file(self) -> str | None:
        """The local cluster's ACL policy (its operator does everything; the
        bundled frameworks run the operator's jobs as any user), written once
        into the TLS directory so it can be edited; None without TLS."""
        if self._ca is None:
            return None
        from corral.master.authz import LOCAL_POLICY_TOML

        path = self.tls_dir / "acls.toml"
        if not path.exists():
            path.write_text(LOCAL_POLICY_TOML)
        return str(path)

    def _make_ca(self) -> CertificateAuthority:
        from corral.pki import CertificateAuthority

        if (self.tls_dir / "ca.pem").exists():
            return CertificateAuthority.load(self.tls_dir)
        return CertificateAuthority.init(self.tls_dir, name="corral local")

    def _issue(self, principal: str) -> Credentials | None:
        """Credentials for ``principal`` signed by this cluster's CA (issued once); None without TLS."""
        if self._ca is None:
            return None
        from corral.pki import issued_files, load_credentials

        ca = self._ca
        cert, key = issued_files(self.tls_dir, principal, lambda: ca)
        return load_credentials(ca.cert_file, cert, key)

    def credentials(self, principal: str) -> Credentials:
        """How ``principal`` (``KIND:NAME``) calls this cluster: its own
        certificate under TLS, else plaintext claiming it."""
        return self._issue(principal) or Credentials(claim=principal)

    def tls_files(self, principal: str) -> tuple[Path, Path, Path] | None:
        """(CA, certificate, key) of ``principal``, issued if need be; None without TLS."""
        creds = self._issue(principal)
        if creds is None or creds.files is None:
            return None
        ca, cert, key = creds.files
        return Path(ca), Path(cert), Path(key)

    async def start(self) -> str:
        if self.metrics_listen:  # first: an address in use then stops nothing else
            registry = master_metrics.registry(lambda: self.server.master, __version__)
            registry.register(agent_metrics.AgentCollector(self.agent_list, __version__))
            self.metrics = MetricsServer(self.metrics_listen, registry)
            await self.metrics.start()
        self.master_address = await self.server.start()
        for i in range(self.agents):
            config = AgentConfig(
                master=self.master_address,
                work_dir=self.work_dir / f"agent-{i}",
                resources=self.agent_resources,
                attributes=self.attributes[i] if i < len(self.attributes) else {},
                hostname=f"{os.uname().nodename}-agent-{i}",
                cgroup_prefix=f"{self.cgroup_prefix}/agent-{i}",
                share=(i, self.agents),
                image_store=self.image_store or self.work_dir / "images",
                image_import_dirs=self.image_import_dirs,
                allowed_host_paths=self.allowed_host_paths,
            )
            config.credentials = self._issue(f"agent:{config.hostname}")
            agent = Agent(config)
            self.agent_list.append(agent)
            await agent.start()
        async with asyncio.timeout(30):
            await asyncio.gather(*(a.registered.wait() for a in self.agent_list))
        return self.master_address

    async def stop(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        for agent in self.agent_list:
            with contextlib.suppress(Exception):
                await agent.stop()
        await self.server.stop()
        # Each agent removes its own cgroups; the parent they share is only
        # empty once all have stopped.
        if self.agent_list:
            for parent in self.agent_list[0].containerizer.cgroups.dirs(self.cgroup_prefix):
                with contextlib.suppress(OSError):
                    parent.rmdir()

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_until_signal(cluster: LocalCluster) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def fresh_work_dir(path: Path) -> Path:
    """Sandboxes of a previous local run are not ours to resume (no recovery
    yet): start clean so agent ids and sandboxes do not collide."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path
