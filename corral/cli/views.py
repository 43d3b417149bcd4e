"""Operator views for the CLI: records and columns from the Operator API
(agents, frameworks, tasks), printed by corral/cli/output.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
from rich.text import Text

from corral.cli import ids
from corral.cli.operator_client import TIMEOUT_S, OperatorClient, operator_stub
from corral.cli.output import MIB, Column, Listing, Record, key, resources_json
from corral.codec import reason_name, resources_from_proto, state_name
from corral.proto import operator_pb2 as op

STYLE = {
    "FINISHED": "green",
    "RUNNING": "cyan",
    "FAILED": "red",
    "ERROR": "red",
    "LOST": "red",
    "KILLED": "yellow",
    "DROPPED": "red",
}

_stub = operator_stub


def ago(ts: float | None) -> str:
    """A unix time as "12s ago" / "3m ago" / "1.5h ago" ("" for none)."""
    if not ts:
        return ""
    s = max(0.0, time.time() - ts)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def _num(x: float) -> str:
    return f"{x:g}"


def _used(name: str, unit: str = "") -> Callable[[Record], str]:
    """``used/total`` of a resource, from a record's ``allocated`` and ``total``."""
    field = f"{name}_bytes" if name in ("mem", "disk") else name
    scale = MIB if name in ("mem", "disk") else 1

    def cell(r: Record) -> str:
        used, total = r["allocated"].get(field, 0) / scale, r["total"].get(field, 0) / scale
        return f"{used:g}/{total:g}{unit}"

    return cell


def resources_text(rj: Record) -> str:
    """Resources in base units (output.resources_json) as the agent flag syntax
    (mem and disk in MiB), for a table cell."""
    parts = []
    for name, value in rj.items():
        if name == "reserved":
            continue
        if name.endswith("_bytes"):
            if value:
                parts.append(f"{name.removesuffix('_bytes')}:{value / MIB:g}")
        elif isinstance(value, list):
            if value and isinstance(value[0], list):
                parts.append(f"{name}:[" + ",".join(f"{b}-{e}" for b, e in value) + "]")
            elif value:
                parts.append(f"{name}:{{{','.join(map(str, value))}}}")
        elif value:
            parts.append(f"{name}:{value:g}")
    for role, of_role in sorted(rj.get("reserved", {}).items()):
        parts.append(f"reserved({role}):{resources_text(of_role) or '-'}")
    return ";".join(parts) or "(none)"


def _res(name: str) -> Callable[[Record], str]:
    return lambda r: resources_text(r[name])


def agent_records(resp: op.ListAgentsResponse) -> list[dict[str, Any]]:
    return [
        {
            "id": a.agent_info.id,
            "hostname": a.agent_info.hostname,
            "state": "draining" if a.draining else "connected" if a.connected else "disconnected",
            "connected": a.connected,
            "draining": a.draining,
            "total": resources_json(resources_from_proto(a.total)),
            "allocated": resources_json(resources_from_proto(a.allocated)),
            "offered": resources_json(resources_from_proto(a.offered)),
            "task_count": a.task_count,
            "attributes": {x.name: x.value for x in a.agent_info.attributes},
            "version": a.agent_info.version,
            "registered_time": a.registered_time,
            "last_heartbeat": a.last_heartbeat,
        }
        for a in resp.agents
    ]


AGENT_STYLE = {"draining": "yellow", "connected": "green", "disconnected": "red"}
AGENT_COLUMNS = (
    Column("id", key("id")),
    Column("hostname", key("hostname")),
    Column("state", lambda r: Text(r["state"], style=AGENT_STYLE[r["state"]])),
    Column("cpus", _used("cpus")),
    Column("mem (MiB)", _used("mem")),
    Column("disk (MiB)", _used("disk")),
    Column("ports", lambda r: ",".join(f"{b}-{e}" for b, e in r["total"].get("ports", []))),
    Column("tasks", key("task_count"), right=True),
    Column("attributes", lambda r: ";".join(f"{k}:{v}" for k, v in r["attributes"].items())),
    Column("heartbeat", lambda r: ago(r["last_heartbeat"])),
    Column("offered", _res("offered"), wide=True),
    Column("registered", lambda r: ago(r["registered_time"]), wide=True),
    Column("version", key("version"), wide=True),
)


def agents_listing(master: str) -> Listing:
    stub = _stub(master)
    resp = stub.ListAgents(op.ListAgentsRequest(), timeout=TIMEOUT_S)
    return Listing(AGENT_COLUMNS, agent_records(resp), f"agents of {stub.address}", "no agents registered")


def framework_state(f: op.FrameworkSummary) -> str:
    if not f.connected:
        return "disconnected"
    return "active" if f.active else "suppressed"


