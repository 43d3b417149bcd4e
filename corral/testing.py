"""Test helpers that ship with corral: a real in-process cluster and a
scheduler that records what it sees.

A framework author's test needs only this module::

    from corral.testing import local_cluster, RecordingScheduler, framework

    async def test_hello(tmp_path):
        async with local_cluster(tmp_path, agents=1) as cluster:
            async with framework(cluster.master_address) as (driver, rec):
                offer = await rec.next_offer()
                driver.launch(offer, [Task("t1", "echo hi", Resources.of(cpus=0.1, mem=32))])
                status = await rec.wait_terminal("t1")
                assert status.state is TaskState.FINISHED

Everything is real: gRPC over loopback, cgroups and processes (root needed).
Faults stay in the test process too: ``cluster.restart_master()``,
``cluster.stop_agent(i)`` / ``start_agent(i)`` / ``restart_agent(i)``,
:func:`agent_goes_away` / :func:`agent_comes_back` for a cut-off host, and
``corral.testing_net.partitionable`` for a framework cut off from its master
(docs/frameworks.md, "Test failover").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.cli.local import LocalCluster
from corral.frameworks.driver import SchedulerDriver, tear_down
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.types import MasterInfo, Offer, TaskState, TaskStatus
from corral.master.master import MasterConfig
from corral.master.server import MasterServer
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.transport import Credentials
from corral.zk import ZkCredentials

#: Fast timers so tests take milliseconds where production waits seconds.
FAST_MASTER = MasterConfig(
    allocation_interval_s=0.05,
    offer_timeout_s=30.0,
    agent_heartbeat_interval_s=0.5,
    framework_heartbeat_interval_s=1.0,
    agent_reregister_timeout_s=0.5,
)


@contextlib.asynccontextmanager
async def local_cluster(
    work_dir: Path,
    agents: int = 2,
    agent_resources: Resources | str | None = "cpus:2;mem:2048;disk:1024;ports:[31000-31099]",
    master_config: MasterConfig = FAST_MASTER,
    attributes: list[dict[str, str]] | None = None,
    image_import_dirs: tuple[Path, ...] = (),
    allowed_host_paths: tuple[Path, ...] = (),
    tls: bool = False,
) -> AsyncIterator[LocalCluster]:
    """A master and agents in this process; stopped (tasks killed, cgroups
    removed) on exit, also when the test fails. With ``tls`` they speak
    mutual TLS with a CA of the cluster's own: a framework then needs
    ``credentials=cluster.credentials("framework:NAME")``."""
    res = Resources.parse(agent_resources) if isinstance(agent_resources, str) else agent_resources
    cluster = LocalCluster(
        agents=agents,
        work_dir=work_dir,
        listen="127.0.0.1:0",
        agent_resources=res,
        master_config=master_config,
        cgroup_prefix=f"corral-test-{uuid.uuid4().hex[:8]}",
        attributes=attributes or [],
        image_import_dirs=image_import_dirs,
        allowed_host_paths=allowed_host_paths,
        tls=tls,
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@contextlib.asynccontextmanager
async def elected_cluster(
    zk_url: str,
    work_dir: Path,
    masters: int = 2,
    master_config: MasterConfig = FAST_MASTER,
    agent_resources: str = "cpus:1;mem:512",
    zk_session_timeout_s: float = 2.0,
    tls_dir: Path | None = None,
    zk_credentials: ZkCredentials | None = None,
) -> AsyncIterator[tuple[list[MasterServer], Agent]]:
    """``masters`` masters elected through the ZooKeeper at ``zk_url`` (the
    first one leads) and one agent that follows the leader, registered; all
    stopped on exit (tasks killed, cgroups removed), also when the test fails.
    With ``tls_dir`` they speak mutual TLS with certificates of the CA made (or
    found) there; a framework needs one of that CA too (:func:`issue_credentials`).
    With ``zk_credentials`` the masters own their znodes (corral/zk.py, "Access")."""

    def creds(principal: str) -> Credentials | None:
        return issue_credentials(tls_dir, principal) if tls_dir is not None else None

    servers = [
        MasterServer(
            "127.0.0.1:0",
            master_config,
            creds(f"master:m{i}"),
            zk=zk_url,
            zk_session_timeout_s=zk_session_timeout_s,
            zk_credentials=zk_credentials,
        )
        for i in range(masters)
    ]
    agent = Agent(
        AgentConfig(
            master=zk_url,
            work_dir=work_dir / "agent",
            resources=Resources.parse(agent_resources),
            cgroup_prefix=f"corral-test-{uuid.uuid4().hex[:8]}",
            hostname="elected-agent",
            credentials=creds("agent:elected-agent"),
        )
    )
    try:
        for m in servers:
            await m.start()
        await eventually(lambda: servers[0].leading, 10, "the first master to lead")
        await agent.start()
        async with asyncio.timeout(10):
            await agent.registered.wait()
        yield servers, agent
    finally:
        await agent.stop()
        for m in servers:
            await m.stop()


@dataclass
class TlsCluster:
    """A master and one agent (``n1``) over mutual TLS, and credentials of a CA
    of their own for every principal asked for (``creds["framework:a"]``)."""

    address: str
    server: MasterServer
    agent: Agent
    pki: Path
    creds: dict[str, Credentials]
    #: the master's audit log (``--audit-log``), if one was asked for
    audit_file: Path | None = None

    def audited(self) -> list[dict[str, Any]]:
        """The audit log's records, read as an operator would."""
        assert self.audit_file is not None, "tls_cluster(..., audit=True)"
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]


