"""CLI commands about allocation: why a framework gets no offers, roles,
weights, quota, and agents under maintenance.

    corral explain FRAMEWORK          # id or name; per pending task for batch and service
    corral roles
    corral weights set ROLE=WEIGHT [ROLE=WEIGHT ...]
    corral quota set ROLE [--guarantee SPEC] [--limit SPEC] [--force]
    corral quota remove ROLE
    corral drain AGENT_ID / corral undrain AGENT_ID
"""

from __future__ import annotations

import math
import time
from typing import Any

import click
import structlog

from corral.cli import ids
from corral.cli.common import _client_logging, console, fail, handle_errors, master_option
from corral.cli.discovery import resolve_master
from corral.cli.operator_client import TIMEOUT_S
from corral.cli.operator_client import operator_stub as _stub
from corral.cli.output import MIB, Column, Listing, key, output_option, quantities_json, resources_json, show
from corral.cli.views import resources_text
from corral.codec import quantities_from_proto, quantities_to_proto, resources_from_proto, resources_to_proto
from corral.errors import CorralError
from corral.frameworks.fit_change import quota_change
from corral.proto import operator_pb2 as op
from corral.resources import ResourceError, Resources, format_quantities, parse_quantities

log = structlog.get_logger(__name__)


def _print(*items: object) -> None:
    console.print(*items, highlight=False, markup=False)


@click.command()
@master_option
@click.argument("framework")
@output_option
@click.pass_context
@handle_errors
def explain(ctx: click.Context, master: str | None, framework: str, output: str | None) -> None:
    """Why FRAMEWORK (id, id prefix or name) is not being offered resources, and, for the
    bundled batch and service frameworks, why each pending task waits: which
    checker rejected which agents, and the smallest change that would fit it."""
    _client_logging(ctx)
    address = resolve_master(master)
    stub = _stub(address)
    fw_id = ids.framework_id(stub, framework)
    resp = stub.Explain(op.ExplainRequest(framework_id=fw_id), timeout=TIMEOUT_S)
    # Two-level scheduling: the pending tasks live in the framework, not the
    # master; the bundled ones say why each waits (GET /v1/pending).
    pending = _bundled_pending(fw_id)
    quotas = _role_limits(address, set(resp.roles)) if pending else {}
    data = {
        "framework_id": fw_id,
        "roles": list(resp.roles),
        "reasons": [
            {"kind": r.kind, "message": r.message, "role": r.role, "agents": r.agents, "until": r.until}
            for r in resp.reasons
        ],
        "pending": [{"framework": kind, **e} for kind, entries in pending for e in entries],
    }
    show(output, data=data, text=_explain_text(data, pending, quotas))


def _explain_text(
    data: dict[str, Any],
    pending: list[tuple[str, list[dict[str, Any]]]],
    quotas: dict[str, tuple[dict[str, int], Resources]],
) -> list[str]:
    fw_id, roles = data["framework_id"], ", ".join(data["roles"])
    if not data["reasons"]:
        lines = [f"{fw_id} (roles {roles}): nothing stands in its way; it gets the next offer that fits"]
    else:
        lines = [f"{fw_id} (roles {roles}) is not offered resources because:"]
        lines += [f"  - [{r['kind']}] {r['message']}" for r in data["reasons"]]
    for kind, entries in pending:
        if not entries:
            lines.append(f"{kind} framework: no task is waiting for a place")
        for e in entries:
            lines += _pending_lines(kind, e)
            for role, (limit, consumed) in sorted(quotas.items()):
                change = quota_change(Resources.parse(e["asked"]), role, limit, consumed)
                if change is not None:
                    lines.append(f"  quota: {change} (the limit holds back offers of more)")
    return lines


def _role_limits(address: str, roles: set[str]) -> dict[str, tuple[dict[str, int], Resources]]:
    """The quota limit and consumption of each of ``roles`` that has a limit."""
    listed = _stub(address).ListRoles(op.ListRolesRequest(), timeout=TIMEOUT_S)
    return {
        r.role: (quantities_from_proto(r.limit), resources_from_proto(r.consumed))
        for r in listed.roles
        if r.role in roles and r.has_limit
    }


