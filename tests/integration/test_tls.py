"""Mutual TLS over real loopback connections: who gets in, who is refused at
the handshake, what principal the master sees, the refusals of plaintext off
loopback, a task end to end, the CLI of a TLS `corral local`, and the batch
framework's HTTP API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from corral.frameworks import Task, TaskState
from corral.frameworks.batch.api import BatchApiError, BatchClient
from corral.frameworks.batch.service import BatchService
from corral.identity import Principal, principal_of
from corral.pki import CertificateAuthority, load_credentials
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import Resources
from corral.testing import (
    corral_command,
    elected_cluster,
    eventually,
    framework,
    issue_credentials,
    listening,
    local_cluster,
    terminate,
)
from corral.testing_zookeeper import free_port
from corral.transport import Credentials, bind, make_channel, make_server, make_sync_channel


class RecordingOperator(operator_pb2_grpc.OperatorServicer):
    """Answers GetMasterInfo and keeps the principal of every call that got in."""

    def __init__(self) -> None:
        self.principals: list[Principal] = []

    async def GetMasterInfo(self, request: Any, context: Any) -> op.GetMasterInfoResponse:
        self.principals.append(principal_of(context))
        return op.GetMasterInfoResponse()


@pytest.fixture
def pki(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "pki")


def creds(ca: CertificateAuthority, principal: str) -> Credentials:
    issued = ca.issue(principal)
    return load_credentials(ca.cert_file, issued.cert, issued.key)


@pytest.fixture
async def tls_server(pki: CertificateAuthority) -> AsyncIterator[tuple[str, RecordingOperator]]:
    """A bare gRPC server with the master's certificate and a recording servicer."""
    servicer = RecordingOperator()
    master = creds(pki, "master:m1")
    server = make_server(master)
    operator_pb2_grpc.add_OperatorServicer_to_server(servicer, server)
    port = bind(server, "127.0.0.1:0", master)
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


async def call(address: str, credentials: Credentials | None) -> None:
    async with make_channel(address, credentials) as channel:
        await operator_pb2_grpc.OperatorStub(channel).GetMasterInfo(op.GetMasterInfoRequest(), timeout=5)


async def test_a_certificate_of_the_ca_names_the_principal(
    pki: CertificateAuthority, tls_server: tuple[str, RecordingOperator]
) -> None:
    address, servicer = tls_server
    await call(address, creds(pki, "operator:alice"))
    # A claim in the metadata does not override the certificate.
    await call(address, creds(pki, "agent:node-1").claiming("operator:root"))
    assert servicer.principals == [
        Principal("operator", "alice", authenticated=True),
        Principal("agent", "node-1", authenticated=True),
    ]