@contextlib.asynccontextmanager
async def tls_cluster(
    work_dir: Path, principals: Iterable[str] = (), audit: bool = False
) -> AsyncIterator[TlsCluster]:
    """A :class:`TlsCluster` with certificates for ``master:m1``, ``agent:n1``
    and ``principals``; stopped on exit (tasks killed), also when the test fails."""
    from corral.pki import CertificateAuthority, load_credentials

    ca = CertificateAuthority.init(work_dir / "pki")
    creds = {}
    for name in dict.fromkeys(["master:m1", "agent:n1", *principals]):
        issued = ca.issue(name)
        creds[name] = load_credentials(ca.cert_file, issued.cert, issued.key)
    audit_file = work_dir / "audit.jsonl" if audit else None
    server = MasterServer(
        "127.0.0.1:0", FAST_MASTER, creds["master:m1"], audit_log=str(audit_file) if audit_file else None
    )
    address = await server.start()
    agent = Agent(
        AgentConfig(
            master=address,
            work_dir=work_dir / "agent",
            resources=Resources.parse("cpus:1;mem:1024"),
            hostname="n1",
            cgroup_prefix=f"corral-test-{uuid.uuid4().hex[:8]}",
            credentials=creds["agent:n1"],
        )
    )
    await agent.start()
    try:
        async with asyncio.timeout(20):
            await agent.registered.wait()
        yield TlsCluster(address, server, agent, work_dir / "pki", creds, audit_file)
    finally:
        await agent.stop()
        await server.stop(0)


def issue_credentials(tls_dir: Path, principal: str) -> Credentials:
    """Credentials for ``principal`` from the CA in ``tls_dir`` (made there if none is)."""
    from corral.pki import CertificateAuthority, load_credentials

    ca = (
        CertificateAuthority.load(tls_dir)
        if (tls_dir / "ca.pem").exists()
        else CertificateAuthority.init(tls_dir, name="corral test")
    )
    issued = ca.issue(principal)
    return load_credentials(ca.cert_file, issued.cert, issued.key)


def agent_goes_away(agent: Agent) -> None:
    """The agent stops talking to any master (as if its host were cut off);
    its tasks keep running. :func:`agent_comes_back` undoes it."""
    agent._stopping = True
    assert agent._main is not None
    agent._main.cancel()


def agent_comes_back(agent: Agent) -> None:
    """The agent after :func:`agent_goes_away`: it connects to the leader again."""
    agent._stopping = False
    agent._main = asyncio.create_task(agent._connection_loop())


