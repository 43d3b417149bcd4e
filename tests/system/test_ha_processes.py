"""Separate processes as on real nodes: two `corral master --zk`, one
`corral agent`, and CLI clients that only know the zk:// URL, all over mutual
TLS with certificates of one throwaway CA, as a real cluster runs. `kill -9`
of the leading master: the standby takes over within the session timeout and
the clients follow it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from corral.pki import CertificateAuthority, load_credentials
from corral.proto import operator_pb2 as op
from corral.proto.operator_pb2_grpc import OperatorStub
from corral.testing import corral_command, terminate
from corral.testing_zookeeper import free_port
from corral.transport import ENV_CA, ENV_CERT, ENV_KEY, Credentials, make_sync_channel

pytestmark = [pytest.mark.root, pytest.mark.slow]
SESSION_S = 2


@dataclass
class Pki:
    ca: CertificateAuthority

    def flags(self, principal: str) -> list[str]:
        """``--tls-ca/--tls-cert/--tls-key`` of ``principal`` (issued now)."""
        issued = self.ca.issue(principal)
        return [
            "--tls-ca",
            str(self.ca.cert_file),
            "--tls-cert",
            str(issued.cert),
            "--tls-key",
            str(issued.key),
        ]

    def credentials(self, principal: str) -> Credentials:
        issued = self.ca.issue(principal)
        return load_credentials(self.ca.cert_file, issued.cert, issued.key)


@pytest.fixture
def pki(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pki:
    """One CA a test; the CLI runs as operator:test through CORRAL_TLS_*."""
    pki = Pki(CertificateAuthority.init(tmp_path / "pki"))
    operator = pki.ca.issue("operator:test")
    monkeypatch.setenv(ENV_CA, str(pki.ca.cert_file))
    monkeypatch.setenv(ENV_CERT, str(operator.cert))
    monkeypatch.setenv(ENV_KEY, str(operator.key))
    return pki


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_LOG_LEVEL": "warning"}
    return subprocess.run(
        [*corral_command(), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        terminate(procs)


def _masters(
    procs: list[subprocess.Popen[bytes]], tmp_path: Path, zk_url: str, pki: Pki, count: int, *extra: str
) -> dict[int, subprocess.Popen[bytes]]:
    """``count`` masters contending through ``zk_url``, by port."""
    masters = {}
    for i in range(count):
        port = free_port()
        masters[port] = _spawn(
            procs,
            tmp_path / f"master{i}.log",
            "master",
            "--listen",
            f"127.0.0.1:{port}",
            "--zk",
            zk_url,
            "--zk-session-timeout",
            str(SESSION_S),
            *pki.flags(f"master:m{i}"),
            *extra,
        )
    return masters


def _agent(
    procs: list[subprocess.Popen[bytes]], tmp_path: Path, zk_url: str, pki: Pki, name: str, resources: str
) -> None:
    _spawn(
        procs,
        tmp_path / f"{name}.log",
        "agent",
        "--master",
        zk_url,
        "--work-dir",
        str(tmp_path / name),
        "--hostname",
        name,
        "--resources",
        resources,
        "--cgroup-prefix",
        f"corral-test-{os.getpid()}-{name}",
        *pki.flags(f"agent:{name}"),
    )


def _spawn(procs: list[subprocess.Popen[bytes]], log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CORRAL_LOG_LEVEL": "info"}
    with log.open("wb") as out:
        p = subprocess.Popen([*corral_command(), *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    procs.append(p)
    return p


def _leading(port: int, creds: Credentials) -> bool | None:
    """The master's own answer (GetMasterInfo): piped, the CLI's tables name no
    master (docs/cli.md); None if it does not answer."""
    channel = make_sync_channel(f"127.0.0.1:{port}", creds)
    try:
        return bool(OperatorStub(channel).GetMasterInfo(op.GetMasterInfoRequest(), timeout=2.0).leading)
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def _leader_pid(masters: dict[int, subprocess.Popen[bytes]], pki: Pki) -> int:
    creds = pki.credentials("operator:test")
    leading = [port for port in masters if _leading(port, creds)]
    assert len(leading) == 1, f"masters leading: {leading}"
    return masters[leading[0]].pid


def test_kill_9_of_the_leader_and_clients_follow(
    zk_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]], pki: Pki
) -> None:
    masters = _masters(processes, tmp_path, zk_url, pki, 2)
    _agent(processes, tmp_path, zk_url, pki, "agent", "cpus:1;mem:512")
    deadline = time.monotonic() + 30
    while True:
        res = _run("agents", "--master", zk_url)
        if res.returncode == 0 and "connected" in res.stdout:
            break
        assert time.monotonic() < deadline, f"no agent registered: {res.stdout} {res.stderr}"
        time.sleep(0.2)

    first = _run("run", "--master", zk_url, "--", "echo", "before")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "before\n"

    leader = _leader_pid(masters, pki)
    os.kill(leader, signal.SIGKILL)
    killed_at = time.monotonic()
    while True:
        res = _run("agents", "--master", zk_url)
        if res.returncode == 0 and "connected" in res.stdout:
            break
        assert time.monotonic() - killed_at < SESSION_S + 15, f"no new leader: {res.stderr}"
        time.sleep(0.2)
    took = time.monotonic() - killed_at
    assert _leader_pid(masters, pki) != leader
    after = _run("run", "--master", zk_url, "--", "echo", "after")
    assert after.returncode == 0, after.stderr
    assert after.stdout == "after\n"
    print(f"failover to a serving leader with the agent re-registered: {took:.1f}s")


def test_a_frozen_leader_is_replaced_and_steps_down_when_it_thaws(
    zk_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]], pki: Pki
) -> None:
    """SIGSTOP the leader past its session (as a partition would): the standby
    takes over, clients move to it, and the thawed one no longer leads."""
    masters = _masters(processes, tmp_path, zk_url, pki, 2)
    _agent(processes, tmp_path, zk_url, pki, "agent", "cpus:1;mem:512")
    deadline = time.monotonic() + 30
    while not ((res := _run("agents", "--master", zk_url)).returncode == 0 and "connected" in res.stdout):
        assert time.monotonic() < deadline, f"no agent registered: {res.stdout} {res.stderr}"
        time.sleep(0.2)
    leader = _leader_pid(masters, pki)
    old_port = next(p for p, proc in masters.items() if proc.pid == leader)
    (new_port,) = set(masters) - {old_port}
    creds = pki.credentials("operator:test")
    os.kill(leader, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        while True:
            res = _run("agents", "--master", zk_url, timeout=30)
            if res.returncode == 0 and "connected" in res.stdout and _leading(new_port, creds):
                break
            assert time.monotonic() - frozen_at < SESSION_S + 20, f"no new leader: {res.stdout} {res.stderr}"
            time.sleep(0.3)
        ok = _run("run", "--master", zk_url, "--", "echo", "while-frozen")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "while-frozen\n"
    finally:
        os.kill(leader, signal.SIGCONT)
    # Thawed, it finds its session gone and refuses to act as leader.
    old = f"127.0.0.1:{old_port}"
    deadline = time.monotonic() + 15
    while True:
        res = _run("agents", "--master", old)
        if res.returncode == 0 and _leading(old_port, creds) is False:
            break  # it no longer leads, and it sent us to the real leader
        assert time.monotonic() < deadline, "the thawed master still answers as leader"
        time.sleep(0.2)
    log = (tmp_path / "master0.log").read_text() + (tmp_path / "master1.log").read_text()
    assert "master.stepped_down" in log


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _task_pids(work: Path) -> dict[str, int]:
    """task id -> pid, from the agents' container records (container ids start with the task id)."""
    out: dict[str, int] = {}
    for record in work.glob("agent*/containers/*/container.json"):
        data = json.loads(record.read_text())
        task_id = data["container_id"].rsplit("-", 1)[0]
        assert task_id not in out, f"{task_id} runs twice"
        out[task_id] = int(data["task_pid"])
    return out