async def test_no_client_certificate_is_refused_at_the_handshake(
    pki: CertificateAuthority, tls_server: tuple[str, RecordingOperator]
) -> None:
    address, servicer = tls_server
    ca_only = Credentials(root_certificates=pki.cert_file.read_bytes())
    async with grpc.aio.secure_channel(
        address, grpc.ssl_channel_credentials(ca_only.root_certificates)
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await operator_pb2_grpc.OperatorStub(ch).GetMasterInfo(op.GetMasterInfoRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # Plaintext (a task on host networking calling without credentials) does not get in either.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(address, Credentials(claim="operator:root"))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.principals == []  # no call reached the servicer


async def test_a_certificate_of_another_ca_is_refused(
    tmp_path: Path, pki: CertificateAuthority, tls_server: tuple[str, RecordingOperator]
) -> None:
    address, servicer = tls_server
    other = CertificateAuthority.init(tmp_path / "other")
    mallory = other.issue("operator:mallory")
    forged = Credentials(
        root_certificates=pki.cert_file.read_bytes(),  # trusts the real CA, presents the other's cert
        private_key=mallory.key.read_bytes(),
        certificate_chain=mallory.cert.read_bytes(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(address, forged)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.principals == []


async def test_a_client_refuses_a_master_of_another_ca(
    tmp_path: Path, pki: CertificateAuthority, tls_server: tuple[str, RecordingOperator]
) -> None:
    address, servicer = tls_server
    other = CertificateAuthority.init(tmp_path / "other")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(address, creds(other, "operator:alice"))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.principals == []


async def test_a_tenants_certificate_cannot_pose_as_a_master(pki: CertificateAuthority) -> None:
    # A framework's certificate also serves (its HTTP API on localhost), so a
    # tenant could start a "master" with it; agents, frameworks and operators
    # check for the master's name (MASTER_TLS_NAME), which only master
    # certificates carry, and refuse it at the handshake.
    servicer = RecordingOperator()
    tenant = creds(pki, "framework:b")
    server = make_server(tenant)
    operator_pb2_grpc.add_OperatorServicer_to_server(servicer, server)
    port = bind(server, "127.0.0.1:0", tenant)
    await server.start()
    try:
        for victim in ("agent:n1", "operator:alice", "framework:a"):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call(f"127.0.0.1:{port}", creds(pki, victim))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            with (
                pytest.raises(grpc.RpcError),
                make_sync_channel(f"127.0.0.1:{port}", creds(pki, victim)) as ch,
            ):
                operator_pb2_grpc.OperatorStub(ch).GetMasterInfo(op.GetMasterInfoRequest(), timeout=5)
        assert servicer.principals == []
    finally:
        await server.stop(0)


async def test_a_plaintext_claim_is_unauthenticated() -> None:
    servicer = RecordingOperator()
    server = make_server()
    operator_pb2_grpc.add_OperatorServicer_to_server(servicer, server)
    port = bind(server, "127.0.0.1:0")
    await server.start()
    try:
        await call(f"127.0.0.1:{port}", Credentials(claim="operator:alice"))
        await call(f"127.0.0.1:{port}", None)
    finally:
        await server.stop(0)
    assert servicer.principals == [
        Principal("operator", "alice", authenticated=False),
        Principal("anonymous", "anonymous", authenticated=False),
    ]


def corral(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*corral_command(), *args],
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_plaintext_off_loopback_is_refused_with_a_reason(tmp_path: Path) -> None:
    res = corral("master", "--listen", "0.0.0.0:0")
    assert res.returncode != 0
    assert "refusing to listen on 0.0.0.0:0 without TLS" in res.stderr
    assert "--insecure" in res.stderr
    res = corral("agent", "--master", "192.0.2.1:5050", "--work-dir", str(tmp_path / "agent"))
    assert res.returncode != 0
    assert "refusing to call the master at 192.0.2.1:5050 without TLS" in res.stderr
    assert "--insecure" in res.stderr
    res = corral("agent", "--master", "zk://192.0.2.1:2181/corral", "--work-dir", str(tmp_path / "agent"))
    assert res.returncode != 0
    assert "refusing to call the master at zk://192.0.2.1:2181/corral without TLS" in res.stderr


def test_an_open_zookeeper_off_loopback_is_refused_with_a_reason(tmp_path: Path) -> None:
    zk = ["--listen", "127.0.0.1:0", "--zk", "zk://192.0.2.1:2181/corral", "--zk-connect-timeout", "1"]
    res = corral("master", *zk)
    assert res.returncode == 2
    assert "refusing to use ZooKeeper at 192.0.2.1:2181 without --zk-credentials" in res.stderr
    assert "--insecure" in res.stderr
    loose = tmp_path / "zk-credentials"
    loose.write_text("corral-master:0123456789abcdef\n")
    loose.chmod(0o644)
    res = corral("master", *zk, "--zk-credentials", str(loose))
    assert res.returncode == 2
    assert f"--zk-credentials {loose}: readable by others (mode 644); chmod 600 it" in res.stderr
    res = corral("master", "--listen", "127.0.0.1:0", "--zk-credentials", str(loose))
    assert res.returncode == 2
    assert "--zk-credentials: only with --zk" in res.stderr


def test_a_bad_certificate_stops_the_master_naming_the_file(
    tmp_path: Path, pki: CertificateAuthority
) -> None:
    alice = pki.issue("operator:alice")
    bob = pki.issue("operator:bob")
    res = corral(
        "master", "--listen", "127.0.0.1:0", "--tls-ca", str(pki.cert_file),
        "--tls-cert", str(alice.cert), "--tls-key", str(bob.key),
    )  # fmt: skip
    assert res.returncode != 0
    assert f"{bob.key}: this key does not match the certificate {alice.cert}" in " ".join(res.stderr.split())


@pytest.mark.root
async def test_an_agent_and_a_framework_run_a_task_over_mutual_tls(tmp_path: Path) -> None:
    async with local_cluster(tmp_path / "cluster", agents=1, tls=True) as cluster:
        assert cluster.server.credentials is not None
        assert cluster.server.credentials.secure
        assert all(a.config.credentials and a.config.credentials.secure for a in cluster.agent_list)
        fw = cluster.credentials("framework:tls-test")
        async with framework(cluster.master_address, name="tls-test", credentials=fw) as (driver, rec):
            offer = await rec.next_offer()
            # As nobody: the built-in policy lets no framework run tasks as root.
            task = Task("t1", "echo over tls", Resources.of(cpus=0.1, mem=32), user=(65534, 65534))
            driver.launch(offer, [task])
            status = await rec.wait_terminal("t1")
            assert status.state is TaskState.FINISHED, status
        # The operator API refuses a caller without a certificate at the handshake.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(cluster.master_address, Credentials(claim="operator:root"))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        await call(cluster.master_address, cluster.credentials("operator:alice"))


@pytest.mark.root
async def test_the_batch_api_takes_operator_certificates_only(tmp_path: Path) -> None:
    async with local_cluster(tmp_path / "cluster", agents=1, tls=True) as cluster:
        svc = BatchService(
            cluster.master_address,
            tmp_path / "batch.db",
            record=False,
            credentials=cluster.credentials("framework:batch"),
        )
        address = await svc.start()
        try:
            # The clients block: they run in threads while this loop serves the API.
            operator = BatchClient(address, credentials=cluster.credentials("operator:alice"))
            spec = {"name": "hi", "tasks": [{"name": "t", "command": "true"}]}
            job = await asyncio.to_thread(operator.submit, spec)
            assert job["job_id"] in {j["id"] for j in (await asyncio.to_thread(operator.jobs))["jobs"]}

            plain = BatchClient(address)  # plain HTTP to a TLS port
            with pytest.raises(BatchApiError) as e:
                await asyncio.to_thread(plain.jobs)
            assert "cannot reach the batch service" in str(e.value)
            ca_only = Credentials(root_certificates=cluster.credentials("operator:x").root_certificates)
            no_cert = BatchClient(address, credentials=ca_only)
            assert no_cert.tls is None  # nothing to present: it would be plain HTTP again
            with pytest.raises(BatchApiError):
                await asyncio.to_thread(no_cert.jobs)
            # TLS that trusts the CA but shows no certificate: the server ends the
            # handshake (with TLS 1.3 the client sees the connection close).
            anonymous = BatchClient(address)
            anonymous.tls = ssl.create_default_context(cadata=(ca_only.root_certificates or b"").decode())
            with pytest.raises(BatchApiError) as e:
                await asyncio.to_thread(anonymous.jobs)
            assert "cannot reach the batch service" in str(e.value)
            other_kind = BatchClient(address, credentials=cluster.credentials("framework:batch"))
            with pytest.raises(BatchApiError) as e:
                await asyncio.to_thread(other_kind.jobs)
            assert "principal framework:batch may not use_api api:batch:read" in str(e.value)
            assert len((await asyncio.to_thread(operator.jobs))["jobs"]) == 1  # nothing else got in
            # The operator's job runs (and ends before the cluster stops).
            await eventually(
                lambda: svc.engine.jobs[job["job_id"]].state == "SUCCEEDED",
                30,
                "the submitted job to succeed",
            )
        finally:
            await svc.stop()


@pytest.mark.root
async def test_the_batch_api_asks_the_masters_policy(tmp_path: Path) -> None:
    # An operator the policy limits to reading cannot submit (a job runs as
    # root under the local policy); one without use_api cannot even read.
    acls = tmp_path / "acls.toml"
    acls.write_text(
        'default = "deny"\n'
        '[[rules]]\nallow = true\nprincipals = ["operator:alice"]\nactions = ["*"]\n'
        '[[rules]]\nallow = true\nprincipals = ["operator:viewer"]\nactions = ["use_api"]\n'
        'objects = ["api:batch:read"]\n'
    )
    async with local_cluster(tmp_path / "cluster", agents=1, tls=True) as cluster:
        svc = BatchService(
            cluster.master_address,
            tmp_path / "batch.db",
            record=False,
            credentials=cluster.credentials("framework:batch"),
            acls=acls,
        )
        address = await svc.start()
        try:
            spec = {"name": "hi", "tasks": [{"name": "t", "command": "true"}]}
            viewer = BatchClient(address, credentials=cluster.credentials("operator:viewer"))
            assert (await asyncio.to_thread(viewer.jobs))["jobs"] == []
            with pytest.raises(BatchApiError) as e:
                await asyncio.to_thread(viewer.submit, spec)
            assert "principal operator:viewer may not use_api api:batch:write" in str(e.value)
            nobody = BatchClient(address, credentials=cluster.credentials("operator:bob"))
            with pytest.raises(BatchApiError) as e:
                await asyncio.to_thread(nobody.jobs)
            assert "principal operator:bob may not use_api api:batch:read" in str(e.value)
            alice = BatchClient(address, credentials=cluster.credentials("operator:alice"))
            await asyncio.to_thread(alice.submit, spec)
            assert len((await asyncio.to_thread(viewer.jobs))["jobs"]) == 1
        finally:
            await svc.stop()


@pytest.fixture
def tls_local(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`corral local` as a user starts it: TLS by default, found through local.json."""
    home = tmp_path / "home"
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
    for name in ("CORRAL_MASTER", "CORRAL_TLS_CA", "CORRAL_TLS_CERT", "CORRAL_TLS_KEY"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [*corral_command(), "local", "--agents", "1", "--port", "0", "--no-services"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (home / "local.json").exists() or not (home / "batch.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"corral local did not start: {proc.stdout.read() if proc.stdout else ''}"
                )
            time.sleep(0.05)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.root
def test_the_cli_finds_a_tls_local_cluster_with_no_flags(tls_local: dict[str, str]) -> None:
    home = Path(tls_local["CORRAL_HOME"])
    record = json.loads((home / "local.json").read_text())
    assert set(record["tls"]) == {"ca", "cert", "key"}
    assert Path(record["tls"]["cert"]).name.startswith("operator-")
    assert json.loads((home / "batch.json").read_text())["tls"] is True

    res = corral("run", "--", "echo", "hello over tls", env=tls_local, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello over tls\n"
    res = corral("jobs", env=tls_local)
    assert res.returncode == 0, res.stderr

    # A client that does not have the cluster's certificates cannot talk to it.
    elsewhere = {**tls_local, "CORRAL_HOME": str(home.parent / "elsewhere")}
    res = corral("agents", "--master", record["master"], env=elsewhere)
    assert res.returncode != 0
    assert "cannot reach the master" in res.stderr
    assert "--tls-ca" in " ".join(res.stderr.split())


async def test_during_a_ca_change_both_cas_are_trusted(tmp_path: Path, pki: CertificateAuthority) -> None:
    new = CertificateAuthority.init(tmp_path / "new")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(new.cert_file.read_bytes() + pki.cert_file.read_bytes())
    old_master = pki.issue("master:m1")
    master = load_credentials(bundle, old_master.cert, old_master.key)
    servicer = RecordingOperator()
    server = make_server(master)
    operator_pb2_grpc.add_OperatorServicer_to_server(servicer, server)
    port = bind(server, "127.0.0.1:0", master)
    await server.start()
    try:
        for issuer, name in ((pki, "operator:old"), (new, "operator:new")):
            issued = issuer.issue(name)
            await call(f"127.0.0.1:{port}", load_credentials(bundle, issued.cert, issued.key))
    finally:
        await server.stop(0)
    assert [str(p) for p in servicer.principals] == ["operator:old", "operator:new"]


@pytest.mark.root
async def test_an_agent_and_a_framework_follow_a_failover_over_mutual_tls(
    zk_url: str, tmp_path: Path
) -> None:
    tls_dir = tmp_path / "tls"
    async with elected_cluster(zk_url, tmp_path, tls_dir=tls_dir) as ((leader, standby), agent):
        fw = issue_credentials(tls_dir, "framework:ha")
        async with framework(zk_url, name="ha", failover_timeout_s=30, credentials=fw) as (driver, rec):
            offer = await rec.next_offer()
            task = Task("survivor", "sleep 300", Resources.of(cpus=0.1, mem=32), user=(65534, 65534))
            driver.launch(offer, [task])
            await rec.wait_state("survivor", TaskState.RUNNING)
            await leader.stop()
            await eventually(lambda: standby.leading, 10, "the standby to lead")
            await eventually(
                lambda: standby.master is not None and agent.agent_id in standby.master.state.agents,
                15,
                "the agent to re-register with the new leader over TLS",
            )
            await rec.wait_for(lambda: rec.subscriptions >= 2, 15, "the framework to re-subscribe over TLS")
            driver.kill("survivor")
            status = await rec.wait_terminal("survivor")
            assert status.state is TaskState.KILLED


def test_corral_certs_makes_a_ca_issues_and_shows(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    res = corral("certs", "init", str(pki_dir))
    assert res.returncode == 0, res.stderr
    assert "ca.pem" in res.stdout
    res = corral("certs", "init", str(pki_dir))
    assert res.returncode != 0
    assert "a CA already exists here" in res.stderr
    res = corral(
        "certs", "issue", "--ca", str(pki_dir), "master:m1", "--dns", "m1.example", "--ip", "10.0.0.5"
    )
    assert res.returncode == 0, res.stderr
    shown = corral("certs", "show", str(pki_dir / "master-m1.pem"))
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert lines["principal"].strip() == "master:m1"
    assert lines["DNS names"].strip() == "m1.example, localhost, master.corral"
    assert lines["IP addresses"].strip() == "10.0.0.5, 127.0.0.1, ::1"
    assert lines["usages"].strip() == "clientAuth, serverAuth"
    res = corral("certs", "issue", "--ca", str(pki_dir), "robot:r2")
    assert res.returncode != 0
    assert "kind must be one of" in res.stderr
    res = corral("certs", "show", str(tmp_path / "nope.pem"))
    assert res.returncode != 0
    assert "nope.pem: no such file" in res.stderr


def spawn(procs: list[subprocess.Popen[bytes]], log: Path, env: dict[str, str], *args: str) -> None:
    with log.open("ab") as out:
        procs.append(
            subprocess.Popen([*corral_command(), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        )


@pytest.mark.root
async def test_separate_processes_over_mutual_tls(tmp_path: Path, pki: CertificateAuthority) -> None:
    """`corral master` and `corral agent` with certificates from the environment,
    and `corral run` with an operator's: a task runs end to end."""
    master, agent, alice = (pki.issue(p) for p in ("master:m1", "agent:node-1", "operator:alice"))

    def env(issued: Any) -> dict[str, str]:
        return {
            **os.environ,
            "CORRAL_LOG_LEVEL": "info",
            "CORRAL_HOME": str(tmp_path / "home"),
            "CORRAL_TLS_CA": str(pki.cert_file),
            "CORRAL_TLS_CERT": str(issued.cert),
            "CORRAL_TLS_KEY": str(issued.key),
        }

    address = f"127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        spawn(procs, tmp_path / "master.log", env(master), "master", "--listen", address)
        await listening(address)
        spawn(
            procs, tmp_path / "agent.log", env(agent),
            "agent", "--master", address, "--work-dir", str(tmp_path / "agent"),
            "--resources", "cpus:1;mem:256", "--cgroup-prefix", f"corral-tls-{os.getpid()}",
        )  # fmt: skip
        res = await asyncio.to_thread(
            corral, "run", "--master", address, "--", "echo", "across processes", env=env(alice), timeout=60
        )
        assert res.returncode == 0, res.stderr + (tmp_path / "agent.log").read_text()[-2000:]
        assert res.stdout == "across processes\n"
        # The agent registered over TLS; a client without a certificate cannot list it.
        plain = {k: v for k, v in env(alice).items() if not k.startswith("CORRAL_TLS_")}
        res = await asyncio.to_thread(corral, "agents", "--master", address, env=plain)
        assert res.returncode != 0
        assert "cannot reach the master" in res.stderr
    finally:
        terminate(procs)
    assert "master.plaintext" not in (tmp_path / "master.log").read_text()