class RecordingScheduler(Scheduler):
    """Records offers, updates and errors; tests await what they expect."""

    def __init__(self, decline_unused: bool = False) -> None:
        self.offer_queue: asyncio.Queue[Offer] = asyncio.Queue()
        self.updates: list[TaskStatus] = []
        self.errors: list[tuple[str, str]] = []
        self.rescinds: list[str] = []
        self.framework_id = ""
        self.subscriptions = 0
        self.decline_unused = decline_unused
        self._changed = asyncio.Condition()

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        self.framework_id = framework_id
        self.subscriptions += 1
        # Offers of a previous connection (or a previous leader) are void.
        while not self.offer_queue.empty():
            self.offer_queue.get_nowait()
        await self._notify()

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        for offer in offers:
            self.offer_queue.put_nowait(offer)

    async def rescinded(self, driver: SchedulerDriver, offer_id: str) -> None:
        self.rescinds.append(offer_id)
        await self._notify()

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        self.updates.append(status)
        await self._notify()

    async def error(self, driver: SchedulerDriver, code: str, message: str) -> None:
        self.errors.append((code, message))
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def next_offer(self, timeout: float = 10.0, agent_id: str | None = None) -> Offer:
        """The next offer (of ``agent_id`` if given) not rescinded yet; others are discarded."""
        async with asyncio.timeout(timeout):
            while True:
                offer = await self.offer_queue.get()
                if offer.id in self.rescinds:
                    continue
                if agent_id is None or offer.agent_id == agent_id:
                    return offer

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
    ) -> None:
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; updates: "
                f"{[(u.task_id, u.state.name, u.message) for u in self.updates[-10:]]}; "
                f"errors: {self.errors[-5:]}"
            ) from None

    def latest(self, task_id: str) -> TaskStatus | None:
        for status in reversed(self.updates):
            if status.task_id == task_id:
                return status
        return None

    async def wait_state(self, task_id: str, state: TaskState, timeout: float = 20.0) -> TaskStatus:
        await self.wait_for(
            lambda: any(u.task_id == task_id and u.state is state for u in self.updates),
            timeout,
            f"{task_id} to reach {state.name}",
        )
        return next(u for u in self.updates if u.task_id == task_id and u.state is state)

    async def wait_terminal(self, task_id: str, timeout: float = 20.0) -> TaskStatus:
        await self.wait_for(
            lambda: (s := self.latest(task_id)) is not None and s.state.is_terminal,
            timeout,
            f"{task_id} to end",
        )
        status = self.latest(task_id)
        assert status is not None
        return status

    async def wait_error(self, timeout: float = 10.0) -> tuple[str, str]:
        count = len(self.errors)
        await self.wait_for(lambda: len(self.errors) > count, timeout, "an ERROR event")
        return self.errors[-1]


@contextlib.asynccontextmanager
async def framework(
    master: str, name: str = "test-framework", scheduler: RecordingScheduler | None = None, **kw: object
) -> AsyncIterator[tuple[SchedulerDriver, RecordingScheduler]]:
    """A subscribed driver with a :class:`RecordingScheduler`; torn down on exit."""
    rec = scheduler or RecordingScheduler()
    driver = SchedulerDriver(rec, name=name, master=master, **kw)  # type: ignore[arg-type]
    runner = asyncio.create_task(driver.run())
    try:
        async with asyncio.timeout(10):
            while not driver.connected.is_set():
                if runner.done():
                    runner.result()
                await asyncio.sleep(0.01)
        yield driver, rec
    finally:
        await tear_down(driver, runner)


async def listening(address: str, timeout_s: float = 30.0) -> None:
    """Wait until something accepts connections at ``HOST:PORT`` (a master
    process starting up, slowly on a busy host); TimeoutError after ``timeout_s``."""
    host, port = address.rsplit(":", 1)
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` s.

    Tests wait for what a user would see, with a deadline, never a bare sleep.
    """
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def corral_command() -> list[str]:
    """How to run the ``corral`` CLI of this installation as a subprocess."""
    script = Path(sys.executable).parent / "corral"
    return [str(script)] if script.exists() else [sys.executable, "-m", "corral.cli.main"]


async def run_corral(
    *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 60.0
) -> tuple[int, str]:
    """Run ``corral ARGS`` as a user would (a subprocess) and return its exit
    status and its output (stdout and stderr together); ``env`` adds to this
    process's environment (warnings only, wide tables, unless it says otherwise)."""
    proc = await asyncio.create_subprocess_exec(
        *corral_command(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "CORRAL_LOG_LEVEL": "warning", "COLUMNS": "250", **(env or {})},
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"corral {' '.join(args)} did not end within {timeout_s}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def terminate(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 20.0) -> None:
    """SIGTERM every process still running, then wait; SIGKILL whatever hangs."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
