"""Tenants over real mutual TLS on loopback: nobody touches what is not theirs (issue 14).

One master with the built-in policy, a real agent, and certificates for two
frameworks, two agents and an operator, all from one throwaway CA. Each test is
one abuse a user tried: it is refused with a sentence naming the principal, and
the victim's task keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from corral.codec import resources_to_proto
from corral.frameworks import Task, TaskState
from corral.master.server import MasterServer
from corral.proto import (
    agent_pb2,
    agent_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from corral.proto import messages_pb2 as pb
from corral.resources import Resources
from corral.testing import FAST_MASTER, TlsCluster, eventually, framework, tls_cluster
from corral.transport import make_channel

pytestmark = [pytest.mark.root]
SMALL = Resources.of(cpus=0.1, mem=32)
NOBODY = (65534, 65534)
SYSTEM_PYTHON = "/usr/bin/python3"
AgentMessage = agent_pb2.AgentMessage
Call = scheduler_pb2.Call


@pytest.fixture
async def tls(tmp_path: Path) -> AsyncIterator[TlsCluster]:
    principals = ["agent:n2", "framework:a", "framework:b", "operator:alice"]
    async with tls_cluster(tmp_path, principals) as c:
        yield c


@contextlib.asynccontextmanager
async def running_task(tls: TlsCluster, task_id: str = "victim") -> AsyncIterator[tuple[object, object]]:
    """framework:a with one long task running (as nobody: root needs a policy)."""
    async with framework(tls.address, "a", credentials=tls.creds["framework:a"]) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task(task_id, "sleep 60", SMALL, user=NOBODY)])
        await rec.wait_state(task_id, TaskState.RUNNING)
        yield driver, rec


def _operator(tls: TlsCluster, who: str) -> operator_pb2_grpc.OperatorStub:
    return operator_pb2_grpc.OperatorStub(make_channel(tls.address, tls.creds[who]))


def _task_state(tls: TlsCluster, task_id: str) -> int | None:
    m = tls.server.master
    assert m is not None
    for t in m.state.find_any_task(task_id):
        return t.status.state
    return None


async def test_a_framework_id_cannot_be_taken_over_by_another_principal(tls: TlsCluster) -> None:
    async with running_task(tls) as (driver, _rec):
        fw_id = driver.framework_id  # type: ignore[attr-defined]
        async with make_channel(tls.address, tls.creds["framework:b"]) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            info = pb.FrameworkInfo(id=fw_id, name="evil", roles=["*"], failover_timeout_s=60)

            async def calls():  # type: ignore[no-untyped-def]
                yield Call(type=Call.SUBSCRIBE, subscribe=Call.Subscribe(framework_info=info))
                await asyncio.sleep(5)

            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Subscribe(calls()):
                    pass
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to principal framework:a, not framework:b" in (err.value.details() or "")
        # The owner keeps its stream and its task.
        assert driver.connected.is_set()  # type: ignore[attr-defined]
        assert _task_state(tls, "victim") == pb.TASK_RUNNING


async def test_a_certificate_cannot_claim_another_principal(tls: TlsCluster) -> None:
    async with make_channel(tls.address, tls.creds["framework:b"]) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        info = pb.FrameworkInfo(name="b", principal="framework:a", failover_timeout_s=60)

        async def calls():  # type: ignore[no-untyped-def]
            yield Call(type=Call.SUBSCRIBE, subscribe=Call.Subscribe(framework_info=info))

        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Subscribe(calls()):
                pass
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "is not the principal of the client certificate (framework:b)" in (err.value.details() or "")


async def _register(
    tls: TlsCluster, who: str, info: pb.AgentInfo, **more: object
) -> grpc.aio.AioRpcError | str:
    """One raw Agent.Connect as ``who``: the agent id it got, or the refusal."""
    async with make_channel(tls.address, tls.creds[who]) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        reg = AgentMessage.Register(agent_info=info, **more)  # type: ignore[arg-type]

        async def messages():  # type: ignore[no-untyped-def]
            yield AgentMessage(register=reg)
            await asyncio.sleep(0.5)

        try:
            async for message in stub.Connect(messages()):
                if message.WhichOneof("message") == "registered":
                    return str(message.registered.agent_id)
        except grpc.aio.AioRpcError as e:
            return e
    raise AssertionError("the stream ended without an answer")


def _agent_info(agent_id: str, resources: str, hostname: str = "n1") -> pb.AgentInfo:
    return pb.AgentInfo(
        id=agent_id, hostname=hostname, resources=resources_to_proto(Resources.parse(resources))
    )


async def test_an_agent_id_cannot_be_registered_by_another_agent_principal(tls: TlsCluster) -> None:
    victim = tls.agent.agent_id
    m = tls.server.master
    assert m is not None
    total = m.state.agents[victim].total
    answer = await _register(tls, "agent:n2", _agent_info(victim, "cpus:16;mem:65536", "n2"))
    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"agent {victim} belongs to principal agent:n1, not agent:n2" in (answer.details() or "")
    assert m.state.agents[victim].total == total
    assert m.state.agents[victim].connected


async def test_an_agent_certificate_cannot_claim_another_nodes_host_name(tls: TlsCluster) -> None:
    # agent:n2 registering as host n1 would draw placements meant for n1
    # (constraints, unique host) to itself: the built-in policy lets an agent
    # register only under its certificate's name.
    m = tls.server.master
    assert m is not None
    answer = await _register(tls, "agent:n2", _agent_info("", "cpus:1;mem:1024", "n1"))
    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "agent:n2 may not register_agent agent:n1" in (answer.details() or "")
    assert len(m.state.agents) == 1


async def test_a_registration_is_authorized_before_it_is_validated(tls: TlsCluster) -> None:
    # Validating a big registration costs seconds; a tenant's certificate is
    # refused before any of it is spent. This one is both unauthorized and
    # invalid (a task without an id): the answer is the refusal.
    bad = [pb.TaskStatus(state=pb.TASK_RUNNING) for _ in range(1000)]
    answer = await _register(tls, "framework:b", _agent_info("", "cpus:1;mem:1024", "b"), tasks=bad)
    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() == grpc.StatusCode.PERMISSION_DENIED, answer.details()
    answer = await _register(tls, "agent:n2", _agent_info("", "cpus:1;mem:1024", "x" * 300))
    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 253 characters" in (answer.details() or "")


async def test_one_agent_certificate_cannot_register_a_second_node(tls: TlsCluster) -> None:
    m = tls.server.master
    assert m is not None
    # The real agent:n1 is connected; its certificate cannot add another 1-cpu node (over-commit).
    answer = await _register(tls, "agent:n1", _agent_info("", "cpus:1;mem:1024"))
    assert isinstance(answer, grpc.aio.AioRpcError)
    assert answer.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already has agent" in (answer.details() or "")
    assert len(m.state.agents) == 1


async def test_an_agent_cannot_report_for_a_task_on_another_agent(tls: TlsCluster) -> None:
    async with running_task(tls) as (driver, rec):
        fw_id = driver.framework_id  # type: ignore[attr-defined]
        async with make_channel(tls.address, tls.creds["agent:n2"]) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            forged = pb.TaskStatus(
                task_id="victim", framework_id=fw_id, state=pb.TASK_FINISHED, uuid=b"x" * 16
            )
            registered = asyncio.Event()

            async def messages():  # type: ignore[no-untyped-def]
                yield AgentMessage(
                    register=AgentMessage.Register(agent_info=_agent_info("", "cpus:1;mem:64", "n2"))
                )
                await registered.wait()
                yield AgentMessage(status_updates=AgentMessage.StatusUpdates(statuses=[forged]))
                await asyncio.sleep(1.0)

            async for message in stub.Connect(messages()):
                if message.WhichOneof("message") == "registered":
                    registered.set()
                if message.WhichOneof("message") == "acknowledgements":
                    break  # the master acknowledged it for nobody: ignored
        assert _task_state(tls, "victim") == pb.TASK_RUNNING
        latest = rec.latest("victim")  # type: ignore[attr-defined]
        assert latest is not None
        assert latest.state is TaskState.RUNNING


async def test_a_fresh_registration_cannot_bring_a_task_bigger_than_the_agent(tls: TlsCluster) -> None:
    big = pb.TaskInfo(
        task_id="big",
        name="big",
        resources=resources_to_proto(Resources.of(cpus=50, mem=32)),
        command=pb.CommandInfo(shell=True, value="true"),
    )
    status = pb.TaskStatus(task_id="big", framework_id="fw-x", state=pb.TASK_RUNNING)
    async with make_channel(tls.address, tls.creds["agent:n2"]) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        reg = AgentMessage.Register(
            agent_info=_agent_info("n2-fresh", "cpus:1;mem:1024", "n2"),
            tasks=[status],
            frameworks=[pb.FrameworkInfo(id="fw-x", name="x")],
            task_infos=[big],
        )

        async def messages():  # type: ignore[no-untyped-def]
            yield AgentMessage(register=reg)
            await asyncio.sleep(2.0)

        killed = []
        async for message in stub.Connect(messages()):
            if message.WhichOneof("message") == "kill_task":
                killed.append(message.kill_task.task_id)
                break
    assert killed == ["big"]
    assert _task_state(tls, "big") is None


async def test_a_principal_cannot_kill_another_principals_task(tls: TlsCluster) -> None:
    async with running_task(tls):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _operator(tls, "framework:b").KillTask(operator_pb2.KillTaskRequest(task_id="victim"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (err.value.details() or "").startswith(
            "principal framework:b may not kill_task owner:framework:a"
        )
        await asyncio.sleep(0.3)
        assert _task_state(tls, "victim") == pb.TASK_RUNNING
        # Nor read its sandbox, nor see it.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _operator(tls, "framework:b").ReadFile(operator_pb2.ReadFileRequest(task_id="victim"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        listed = await _operator(tls, "framework:b").ListTasks(operator_pb2.ListTasksRequest())
        assert [t.task_info.task_id for t in listed.tasks] == []
        # The operator may.
        await _operator(tls, "operator:alice").KillTask(operator_pb2.KillTaskRequest(task_id="victim"))
        await eventually(lambda: _task_state(tls, "victim") == pb.TASK_KILLED, 15, "the operator's kill")


async def test_a_task_as_root_is_refused_by_the_built_in_policy(tls: TlsCluster) -> None:
    async with framework(tls.address, "a", credentials=tls.creds["framework:a"]) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("as-root", "true", SMALL)])
        status = await rec.wait_terminal("as-root")
    assert status.state is TaskState.ERROR
    assert status.reason == "TASK_UNAUTHORIZED"
    assert "principal framework:a may not run_task uid:0" in status.message


async def test_a_task_in_roots_group_is_refused_by_the_built_in_policy(tls: TlsCluster) -> None:
    # uid 65534 is allowed, but with gid 0 its files and its group access
    # are root's group's: the group is asked too.
    async with framework(tls.address, "a", credentials=tls.creds["framework:a"]) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("root-group", "true", SMALL, user=(65534, 0))])
        status = await rec.wait_terminal("root-group")
    assert status.state is TaskState.ERROR
    assert status.reason == "TASK_UNAUTHORIZED"
    assert "principal framework:a may not run_task gid:0" in status.message


async def test_no_seccomp_filter_and_host_devices_need_the_acl(tls: TlsCluster) -> None:
    """The agent would refuse them too (its flags); the master refuses first, by policy."""
    async with framework(tls.address, "a", credentials=tls.creds["framework:a"]) as (driver, rec):
        offer = await rec.next_offer()
        bare = Task("bare", "true", SMALL, user=NOBODY, seccomp_profile="unconfined")
        kvm = Task("kvm", "true", SMALL, user=NOBODY, devices=("/dev/kvm",))
        driver.launch(offer, [bare, kvm])
        bare_status = await rec.wait_terminal("bare")
        kvm_status = await rec.wait_terminal("kvm")
    assert bare_status.reason == kvm_status.reason == "TASK_UNAUTHORIZED"
    assert "may not run_unconfined seccomp:unconfined" in bare_status.message
    assert (
        "container.devices[0]: principal framework:a may not use_device device:/dev/kvm" in kvm_status.message
    )


#: Speaks the first bytes of gRPC (the HTTP/2 preface and an empty SETTINGS
#: frame) with the standard library only, plaintext and then TLS without a
#: client certificate, and says whether an HTTP/2 server answered ("h2").
PROBE = """
import socket, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
hello = b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + b"\\x00\\x00\\x00\\x04\\x00\\x00\\x00\\x00\\x00"
def answer(sock):
    sock.sendall(hello)
    data = sock.recv(64)
    return "h2" if data[3:4] == b"\\x04" else "refused"