def _bundled_pending(fw_id: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """The pending tasks of the bundled framework (batch or service) running
    here as ``fw_id``, if it is one."""
    from corral.cli.discovery import api_credentials
    from corral.frameworks.batch.api import BatchClient
    from corral.frameworks.hosting import find_running
    from corral.frameworks.service.api import ServiceClient

    out = []
    for kind, client_type in (("batch", BatchClient), ("service", ServiceClient)):
        found = find_running(kind)
        if found is None:
            continue
        try:
            client = client_type(str(found["address"]), credentials=api_credentials(found))
            if client.state().get("framework_id") == fw_id:
                out.append((kind, client.pending()))
        except CorralError as e:  # another cluster's, or one we may not call: not ours to explain
            log.debug("explain.framework_unreachable", kind=kind, error=str(e))
    return out


def _pending_lines(kind: str, e: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "service" in e:
        what = f"service {e['service']} ({e['wanted']} instance(s) to start)"
    else:
        tasks = e["tasks"]
        shown = ", ".join(tasks[:3]) + (f" and {len(tasks) - 3} more" if len(tasks) > 3 else "")
        what = f"job {e['job_id']} group {e['group']}: {len(tasks)} pending task(s) ({shown})"
    extra = [f"{e['ports']} ports"] if e.get("ports") else []
    extra += [f"constraint {c}" for c in e.get("constraints", [])]
    lines.append(f"{kind}: {what} asks {e['asked']}" + (f" with {', '.join(extra)}" if extra else ""))
    if not e.get("agents_known"):
        lines.append("  the framework has not listed the cluster's agents (yet, or the policy refuses it)")
    if e.get("never_fits"):
        lines.append(f"  NEVER FITS: {e['never_fits']}")
    for checker, r in e.get("rejected", {}).items():
        lines.append(f"  {checker} rejects {r['count']} agent(s): {'; '.join(r['agents'][:3])}")
    for checker, r in e.get("offers_refused", {}).items():
        lines.append(
            f"  in its last offers, {checker} refused {r['count']} agent(s): {'; '.join(r['agents'][:3])}"
        )
    if e.get("smallest_change"):
        lines.append(f"  smallest change: {e['smallest_change']}")
        for other in e.get("changes", [])[1:]:
            lines.append(f"  or: {other}")
    elif e.get("agents_known") and not e.get("rejected"):
        lines.append("  an agent has room now: it is placed on the next offer")
    return lines


def role_records(resp: op.ListRolesResponse) -> list[dict[str, Any]]:
    return [
        {
            "role": r.role,
            "weight": r.weight,
            "frameworks": list(r.frameworks),
            "share": r.share,
            "guarantee": resources_json(resources_from_proto(r.guarantee)),
            "limit": quantities_json(quantities_from_proto(r.limit)) if r.has_limit else None,
            "consumed": resources_json(resources_from_proto(r.consumed)),
        }
        for r in resp.roles
    ]


def _limit(r: dict[str, Any]) -> str:
    """A quota limit in the flag syntax, zeros kept: ``cpus:0`` holds back every cpu."""
    if r["limit"] is None:
        return ""
    parts = [
        f"{name.removesuffix('_bytes')}:{value / MIB:g}" if name.endswith("_bytes") else f"{name}:{value:g}"
        for name, value in r["limit"].items()
    ]
    return ";".join(parts) or "0"


ROLE_COLUMNS = (
    Column("role", key("role")),
    Column("weight", key("weight", lambda w: f"{w:g}")),
    Column("frameworks", key("frameworks", ",".join)),
    Column("share", key("share", lambda x: f"{x:.3f}")),
    Column("guarantee", lambda r: resources_text(r["guarantee"]).replace("(none)", "")),
    Column("limit", _limit),
    Column("consumed", lambda r: resources_text(r["consumed"]).replace("(none)", "")),
)


@click.command()
@master_option
@output_option
@click.pass_context
@handle_errors
def roles(ctx: click.Context, master: str | None, output: str | None) -> None:
    """List roles with weights, shares, quota and what they consume."""
    _client_logging(ctx)
    records, address = _roles(master)
    show(output, Listing(ROLE_COLUMNS, records, f"roles of {address}", "no roles yet"))


def _roles(master: str | None) -> tuple[list[dict[str, Any]], str]:
    """The role records and the address of the master that answered."""
    stub = _stub(resolve_master(master))
    return role_records(stub.ListRoles(op.ListRolesRequest(), timeout=TIMEOUT_S)), stub.address


@click.group()
def weights() -> None:
    """Role weights (a role with weight 2 gets twice the share of weight 1)."""


@weights.command("set")
@master_option
@click.argument("assignments", nargs=-1, required=True, metavar="ROLE=WEIGHT...")
@click.pass_context
@handle_errors
def weights_set(ctx: click.Context, master: str | None, assignments: tuple[str, ...]) -> None:
    """Set the weights of roles, e.g. `corral weights set eng=2 ops=1`."""
    _client_logging(ctx)
    items = []
    for text in assignments:
        role, sep, value = text.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not role or math.isnan(weight):
            raise click.BadParameter(f"{text!r}: expected ROLE=WEIGHT, e.g. eng=2", param_hint="ROLE=WEIGHT")
        items.append(op.SetWeightsRequest.Weight(role=role, weight=weight))
    _stub(resolve_master(master)).SetWeights(op.SetWeightsRequest(weights=items), timeout=TIMEOUT_S)
    _print("weights set: " + ", ".join(f"{w.role}={w.weight:g}" for w in items))


@click.group()
def quota() -> None:
    """Role quota: a guarantee offered first, a limit never exceeded."""


@quota.command("list")
@master_option
@output_option
@click.pass_context
@handle_errors
def quota_list(ctx: click.Context, master: str | None, output: str | None) -> None:
    """The roles that have a guarantee or a limit."""
    _client_logging(ctx)
    records, address = _roles(master)
    rows = [r for r in records if r["limit"] is not None or any(r["guarantee"].values())]
    columns = [c for c in ROLE_COLUMNS if c.header in ("role", "guarantee", "limit", "consumed")]
    show(output, Listing(columns, rows, f"quota of {address}", "no role has quota"))


@quota.command("set")
@master_option
@click.argument("role")
@click.option("--guarantee", default="", metavar="SPEC", help='e.g. "cpus:8;mem:16384"')
@click.option("--limit", default=None, metavar="SPEC", help='e.g. "cpus:16" (default: no limit)')
@click.option("--force", is_flag=True, help="Accept a guarantee above the cluster's total.")
@click.pass_context
@handle_errors
def quota_set(
    ctx: click.Context, master: str | None, role: str, guarantee: str, limit: str | None, force: bool
) -> None:
    """Set ROLE's quota."""
    _client_logging(ctx)
    g = Resources.parse(guarantee)
    # Quantities, not Resources: "cpus:0" is a limit of no cpus, kept as a zero.
    lim = parse_quantities(limit) if limit is not None else None
    request = op.SetQuotaRequest(
        role=role,
        guarantee=resources_to_proto(g),
        limit=quantities_to_proto(lim or {}),
        has_limit=lim is not None,
        force=force,
    )
    _stub(resolve_master(master)).SetQuota(request, timeout=TIMEOUT_S)
    shown = format_quantities(lim) if lim is not None else "none"
    _print(f"quota of {role}: guarantee {g.format() or 'none'}, limit {shown}")


@quota.command("remove")
@master_option
@click.argument("role")
@click.pass_context
@handle_errors
def quota_remove(ctx: click.Context, master: str | None, role: str) -> None:
    """Remove ROLE's quota."""
    _client_logging(ctx)
    _stub(resolve_master(master)).SetQuota(op.SetQuotaRequest(role=role), timeout=TIMEOUT_S)
    _print(f"quota of {role} removed")


@click.command()
@master_option
@click.argument("agent_id")
@click.pass_context
@handle_errors
def drain(ctx: click.Context, master: str | None, agent_id: str) -> None:
    """Put an agent under maintenance: its tasks keep running, it offers nothing."""
    _client_logging(ctx)
    stub = _stub(resolve_master(master))
    agent_id = ids.agent_id(stub, agent_id)
    stub.DrainAgent(op.DrainAgentRequest(agent_id=agent_id), timeout=TIMEOUT_S)
    _print(f"agent {agent_id} is draining (at {time.strftime('%H:%M:%S')}); `corral undrain` ends it")


@click.command()
@master_option
@click.argument("agent_id")
@click.pass_context
@handle_errors
def undrain(ctx: click.Context, master: str | None, agent_id: str) -> None:
    """Bring a drained agent back into service."""
    _client_logging(ctx)
    stub = _stub(resolve_master(master))
    agent_id = ids.agent_id(stub, agent_id)
    stub.DrainAgent(op.DrainAgentRequest(agent_id=agent_id, undo=True), timeout=TIMEOUT_S)
    _print(f"agent {agent_id} is back in service")


def _reserve(
    ctx: click.Context, master: str | None, agent_id: str, spec: str, unreserve: bool
) -> tuple[Resources, str]:
    """What was (un)reserved, and on which agent (its full id: a prefix may name it)."""
    _client_logging(ctx)
    try:
        resources = Resources.parse(spec)
    except ResourceError as e:
        fail(f"RESOURCES: {e}")
    stub = _stub(resolve_master(master))
    agent_id = ids.agent_id(stub, agent_id)
    request = op.ReserveResourcesRequest(
        agent_id=agent_id, resources=resources_to_proto(resources), unreserve=unreserve
    )
    stub.ReserveResources(request, timeout=TIMEOUT_S)
    return resources, agent_id


@click.command()
@master_option
@click.argument("agent_id")
@click.argument("resources", metavar="RESOURCES")
@click.pass_context
@handle_errors
def reserve(ctx: click.Context, master: str | None, agent_id: str, resources: str) -> None:
    """Reserve an agent's unreserved RESOURCES for roles, e.g. "cpus(ml):2;mem(ml):4096".

    Only frameworks of that role (or its sub-roles) are offered them; a new
    leading master keeps the reservation.
    """
    done, agent_id = _reserve(ctx, master, agent_id, resources, unreserve=False)
    _print(f"reserved {done.format()} on agent {agent_id}")


@click.command()
@master_option
@click.argument("agent_id")
@click.argument("resources", metavar="RESOURCES")
@click.pass_context
@handle_errors
def unreserve(ctx: click.Context, master: str | None, agent_id: str, resources: str) -> None:
    """Give reserved RESOURCES of an agent back to every role, e.g. "cpus(ml):2"."""
    done, agent_id = _reserve(ctx, master, agent_id, resources, unreserve=True)
    _print(f"unreserved {done.format()} on agent {agent_id}")
