"""A master started before ZooKeeper serves keeps trying to reach it (as a
Mesos master does), logging which hosts it waits for, and leads once
ZooKeeper is up; with --zk-connect-timeout it gives up with one sentence."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from corral import testing_zookeeper as zkserver
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.testing import corral_command, terminate
from corral.testing_zookeeper import ZooKeeperServer, free_port


def _need_zookeeper() -> None:
    reason = zkserver.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide ZooKeeper: {reason}")
        pytest.skip(reason)


def _leading(address: str) -> bool | None:
    channel = grpc.insecure_channel(address)
    try:
        stub = operator_pb2_grpc.OperatorStub(channel)
        return bool(stub.GetMasterInfo(op.GetMasterInfoRequest(), timeout=2).leading)
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def _master(zk_port: int, master_port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CORRAL_LOG_LEVEL": "info"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [*corral_command(), "master", "--listen", f"127.0.0.1:{master_port}",
             "--zk", f"zk://127.0.0.1:{zk_port}/corral-early", "--zk-session-timeout", "1", *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def test_a_master_started_before_zookeeper_waits_then_leads(tmp_path: Path) -> None:
    _need_zookeeper()
    zk_port, master_port = free_port(), free_port()
    log = tmp_path / "master.log"
    master = _master(zk_port, master_port, log)
    server = ZooKeeperServer(tmp_path / "zk", zk_port)
    try:
        deadline = time.monotonic() + 30
        while (
            "election.zk_unreachable" not in log.read_text() or _leading(f"127.0.0.1:{master_port}") is None
        ):
            assert master.poll() is None, f"the master exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no retry logged, or no gRPC answer:\n{log.read_text()}"
            time.sleep(0.2)
        assert f"127.0.0.1:{zk_port}" in log.read_text()  # the event names the hosts
        assert _leading(f"127.0.0.1:{master_port}") is False  # serving, not leading
        assert master.poll() is None
        server.start()
        deadline = time.monotonic() + 60
        while not _leading(f"127.0.0.1:{master_port}"):
            assert master.poll() is None, f"the master exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the master did not lead:\n{log.read_text()}"
            time.sleep(0.2)
        assert "Traceback" not in log.read_text()
    finally:
        terminate([master])
        server.stop()


def test_with_a_connect_timeout_it_exits_with_one_sentence(tmp_path: Path) -> None:
    zk_port, master_port = free_port(), free_port()
    log = tmp_path / "master.log"
    master = _master(zk_port, master_port, log, "--zk-connect-timeout", "2")
    try:
        code = master.wait(timeout=60)
    finally:
        terminate([master])
    text = log.read_text()
    assert code != 0
    assert f"error: cannot reach ZooKeeper at 127.0.0.1:{zk_port} after" in text, text
    assert "Traceback" not in text
