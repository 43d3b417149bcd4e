"""``Operator.ExecTask`` (``corral exec``) over real mutual TLS with a real agent:
the command runs inside the task's container, streams its output, ends with
its exit code; only the task's owner or an operator may run it, and each
run is audited; a caller that goes away kills it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from corral.frameworks import Task, TaskState
from corral.frameworks.driver import SchedulerDriver
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import Resources
from corral.testing import RecordingScheduler, TlsCluster, eventually, framework, tls_cluster
from corral.transport import make_channel

pytestmark = [pytest.mark.root]
SMALL = Resources.of(cpus=0.1, mem=32)
NOBODY = (65534, 65534)


@pytest.fixture
async def tls(tmp_path: Path) -> AsyncIterator[TlsCluster]:
    # The audit log is read as an operator would (structlog's capture_logs
    # misses a logger that an earlier test cached at warning).
    async with tls_cluster(tmp_path, ["framework:a", "framework:b", "operator:alice"], audit=True) as c:
        yield c


@contextlib.asynccontextmanager
async def running_task(
    c: TlsCluster, command: str
) -> AsyncIterator[tuple[SchedulerDriver, RecordingScheduler]]:
    """framework:a with task ``t`` running ``command`` as nobody."""
    async with framework(c.address, "a", credentials=c.creds["framework:a"]) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("t", command, SMALL, user=NOBODY)])
        await rec.wait_state("t", TaskState.RUNNING)
        yield driver, rec


def _inputs(request: op.ExecTaskRequest, *more: op.ExecTaskInput) -> AsyncIterator[op.ExecTaskInput]:
    async def gen() -> AsyncIterator[op.ExecTaskInput]:
        yield op.ExecTaskInput(start=request)
        for m in more:
            yield m

    return gen()


async def exec_as(
    c: TlsCluster,
    who: str,
    argv: list[str],
    task_id: str = "t",
    timeout_s: float = 0,
    more: tuple[op.ExecTaskInput, ...] = (),
    **fields: object,
) -> tuple[bytes, int | None]:
    """The output and exit code of one ExecTask call as ``who`` (``more``: stdin)."""
    async with make_channel(c.address, c.creds[who]) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        out, code = b"", None
        request = op.ExecTaskRequest(task_id=task_id, argv=argv, timeout_s=timeout_s, **fields)  # type: ignore[arg-type]
        async for piece in stub.ExecTask(_inputs(request, *more), timeout=30):
            out += piece.output
            if piece.done:
                code = piece.exit_code
        return out, code


async def test_exec_runs_inside_the_task_as_its_user_and_returns_the_exit_code(tls: TlsCluster) -> None:
    async with running_task(tls, "echo marker > here; sleep 60"):
        out, code = await exec_as(
            tls,
            "framework:a",
            ["sh", "-c", "cat here; id -u; cmp /proc/self/cgroup /proc/1/cgroup && echo same; exit 3"],
        )
        assert code == 3
        lines = out.decode().splitlines()
        assert lines[0] == "marker"  # the task's working directory (its sandbox)
        assert lines[1] == "65534"  # the task's user, not root
        assert lines[2] == "same"  # the cgroups of the pid namespace's init: the task's
        audited = [e for e in tls.audited() if e["event"] == "audit.action" and e["call"] == "ExecTask"]
        assert [e["outcome"] for e in audited] == ["STARTED", "exit 3"]
        assert audited[0]["principal"] == "framework:a"
        assert audited[0]["argv"][0] == "sh"

        out, code = await exec_as(tls, "operator:alice", ["echo", "operator here"])
        assert (out, code) == (b"operator here\n", 0)


async def test_exec_is_refused_to_another_framework_and_audited(tls: TlsCluster) -> None:
    async with running_task(tls, "sleep 60"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await exec_as(tls, "framework:b", ["touch", "/tmp/owned"])
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "framework:b may not exec_task owner:framework:a" in (err.value.details() or "")
        assert any(e["event"] == "audit.denied" and e["call"] == "ExecTask" for e in tls.audited())
        # Nothing ran: the file is not there.
        out, code = await exec_as(tls, "framework:a", ["sh", "-c", "test -e /tmp/owned; echo $?"])
        assert (out, code) == (b"1\n", 0)


async def test_exec_bad_requests_are_named(tls: TlsCluster) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await exec_as(tls, "operator:alice", ["true"], task_id="nope")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no live task 'nope'" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await exec_as(tls, "operator:alice", [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "argv: a command is needed" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await exec_as(tls, "operator:alice", ["true"], timeout_s=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "timeout_s: must be between 0 and 3600" in (err.value.details() or "")


async def test_exec_times_out_with_124_and_a_caller_that_leaves_kills_the_command(tls: TlsCluster) -> None:
    async with running_task(tls, "sleep 60") as (driver, rec):
        out, code = await exec_as(tls, "framework:a", ["sleep", "30"], timeout_s=0.5)
        assert code == 124

        async with make_channel(tls.address, tls.creds["framework:a"]) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            call = stub.ExecTask(
                _inputs(op.ExecTaskRequest(task_id="t", argv=["sh", "-c", "echo up; sleep 30"]))
            )
            got = b""
            async for piece in call:
                got += piece.output
                if b"up" in got:
                    break
            assert tls.agent.execs.running() == 1
            call.cancel()
        await eventually(lambda: tls.agent.execs.running() == 0, 10.0, "the command is killed")
        # Only the task is left in its cgroup.
        # Only the task's own sleep is left in its pid namespace.
        count = "cat /proc/[0-9]*/comm | grep -c '^sleep$'"
        out, _ = await exec_as(tls, "framework:a", ["sh", "-c", count])
        assert out.strip() == b"1"
        # And the task can still be killed: no zombie of ours is left in its
        # pid namespace for its init to wait for (enter.py, _reap_orphans).
        driver.kill("t")
        await rec.wait_state("t", TaskState.KILLED, timeout=20)


async def test_exec_feeds_stdin_and_runs_on_a_terminal(tls: TlsCluster) -> None:
    async with running_task(tls, "sleep 60"):
        data = op.ExecTaskInput(stdin=b"one\ntwo\n")
        eof = op.ExecTaskInput(stdin_eof=True)
        out, code = await exec_as(tls, "framework:a", ["sh", "-c", "wc -l"], more=(data, eof), stdin=True)
        assert (out.strip(), code) == (b"2", 0)
        # On a terminal: its size is the one asked, and it is the command's
        # controlling terminal (test -t, tty), input is echoed back by it.
        script = op.ExecTaskInput(stdin=b"stty size; test -t 0 && echo is-a-tty; exit 7\n")
        out, code = await exec_as(
            tls, "framework:a", ["sh"], more=(script,), stdin=True, tty=True, rows=33, cols=99
        )
        assert code == 7, out
        assert b"33 99" in out
        assert b"is-a-tty" in out
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await exec_as(tls, "framework:a", ["sh"], tty=True, rows=0, cols=80)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