async def test_kill_9_of_the_leader_with_100_running_tasks(
    zk_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]], pki: Pki
) -> None:
    """Three masters, two agents, 100 long tasks: kill -9 the leader. Every
    task keeps running (same pid), the framework keeps its id and sees every
    task's state, nothing runs twice, and new launches work."""
    from corral.frameworks import Task, TaskState
    from corral.resources import Resources
    from corral.testing import framework

    masters = _masters(processes, tmp_path, zk_url, pki, 3, "--allocation-interval", "0.2")
    for i in range(2):
        _agent(processes, tmp_path, zk_url, pki, f"agent{i}", "cpus:2;mem:2048")
    small = Resources.of(cpus=0.01, mem=8)
    creds = pki.credentials("framework:test")
    async with framework(zk_url, failover_timeout_s=60, credentials=creds) as (driver, rec):
        # As nobody: the built-in policy refuses root to a framework.
        pending = [Task(f"long-{i}", "sleep 300", small, user=(65534, 65534)) for i in range(100)]
        async with asyncio.timeout(60):
            while pending:
                offer = await rec.next_offer(timeout=30)
                take, left = [], offer.resources
                while pending and left.contains(small):
                    take.append(pending.pop())
                    left = left - small
                driver.launch(offer, take, refuse_s=0)
        await rec.wait_for(
            lambda: sum(u.state is TaskState.RUNNING for u in rec.updates) >= 100, 60, "100 tasks RUNNING"
        )
        pids = _task_pids(tmp_path)
        assert len(pids) == 100
        framework_id = driver.framework_id
        leader = _leader_pid(masters, pki)
        os.kill(leader, signal.SIGKILL)
        await rec.wait_for(lambda: rec.subscriptions >= 2, SESSION_S + 20, "the framework to re-subscribe")
        assert driver.framework_id == framework_id
        # Every task's state, from the new leader, once the agents are back.
        async with asyncio.timeout(30):
            while True:
                before = len(rec.updates)
                driver.reconcile([(f"long-{i}", "") for i in range(100)])
                await rec.wait_for(lambda n=before: len(rec.updates) >= n + 100, 20, "100 answers")
                answers = {u.task_id: u.state for u in rec.updates[before:]}
                if all(state is TaskState.RUNNING for state in answers.values()) and len(answers) == 100:
                    break
                await asyncio.sleep(0.5)
        assert _task_pids(tmp_path) == pids  # nothing relaunched, nothing twice
        assert all(_alive(pid) for pid in pids.values())
        # New launches resume.
        offer = await rec.next_offer(timeout=30)
        driver.launch(offer, [Task("after", "echo after", small, user=(65534, 65534))])
        assert (await rec.wait_terminal("after", timeout=30)).state is TaskState.FINISHED
