"""``corral local``: a master and N agents in one process, no ZooKeeper."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from corral import __version__
from corral.errors import CorralError
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
        #: agents stopped by stop_agent (their tasks still run): stop() takes
        #: them back first, so that their tasks end with the cluster
        self._stopped_agents: set[int] = set()
        self.metrics: MetricsServer | None = None
        self.master_address = ""
        # Stable across restarts: the agents find the containers a killed
        # run left under the same prefix (recovery), whatever our pid is now.
        self.cgroup_prefix = self.cgroup_prefix or cgroup_prefix_for(self.work_dir)

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

    # -- faults, for tests (corral.testing) ----------------------------------------

    async def restart_master(self, down_s: float = 0.0, timeout_s: float = 30.0) -> None:
        """Stop the master and start a new one at the same address after
        ``down_s``, as a crash and a supervisor's restart would, recovering
        what the first had registered (agents, frameworks, roles) as a standby
        taking over from the registry does; returns once every running agent
        has re-registered with it (bringing back its tasks), while frameworks
        re-subscribe with their ids."""
        old = self.server
        await old.stop()
        if down_s > 0:
            await asyncio.sleep(down_s)  # the outage itself: nothing to wait for
        server = MasterServer(
            self.master_address, self.master_config, self._issue("master:local"), policy=self._policy_file()
        )
        server.registry = old.registry  # (standalone: in memory, handed on)
        self.server = server
        await server.start()
        wanted = {a.agent_id for i, a in enumerate(self.agent_list) if i not in self._stopped_agents}
        async with asyncio.timeout(timeout_s):
            while not (server.master is not None and wanted <= set(server.master.state.agents)):
                await asyncio.sleep(0.02)

    async def stop_agent(self, index: int) -> None:
        """Stop agent ``index`` as a killed agent process would: its tasks run on,
        unwatched, and the master soon sees it disconnected."""
        await self.agent_list[index].stop(kill_tasks=False)
        self._stopped_agents.add(index)

    async def start_agent(self, index: int, timeout_s: float = 30.0) -> Agent:
        """Start agent ``index`` again (after :meth:`stop_agent`): it recovers
        its tasks from its checkpoints and re-registers with the same id."""
        agent = Agent(self.agent_list[index].config)
        self.agent_list[index] = agent
        self._stopped_agents.discard(index)
        await agent.start()
        async with asyncio.timeout(timeout_s):
            await agent.registered.wait()
        return agent

    async def restart_agent(self, index: int) -> Agent:
        """:meth:`stop_agent` then :meth:`start_agent`."""
        await self.stop_agent(index)
        return await self.start_agent(index)

    async def stop(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        for index in sorted(self._stopped_agents):
            with contextlib.suppress(Exception):  # it recovers (and so can kill) what it left
                agent = Agent(self.agent_list[index].config)
                self.agent_list[index] = agent
                await agent.start()
        self._stopped_agents.clear()
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


def cgroup_prefix_for(work_dir: Path) -> str:
    """The cgroup prefix of the local cluster whose state is in ``work_dir``
    (the same for every run on that directory)."""
    digest = hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:12]
    return f"corral/local-{digest}"


#: the lock and pid file in a local cluster's work dir
LOCK_FILE = "corral-local.pid"


class StateDirBusyError(CorralError):
    """Another ``corral local`` runs on this state directory; the message names its pid."""


@dataclass
class StateDirLock:
    """An exclusive ``flock`` on ``<work_dir>/corral-local.pid`` held for the
    life of the process, with our pid written in it.

    The kernel drops the lock when its holder dies, ``kill -9`` included, so a
    file left behind by a killed run is stale by construction: it is taken
    over, and :attr:`previous_pid` says whose it was (that run's agents then
    recover their containers). A lock held by a live process is refused,
    naming its pid. (A pid file alone could not tell a live holder from a
    recycled pid; the lock can.)
    """

    path: Path
    fd: int
    #: the pid a killed run left in the file (0: none, or it stopped cleanly)
    previous_pid: int = 0

    @classmethod
    def acquire(cls, work_dir: Path) -> StateDirLock:
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise StateDirBusyError(
                f"{work_dir} is in use by another corral local (pid {holder or 'unknown'}); stop it "
                "first, or give this one another --work-dir and CORRAL_HOME"
            ) from None
        previous = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd, previous if previous != os.getpid() else 0)

    def release(self) -> None:
        """Say we stopped cleanly (an empty file) and drop the lock."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def prepare_work_dir(path: Path, fresh: bool) -> None:
    """With ``fresh``, forget what a previous run on ``path`` left (agent ids,
    checkpoints, sandboxes, the batch and service databases) but the lock we
    hold; the agents' recovery then kills any container still running under
    the cluster's cgroup prefix as a leftover. Without it, keep everything."""
    path.mkdir(parents=True, exist_ok=True)
    if not fresh:
        return
    for entry in path.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def claim_state_dir(work_dir: Path, fresh: bool) -> StateDirLock:
    """Lock ``work_dir`` for this ``corral local`` (exit 4 naming the pid of
    another that holds it, or that ``local.json`` records for another work
    dir, since starting would take its clients away), then prepare it."""
    from corral.cli.common import err_console, fail
    from corral.cli.discovery import recorded_local

    try:
        lock = StateDirLock.acquire(work_dir)
    except StateDirBusyError as e:
        fail(str(e), 4)
        raise AssertionError("unreachable: fail exits") from None
    other = recorded_local()
    if other is not None and other.get("pid") != os.getpid() and Path(str(other.get("work_dir"))) != work_dir:
        lock.release()
        fail(
            f"another corral local (pid {other.get('pid')}, work dir {other.get('work_dir')}) is recorded "
            "as this user's local cluster; stop it first, or set CORRAL_HOME for this one",
            4,
        )
    if lock.previous_pid and not fresh:
        err_console.print(
            f"corral local pid {lock.previous_pid} did not stop cleanly: its agents take back the "
            "tasks still running (or report them lost)",
            highlight=False,
        )
    prepare_work_dir(work_dir, fresh)
    return lock