try:
    print("plaintext", answer(socket.create_connection((host, int(port)), timeout=5)))
except OSError as e:
    print("plaintext refused", type(e).__name__)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
try:
    raw = socket.create_connection((host, int(port)), timeout=5)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    print("tls", answer(sock))
except (ssl.SSLError, OSError) as e:
    print("tls refused", type(e).__name__)
for f in sys.argv[2:]:
    try:
        open(f).read()
        print("read", f)
    except OSError as e:
        print("unreadable", f)
"""


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs the system python3 (readable to nobody)")
async def test_a_task_on_host_networking_cannot_call_the_operator_api(
    tls: TlsCluster, tmp_path: Path
) -> None:
    """The task runs on the master's host network as nobody: neither plaintext
    nor TLS without a certificate gets an HTTP/2 answer, and the keys are not
    readable. The same probe, run outside against a plaintext master, does get
    one, so a refusal is the master's doing, not the probe's."""
    keys = [str(tls.pki / "ca-key.pem"), str(tls.pki / "operator-alice-key.pem")]
    task = Task("probe", (SYSTEM_PYTHON, "-c", PROBE, tls.address, *keys), SMALL, user=NOBODY)
    async with framework(tls.address, "a", credentials=tls.creds["framework:a"]) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [task])
        status = await rec.wait_terminal("probe", timeout=30)
    data = await _operator(tls, "operator:alice").ReadFile(operator_pb2.ReadFileRequest(task_id="probe"))
    out = data.data.decode()
    assert status.state is TaskState.FINISHED, (status.message, out)
    assert "plaintext refused" in out, out
    assert "tls refused" in out, out
    assert "h2" not in out
    assert "read " not in out, out
    assert out.count("unreadable") == 2, out

    plain = MasterServer("127.0.0.1:0", FAST_MASTER)
    address = await plain.start()
    try:
        control = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, "-c", PROBE, address, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await control.communicate()
    finally:
        await plain.stop(0)
    assert "plaintext h2" in stdout.decode(), stdout


async def test_views_leak_nothing_a_tenant_could_use_against_another(tls: TlsCluster) -> None:
    async with running_task(tls) as (driver, _):
        victim_id = getattr(driver, "framework_id")  # noqa: B009  (the SDK driver's attribute)
        b, alice = _operator(tls, "framework:b"), _operator(tls, "operator:alice")
        # Another tenant's framework id (what a take-over after a restart needs) is not in ListRoles.
        roles = await b.ListRoles(operator_pb2.ListRolesRequest())
        assert all(victim_id not in r.frameworks for r in roles.roles)
        roles = await alice.ListRoles(operator_pb2.ListRolesRequest())
        assert any(victim_id in r.frameworks for r in roles.roles)
        # Whether a framework id exists is not told: unknown and foreign look alike.
        for fid in (victim_id, "no-such-framework"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await b.ListTasks(operator_pb2.ListTasksRequest(framework_id=fid))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await alice.ListTasks(operator_pb2.ListTasksRequest(framework_id="no-such-framework"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # Agents' work directories and certificate names are for operators.
        (seen,) = (await b.ListAgents(operator_pb2.ListAgentsRequest())).agents
        assert seen.agent_info.work_dir == ""
        assert seen.agent_info.principal == ""
        assert seen.agent_info.hostname == "n1"
        (full,) = (await alice.ListAgents(operator_pb2.ListAgentsRequest())).agents
        assert full.agent_info.work_dir
        assert full.agent_info.principal == "agent:n1"


async def test_a_tenants_operator_calls_are_rate_limited_an_operators_are_not(tls: TlsCluster) -> None:
    b, alice = _operator(tls, "framework:b"), _operator(tls, "operator:alice")
    codes, details = [], set()
    for _ in range(260):  # the default burst is 200
        try:
            await b.ListFrameworks(operator_pb2.ListFrameworksRequest())
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as e:
            codes.append(e.code())
            details.add((e.details() or "").split(";")[0])
    limit = "ListFrameworks: rate limit: principal framework:b is over its limit of 50 calls/s, burst 200"
    assert details == {limit}
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 30
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    for _ in range(260):
        await alice.ListFrameworks(operator_pb2.ListFrameworksRequest())


async def test_an_agent_cannot_inject_tasks_into_another_tenants_framework(tls: TlsCluster) -> None:
    # Tasks an agent reports that this master did not launch are adopted only
    # in the re-registration window after the master starts leading (a master
    # that lost its state learns them so). After it, a new agent reporting a
    # RUNNING task of framework:a's (or of a framework it makes up, "owned"
    # by a principal it names) has it killed, and nobody hears of it.
    m = tls.server.master
    assert m is not None
    async with running_task(tls) as (driver, rec):
        victim_fw = getattr(driver, "framework_id")  # noqa: B009
        await asyncio.sleep(FAST_MASTER.agent_reregister_timeout_s)  # the window is over
        injected = pb.TaskStatus(task_id="injected", framework_id=victim_fw, state=pb.TASK_RUNNING)
        squat = pb.TaskStatus(task_id="squat", framework_id="fw-squat", state=pb.TASK_RUNNING)
        infos = [
            pb.TaskInfo(
                task_id=t,
                name=t,
                resources=resources_to_proto(SMALL),
                command=pb.CommandInfo(shell=True, value="true"),
            )
            for t in ("injected", "squat")
        ]
        async with make_channel(tls.address, tls.creds["agent:n2"]) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            reg = AgentMessage.Register(
                agent_info=_agent_info("n2-new", "cpus:1;mem:1024", "n2"),
                tasks=[injected, squat],
                frameworks=[pb.FrameworkInfo(id="fw-squat", name="squat", principal="framework:b")],
                task_infos=infos,
            )

            async def messages():  # type: ignore[no-untyped-def]
                yield AgentMessage(register=reg)
                await asyncio.sleep(2.0)

            killed = set()
            async with asyncio.timeout(10):
                async for message in stub.Connect(messages()):
                    if message.WhichOneof("message") == "kill_task":
                        killed.add(message.kill_task.task_id)
                        if killed == {"injected", "squat"}:
                            break
        assert killed == {"injected", "squat"}
        assert _task_state(tls, "injected") is None
        assert "fw-squat" not in m.state.frameworks
        assert all(u.task_id != "injected" for u in rec.updates)  # type: ignore[attr-defined]
        assert _task_state(tls, "victim") == pb.TASK_RUNNING


async def test_an_agent_cannot_make_up_usage_for_another_tenants_task(tls: TlsCluster) -> None:
    async with running_task(tls) as (driver, _):
        victim_fw = getattr(driver, "framework_id")  # noqa: B009
        outq: asyncio.Queue[AgentMessage | None] = asyncio.Queue()
        registered = asyncio.Event()

        async def messages():  # type: ignore[no-untyped-def]
            info = _agent_info("", "cpus:1;mem:1024", "n2")
            yield AgentMessage(register=AgentMessage.Register(agent_info=info))
            while (m := await outq.get()) is not None:
                yield m

        async def fake_agent() -> None:
            async with make_channel(tls.address, tls.creds["agent:n2"]) as channel:
                async for message in agent_pb2_grpc.AgentStub(channel).Connect(messages()):
                    kind = message.WhichOneof("message")
                    if kind == "registered":
                        registered.set()
                    elif kind == "get_usage":
                        forged = pb.TaskUsage(framework_id=victim_fw, task_id="victim", cpu_time_s=1e9)
                        usage = AgentMessage.Usage(request_id=message.get_usage.request_id, tasks=[forged])
                        await outq.put(AgentMessage(usage=usage))

        runner = asyncio.create_task(fake_agent())
        try:
            async with asyncio.timeout(10):
                await registered.wait()
            resp = await _operator(tls, "operator:alice").GetUsage(operator_pb2.GetUsageRequest())
            seen = {(u.framework_id, u.task_id, u.agent_id) for u in resp.usages}
            assert (victim_fw, "victim", tls.agent.agent_id) in seen
            assert all(u.cpu_time_s < 1e9 for u in resp.usages)  # the forged entry is not there
        finally:
            await outq.put(None)
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
