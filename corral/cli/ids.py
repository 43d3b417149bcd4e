"""Ids as a user types them: a full id, a unique prefix of one, or (for
frameworks) a name. ``match`` is pure; the ``*_id`` functions ask the master
(or the batch service) for the candidates.

An exact id wins over a prefix (an id may be the prefix of another); a name
is matched whole, never by prefix. Nothing or several matches raise
:class:`IdLookupError` naming the candidates (exit status 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from corral.errors import IdLookupError
from corral.proto import operator_pb2 as op

SHOWN = 5  # candidates named in a message


@dataclass(frozen=True)
class Candidate:
    id: str
    name: str = ""  # matched whole (frameworks), shown beside the id
    scope: str = ""  # what else tells it apart: a task's framework id


def match(kind: str, given: str, candidates: Sequence[Candidate], by_name: bool = False) -> Candidate:
    """The one candidate ``given`` names: its id, a unique prefix of its id,
    or (``by_name``) its whole name."""
    tries = (
        ([c for c in candidates if c.id == given], "give the framework too (--framework)"),
        ([c for c in candidates if by_name and c.name == given], "give an id"),
        ([c for c in candidates if given and c.id.startswith(given)], "give more of the id"),
    )
    for found, hint in tries:
        if len(found) == 1:
            return found[0]
        if found:
            raise IdLookupError(
                f"{kind} {given!r} is ambiguous: {len(found)} {kind}s match ({_names(found)}); {hint}"
            )
    what = "id or name" if by_name else "id"
    known = f" (known: {_names(candidates)})" if candidates else f" (no {kind}s are known)"
    raise IdLookupError(f"{kind} {given!r}: no {kind} has this {what} or an id starting with it{known}")


def _names(candidates: Sequence[Candidate]) -> str:
    shown = [
        c.id + (f" ({c.name})" if c.name else "") + (f" of {c.scope}" if c.scope else "")
        for c in candidates[:SHOWN]
    ]
    more = len(candidates) - SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _listed(call: Any, request: object) -> Any:
    """A listing, or None when the policy does not let us list (then the id
    goes to the master as typed, and the master answers for it). ``call`` is
    a method of operator_client.operator_stub, which has its own deadline."""
    try:
        return call(request)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.PERMISSION_DENIED:
            return None
        raise


def agent_id(stub: Any, given: str) -> str:
    """The full id of the agent ``given`` names (a hostname is shown, not matched:
    several agents may share one)."""
    resp = _listed(stub.ListAgents, op.ListAgentsRequest())
    if resp is None:
        return given
    agents = [Candidate(a.agent_info.id, a.agent_info.hostname) for a in resp.agents]
    return match("agent", given, agents).id


def framework_id(stub: Any, given: str) -> str:
    """The full id of the framework ``given`` names (its id, an id prefix, or its name)."""
    resp = _listed(stub.ListFrameworks, op.ListFrameworksRequest())
    if resp is None:
        return given
    frameworks = [Candidate(f.framework_info.id, f.framework_info.name) for f in resp.frameworks]
    return match("framework", given, frameworks, by_name=True).id


def task_id(stub: Any, given: str, framework: str = "") -> tuple[str, str]:
    """(task id, framework id) of the task ``given`` names, completed ones
    included; ``framework`` (id, prefix or name) narrows the search."""
    fw = framework_id(stub, framework) if framework else ""
    resp = _listed(stub.ListTasks, op.ListTasksRequest(framework_id=fw, include_completed=True))
    if resp is None:
        return given, fw
    seen = {(t.task_info.task_id, t.framework_id) for t in resp.tasks}
    tasks = [Candidate(tid, scope=fid) for tid, fid in sorted(seen)]
    found = match("task", given, tasks)
    return found.id, found.scope


def job_id(jobs: dict[str, Any], given: str) -> str:
    """The full id of the batch job (or periodic job) ``given`` names, from
    the batch service's ``GET /v1/jobs`` answer."""
    candidates = [Candidate(str(j["id"]), str(j.get("name", ""))) for j in jobs.get("jobs", [])]
    candidates += [Candidate(str(p["id"]), "periodic") for p in jobs.get("periodic", [])]
    return match("job", given, candidates).id
