"""Operator views for the CLI: readable tables from the Operator API."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
from rich.table import Table
from rich.text import Text

from corral.cli.discovery import client_credentials, leader_address
from corral.codec import reason_name, resources_from_proto, state_name
from corral.detector import leader_from_error
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import MILLI, Resources
from corral.transport import make_sync_channel

TIMEOUT_S = 10.0
STYLE = {
    "FINISHED": "green",
    "RUNNING": "cyan",
    "FAILED": "red",
    "ERROR": "red",
    "LOST": "red",
    "KILLED": "yellow",
    "DROPPED": "red",
}


class _Operator:
    """Operator calls that follow a non-leading master's redirect once."""

    def __init__(self, master: str) -> None:
        self.credentials = client_credentials(master)
        self.address = leader_address(master)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(request: object, timeout: float = TIMEOUT_S) -> Any:
            for _ in range(2):
                stub = operator_pb2_grpc.OperatorStub(make_sync_channel(self.address, self.credentials))
                try:
                    return getattr(stub, method)(request, timeout=timeout)
                except grpc.RpcError as e:
                    leader = leader_from_error(e)
                    if leader is None or leader == self.address:
                        raise
                    self.address = leader
            return getattr(
                operator_pb2_grpc.OperatorStub(make_sync_channel(self.address, self.credentials)), method
            )(request, timeout=timeout)

        return call


def operator_stub(master: str) -> _Operator:
    """An Operator API client for ``master`` that follows a redirect to the leader."""
    return _Operator(master)


_stub = operator_stub


def _ago(ts: float) -> str:
    if not ts:
        return ""
    s = max(0.0, time.time() - ts)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def _usage(used: Resources, total: Resources, name: str, unit: str = "") -> str:
    u, t = used.scalar(name) / MILLI, total.scalar(name) / MILLI
    return f"{u:g}/{t:g}{unit}"


def agents_table(master: str) -> Table:
    stub = _stub(master)
    resp = stub.ListAgents(op.ListAgentsRequest(), timeout=TIMEOUT_S)
    table = Table(title=f"agents of {stub.address}", title_justify="left")
    for col in (
        "id",
        "hostname",
        "state",
        "cpus",
        "mem (MiB)",
        "disk (MiB)",
        "ports",
        "tasks",
        "attributes",
        "heartbeat",
    ):
        table.add_column(col)
    for a in resp.agents:
        total = resources_from_proto(a.total)
        used = resources_from_proto(a.allocated)
        ports = total.range("ports")
        table.add_row(
            a.agent_info.id,
            a.agent_info.hostname,
            Text("draining", style="yellow")
            if a.draining
            else Text("connected", style="green")
            if a.connected
            else Text("disconnected", style="red"),
            _usage(used, total, "cpus"),
            _usage(used, total, "mem"),
            _usage(used, total, "disk"),
            ports.format() if ports else "",
            str(a.task_count),
            ";".join(f"{x.name}:{x.value}" for x in a.agent_info.attributes),
            _ago(a.last_heartbeat),
        )
    if not resp.agents:
        table.caption = "no agents registered"
    return table


def frameworks_table(master: str) -> Table:
    stub = _stub(master)
    resp = stub.ListFrameworks(op.ListFrameworksRequest(), timeout=TIMEOUT_S)
    table = Table(title=f"frameworks of {stub.address}", title_justify="left")
    for col in ("id", "name", "roles", "state", "tasks", "allocated", "registered"):
        table.add_column(col)
    for f in resp.frameworks:
        state = "connected" if f.connected else "disconnected"
        if f.connected and not f.active:
            state = "suppressed"
        table.add_row(
            f.framework_info.id,
            f.framework_info.name,
            ",".join(f.framework_info.roles),
            state,
            str(f.task_count),
            str(resources_from_proto(f.allocated)),
            _ago(f.registered_time),
        )
    if not resp.frameworks:
        table.caption = "no frameworks subscribed"
    return table


def tasks_table(master: str, include_completed: bool, framework: str) -> Table:
    stub = _stub(master)
    resp = stub.ListTasks(
        op.ListTasksRequest(framework_id=framework, include_completed=include_completed),
        timeout=TIMEOUT_S,
    )
    table = Table(title=f"tasks of {stub.address}", title_justify="left")
    for col in ("task", "framework", "agent", "state", "exit", "resources", "started", "message"):
        table.add_column(col, overflow="fold")
    for t in resp.tasks:
        s = t.status
        state = state_name(s.state)
        exit_text = (
            str(s.exit_code)
            if s.HasField("exit_code")
            else (f"sig {s.signal}" if s.HasField("signal") else "")
        )
        message = s.message
        if s.reason and state not in ("RUNNING", "STARTING", "FINISHED"):
            message = f"{reason_name(s.reason)}: {message}"
        label = state
        if s.HasField("healthy") and state == "RUNNING":
            label = "RUNNING healthy" if s.healthy else "RUNNING unhealthy"
        table.add_row(
            t.task_info.task_id,
            t.framework_id,
            t.task_info.agent_id,
            Text(label, style=STYLE.get(state, "") if label != "RUNNING unhealthy" else "red"),
            exit_text,
            str(resources_from_proto(t.task_info.resources)),
            _ago(t.launched_time),
            message,
        )
    if not resp.tasks:
        table.caption = "no tasks" + ("" if include_completed else " (use --all for completed ones)")
    return table


def kill_task(master: str, task_id: str, framework: str) -> None:
    _stub(master).KillTask(op.KillTaskRequest(task_id=task_id, framework_id=framework), timeout=TIMEOUT_S)


def print_logs(master: str, task_id: str, path: str, follow: bool, framework: str) -> None:
    stub = _stub(master)
    offset = 0
    out = sys.stdout.buffer
    while True:
        resp = stub.ReadFile(
            op.ReadFileRequest(task_id=task_id, framework_id=framework, path=path, offset=offset),
            timeout=TIMEOUT_S,
        )
        if resp.data:
            out.write(resp.data)
            out.flush()
            offset += len(resp.data)
            continue
        from corral.codec import is_terminal

        if not follow or is_terminal(resp.status.state):
            return
        time.sleep(0.5)
