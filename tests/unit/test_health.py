"""slave/health.py: each kind of check against something this test runs on
loopback, the grace/failure counting, and validation of bad checks."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import math
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from corral.master.validation import validate_health_check
from corral.proto import messages_pb2 as pb
from corral.slave import health
from corral.slave.health import Result, Settings, Tracker, check_once, watch

HC = pb.HealthCheck


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def http_server(status: int) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = status if self.path == "/healthz" else 404
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_command_check_passes_fails_and_times_out() -> None:
    ok = await check_once(
        HC(type=HC.COMMAND, command=pb.CommandInfo(shell=True, value='test -n "$X"')),
        env={"X": "1", "PATH": "/usr/bin:/bin"},
    )
    assert ok.healthy, ok
    bad = await check_once(HC(type=HC.COMMAND, command=pb.CommandInfo(shell=True, value="echo nope; exit 3")))
    assert not bad.healthy
    assert "status 3" in bad.message
    assert "nope" in bad.message
    slow = await check_once(
        HC(type=HC.COMMAND, timeout_s=0.3, command=pb.CommandInfo(shell=True, value="sleep 30"))
    )
    assert not slow.healthy
    assert "timed out after 0.3s" in slow.message


async def test_command_check_runs_in_the_given_directory(tmp_path: Path) -> None:
    (tmp_path / "here").touch()
    cmd = pb.CommandInfo(shell=True, value="test -f here")
    assert (await check_once(HC(type=HC.COMMAND, command=cmd), cwd=str(tmp_path))).healthy


async def test_a_command_check_given_a_container_runs_only_through_it(tmp_path: Path) -> None:
    calls: list[tuple[list[str], dict[str, str], float]] = []
    answer: tuple[int | None, bytes] | Exception = (0, b"")

    async def enter(
        argv: Sequence[str], env: Mapping[str, str], timeout_s: float
    ) -> tuple[int | None, bytes]:
        calls.append((list(argv), dict(env), timeout_s))
        if isinstance(answer, Exception):
            raise answer
        return answer

    cmd = pb.CommandInfo(shell=True, value="touch ran-here", environment={"B": "2"})
    check = HC(type=HC.COMMAND, command=cmd, timeout_s=3)

    async def once() -> Result:
        return await check_once(check, env={"A": "1"}, cwd=str(tmp_path), enter=enter)

    assert (await once()).healthy
    assert calls == [(["/bin/sh", "-c", "touch ran-here"], {"A": "1", "B": "2"}, 3.0)]
    answer = (3, b"some output")
    assert (await once()).message == "command check exited with status 3: some output"
    answer = (None, b"")
    assert (await once()).message == "command check timed out after 3s"
    answer = RuntimeError("the task has ended")
    failed = await once()
    assert not failed.healthy
    assert "could not enter the task's container: the task has ended" in failed.message
    # Never a fallback to running the command here, as the agent.
    assert not (tmp_path / "ran-here").exists()


def test_a_command_check_is_skipped_for_a_container_that_cannot_be_entered() -> None:
    info = pb.TaskInfo(
        task_id="t", health_check=HC(type=HC.COMMAND, command=pb.CommandInfo(shell=True, value="true"))
    )
    containerizer = SimpleNamespace(can_enter=lambda container_id: False)
    enter = health.container_enter(cast(Any, containerizer), "c")
    assert enter is None
    assert health.start(info, {}, "/", lambda: 1, lambda h, m: None, lambda m: None, enter) is None


async def test_tcp_check_against_a_listening_and_a_closed_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert (await check_once(HC(type=HC.TCP, port=port, timeout_s=2))).healthy
    closed = await check_once(HC(type=HC.TCP, port=_free_port(), timeout_s=2))
    assert not closed.healthy
    assert "TCP check of port" in closed.message


async def test_http_check_2xx_3xx_healthy_others_not() -> None:
    with http_server(200) as port:
        assert (await check_once(HC(type=HC.HTTP, port=port, path="/healthz", timeout_s=2))).healthy
        missing = await check_once(HC(type=HC.HTTP, port=port, path="/other", timeout_s=2))
        assert not missing.healthy
        assert "answered 404" in missing.message
    with http_server(302) as port:
        assert (await check_once(HC(type=HC.HTTP, port=port, path="/healthz", timeout_s=2))).healthy
    with http_server(503) as port:
        r = await check_once(HC(type=HC.HTTP, port=port, path="/healthz", timeout_s=2))
        assert not r.healthy
        assert "503" in r.message
    r = await check_once(HC(type=HC.HTTP, port=_free_port(), timeout_s=2))
    assert not r.healthy


def test_tracker_ignores_failures_in_grace_until_first_success() -> None:
    t = Tracker(Settings(1.0, 1.0, grace_period_s=10.0, consecutive_failures=2), started_at=0.0)
    assert t.record(Result(False, "x"), 5.0) == (False, False)  # in grace: not counted
    assert t.healthy is None
    assert t.record(Result(True, "ok"), 6.0) == (True, False)
    # After a success the grace period is over: failures count at once.
    assert t.record(Result(False, "x"), 7.0) == (True, False)
    assert t.record(Result(False, "x"), 8.0) == (False, True)


def test_tracker_counts_failures_after_grace_and_resets_on_success() -> None:
    t = Tracker(Settings(1.0, 1.0, grace_period_s=1.0, consecutive_failures=3), started_at=0.0)
    assert t.record(Result(False, "x"), 2.0) == (True, False)
    assert t.record(Result(False, "x"), 3.0) == (False, False)
    assert t.record(Result(True, "ok"), 4.0) == (True, False)
    assert t.failures == 0
    assert [t.record(Result(False, "x"), 5.0 + i)[1] for i in range(3)] == [False, False, True]


async def test_watch_reports_changes_and_kills_once() -> None:
    results = iter([True, True, False, False])
    reports: list[bool] = []
    kills: list[str] = []

    async def probe() -> Result:
        healthy = next(results)
        return Result(healthy, "ok" if healthy else "down")

    check = HC(type=HC.TCP, port=1, interval_s=0.01, grace_period_s=0.001, consecutive_failures=2)
    await asyncio.wait_for(watch(check, probe, lambda h, m: reports.append(h), kills.append), 5)
    assert reports == [True, False]
    assert kills == ["health check failed 2 times in a row: down"]


BAD = [
    (HC(), "health_check.type: must be COMMAND, TCP or HTTP"),
    (HC(type=HC.COMMAND), "health_check.command: a COMMAND check needs a command"),
    (HC(type=HC.TCP), "health_check.port: must be 1-65535"),
    (HC(type=HC.HTTP, port=70000), "health_check.port: must be 1-65535"),
    (HC(type=HC.HTTP, port=80, path="healthz"), "health_check.path: only for HTTP checks"),
    (HC(type=HC.TCP, port=80, path="/x"), "health_check.path: only for HTTP checks"),
    (HC(type=HC.TCP, port=80, interval_s=-1), "health_check.interval_s: must be 0-86400"),
    (HC(type=HC.TCP, port=80, timeout_s=math.nan), "health_check.timeout_s: must be 0-86400"),
    (HC(type=HC.TCP, port=80, grace_period_s=math.inf), "health_check.grace_period_s"),
    (HC(type=HC.TCP, port=80, consecutive_failures=5000), "health_check.consecutive_failures"),
    # A check runs as its task's user: naming another would bypass the run_task ACL.
    (
        HC(type=HC.COMMAND, command=pb.CommandInfo(shell=True, value="id", user="root")),
        "health_check.command.user: a health check runs as its task's user",
    ),
]


@pytest.mark.parametrize(("check", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_health_checks_name_the_field(check: pb.HealthCheck, expected: str) -> None:
    errors = validate_health_check(check, "task.health_check")
    assert any(expected in e for e in errors), errors


def test_good_health_checks_are_valid() -> None:
    for check in (
        HC(type=HC.COMMAND, command=pb.CommandInfo(shell=True, value="true")),
        HC(type=HC.TCP, port=8080, interval_s=1, timeout_s=1, grace_period_s=0, consecutive_failures=1),
        HC(type=HC.HTTP, port=8080, path="/healthz"),
    ):
        assert validate_health_check(check, "h") == []