def framework_records(resp: op.ListFrameworksResponse) -> list[dict[str, Any]]:
    return [
        {
            "id": f.framework_info.id,
            "name": f.framework_info.name,
            "roles": list(f.framework_info.roles),
            "user": f.framework_info.user,
            "principal": f.framework_info.principal,
            "hostname": f.framework_info.hostname,
            "state": framework_state(f),
            "connected": f.connected,
            "active": f.active,
            "task_count": f.task_count,
            "allocated": resources_json(resources_from_proto(f.allocated)),
            "offered": resources_json(resources_from_proto(f.offered)),
            "registered_time": f.registered_time,
            "failover_timeout_s": f.framework_info.failover_timeout_s,
        }
        for f in resp.frameworks
    ]


FRAMEWORK_COLUMNS = (
    Column("id", key("id")),
    Column("name", key("name")),
    Column("roles", key("roles", ",".join)),
    Column("state", key("state")),
    Column("tasks", key("task_count"), right=True),
    Column("allocated", _res("allocated")),
    Column("registered", lambda r: ago(r["registered_time"])),
    Column("user", key("user"), wide=True),
    Column("principal", key("principal"), wide=True),
    Column("hostname", key("hostname"), wide=True),
    Column("offered", _res("offered"), wide=True),
)


def frameworks_listing(master: str) -> Listing:
    stub = _stub(master)
    resp = stub.ListFrameworks(op.ListFrameworksRequest(), timeout=TIMEOUT_S)
    return Listing(
        FRAMEWORK_COLUMNS,
        framework_records(resp),
        f"frameworks of {stub.address}",
        "no frameworks subscribed",
    )


def task_record(t: op.TaskSummary, hostnames: dict[str, str], names: dict[str, str]) -> dict[str, Any]:
    s = t.status
    agent = t.task_info.agent_id or s.agent_id
    return {
        "id": t.task_info.task_id,
        "name": t.task_info.name,
        "framework_id": t.framework_id,
        "framework_name": names.get(t.framework_id, ""),
        "agent_id": agent,
        "hostname": hostnames.get(agent, ""),
        "state": state_name(s.state),
        "healthy": s.healthy if s.HasField("healthy") else None,
        "exit_code": s.exit_code if s.HasField("exit_code") else None,
        "signal": s.signal if s.HasField("signal") else None,
        "reason": reason_name(s.reason) if s.reason else "",
        "message": s.message,
        "resources": resources_json(resources_from_proto(t.task_info.resources)),
        "launched_time": t.launched_time,
        "updated_time": s.timestamp,
    }


def _task_state(r: Record) -> Text:
    state = r["state"]
    label = state
    if state == "RUNNING" and r["healthy"] is not None:
        label = "RUNNING healthy" if r["healthy"] else "RUNNING unhealthy"
    return Text(label, style="red" if label == "RUNNING unhealthy" else STYLE.get(state, ""))


def exit_text(exit_code: int | None, signal: int | None) -> str:
    """How a task ended, for a cell: its exit code or "sig N"."""
    if exit_code is not None:
        return str(exit_code)
    return f"sig {signal}" if signal else ""


def _task_message(r: Record) -> str:
    if r["reason"] and r["state"] not in ("RUNNING", "STARTING", "FINISHED"):
        return f"{r['reason']}: {r['message']}"
    return str(r["message"])


TASK_COLUMNS = (
    Column("task", key("id"), fold=True),
    Column("framework", key("framework_id"), fold=True),
    Column("agent", key("agent_id"), fold=True),
    Column("hostname", key("hostname")),
    Column("state", _task_state),
    Column("exit", lambda r: exit_text(r["exit_code"], r["signal"]), right=True),
    Column("resources", _res("resources"), fold=True),
    Column("started", lambda r: ago(r["launched_time"])),
    Column("message", _task_message, fold=True),
    Column("name", key("name"), wide=True),
    Column("framework name", key("framework_name"), wide=True),
    Column("updated", lambda r: ago(r["updated_time"]), wide=True),
)


def agent_hostnames(stub: OperatorClient) -> dict[str, str]:
    """Agent id -> hostname, to show beside ids ({} if we may not list agents)."""
    try:
        resp = stub.ListAgents(op.ListAgentsRequest(), timeout=TIMEOUT_S)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.PERMISSION_DENIED:
            return {}
        raise
    return {a.agent_info.id: a.agent_info.hostname for a in resp.agents}


def tasks_listing(master: str, include_completed: bool, framework: str, agent: str = "") -> Listing:
    stub = _stub(master)
    fw = ids.framework_id(stub, framework) if framework else ""
    only_agent = ids.agent_id(stub, agent) if agent else ""
    resp = stub.ListTasks(
        op.ListTasksRequest(framework_id=fw, include_completed=include_completed), timeout=TIMEOUT_S
    )
    names = {
        f.framework_info.id: f.framework_info.name
        for f in stub.ListFrameworks(op.ListFrameworksRequest(), timeout=TIMEOUT_S).frameworks
    }
    hostnames = agent_hostnames(stub)
    records = [task_record(t, hostnames, names) for t in resp.tasks]
    if only_agent:
        records = [r for r in records if r["agent_id"] == only_agent]
    empty = "no tasks" + ("" if include_completed else " (use --all for completed ones)")
    return Listing(TASK_COLUMNS, records, f"tasks of {stub.address}", empty)


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
