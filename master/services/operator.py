"""Operator: unary calls for the CLI and UIs. Reads go through the master's
state as it is now; writes call the same transitions frameworks use."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import grpc
import grpc.aio
import structlog

from corral.codec import (
    quantities_from_proto,
    quantities_to_proto,
    resources_from_proto,
    resources_to_proto,
)
from corral.errors import CallError
from corral.identity import Principal
from corral.master import wire
from corral.master.core.domain import TaskState
from corral.master.core.records import FrameworkRecord, TaskRecord
from corral.master.leadership import Leadership
from corral.master.master import Master
from corral.master.rate_limit import DEFAULT_OPERATOR_RATE_LIMITS, RateLimiter
from corral.master.services.guard import Guard
from corral.master.task_exec import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.resources import ResourceError, Resources, format_quantities

Ctx = grpc.aio.ServicerContext
log = structlog.get_logger(__name__)


async def _fail(context: Ctx[object, object], err: CallError) -> None:
    await context.abort(getattr(grpc.StatusCode, err.code), err.message)


def _task_summary(task: TaskRecord) -> op.TaskSummary:
    return op.TaskSummary(
        task_info=wire.task_to_pb(task.info),
        framework_id=task.framework_id,
        status=wire.status_to_pb(task.status),
        launched_time=task.launched_at,
    )


def _fw_summary(master: Master, fw: FrameworkRecord) -> op.FrameworkSummary:
    used = Resources()
    for task in fw.tasks.values():
        if not task.terminal:
            used = used + task.resources
    offered = Resources()
    for offer_id in fw.offers:
        offered = offered + master.state.offers[offer_id].resources
    return op.FrameworkSummary(
        framework_info=wire.framework_to_pb(fw.info),
        connected=fw.connected,
        active=not fw.suppressed,
        allocated=resources_to_proto(used + offered),
        offered=resources_to_proto(offered),
        task_count=len(fw.tasks),
        registered_time=fw.registered_at,
    )


def owner(master: Master, framework_id: str) -> str:
    """The ACL object of a framework and its tasks: ``owner:PRINCIPAL``."""
    fw = master.state.frameworks.get(framework_id)
    if fw is None:
        fw = next((f for f in master.state.completed_frameworks if f.framework_id == framework_id), None)
    return f"owner:{fw.info.principal if fw is not None else ''}"


def exec_request_problem(
    request: op.ExecTaskRequest, tasks: Sequence[TaskRecord]
) -> tuple[grpc.StatusCode, str] | None:
    """What is wrong with an ExecTask request for the live ``tasks`` it names (None: nothing)."""
    bad = grpc.StatusCode.INVALID_ARGUMENT
    if not request.task_id:
        return bad, "task_id: must not be empty"
    if not request.argv or not request.argv[0]:
        return bad, "argv: a command is needed"
    if any("\0" in a for a in request.argv):
        return bad, "argv: must not contain NUL bytes"
    if request.tty and not (0 < request.rows <= 1000 and 0 < request.cols <= 1000):
        return bad, f"rows, cols: a terminal of 1 to 1000 each, got {request.rows}x{request.cols}"
    if not 0 <= request.timeout_s <= MAX_TIMEOUT_S:
        return bad, f"timeout_s: must be between 0 and {MAX_TIMEOUT_S:g}, got {request.timeout_s:g}"
    if not tasks:
        return grpc.StatusCode.NOT_FOUND, f"task_id: no live task {request.task_id!r}"
    if len(tasks) > 1:
        frameworks = ", ".join(sorted(t.framework_id for t in tasks))
        return (
            bad,
            f"task_id: {request.task_id!r} names a task in several frameworks ({frameworks}): give one",
        )
    state = tasks[0].status.state
    if state != TaskState.TASK_RUNNING:
        name = state.name
        return grpc.StatusCode.FAILED_PRECONDITION, (
            f"task {request.task_id!r} is {name}: only a running task can be entered"
        )
    return None


def _roles_of(resources: Resources) -> list[str]:
    return sorted({role or "*" for role in resources.roles()}) or ["*"]


class OperatorService(operator_pb2_grpc.OperatorServicer):
    """Every call but GetMasterInfo (leader discovery) is authorized first;
    views show only what the caller may see; actions are audited."""

    def __init__(self, leadership: Leadership, info: pb.MasterInfo, guard: Guard | None = None) -> None:
        self.leadership = leadership
        self.info = info
        self.guard = guard or Guard()
        #: per-principal buckets for tenants' operator calls; they outlive a
        #: leadership term, as the scheduler's do
        self.limiter = RateLimiter(DEFAULT_OPERATOR_RATE_LIMITS)

    async def _enter(
        self, context: Ctx[object, object], action: str, objects: str | list[str], call: str
    ) -> tuple[Master, Principal]:
        """The leading master and the caller, once the caller may do ``action``."""
        master = await self.leadership.require(context)
        principal = await self._caller(context, call)
        await self.guard.require(context, principal, action, objects, call)
        return master, principal

    async def _caller(self, context: Ctx[object, object], call: str) -> Principal:
        """The caller, once its call fits its rate limit (RESOURCE_EXHAUSTED
        otherwise). Operators are not limited; tenants are, so that one
        cannot keep the master's loop busy with operator calls (GetUsage
        asks every agent)."""
        principal = self.guard.principal(context)
        if principal.kind != "operator":
            refusal = self.limiter.admit(str(principal), time.monotonic())
            if refusal is not None:
                log.info("operator.rate_limited", principal=str(principal), call=call)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{call}: {refusal}")
        return principal

    async def GetMasterInfo(
        self, request: op.GetMasterInfoRequest, context: Ctx[object, object]
    ) -> op.GetMasterInfoResponse:
        # Answered leading or not: "who are you, and are you leading?"
        return op.GetMasterInfoResponse(master_info=self.info, leading=self.leadership.current is not None)

    async def ListAgents(
        self, request: op.ListAgentsRequest, context: Ctx[object, object]
    ) -> op.ListAgentsResponse:
        master, principal = await self._enter(context, "view_cluster", "cluster", "ListAgents")
        state = master.state
        # A tenant sees agents' resources and attributes (to place its tasks),
        # not their work directories or certificate names.
        operator = principal.kind == "operator"
        out = []
        for agent in sorted(state.agents.values(), key=lambda a: a.agent_id):
            used = state.used_on_agent(agent.agent_id)
            offered = state.offered_on_agent(agent.agent_id)
            info = wire.agent_to_pb(agent.info)
            if not operator:
                info.ClearField("work_dir")
                info.ClearField("principal")
            out.append(
                op.AgentSummary(
                    agent_info=info,
                    connected=agent.connected,
                    # with dynamic reservations, which only the allocator knows
                    total=resources_to_proto(
                        master.allocator.agent_total(agent.agent_id)
                        if master.allocator.has_agent(agent.agent_id)
                        else agent.total
                    ),
                    allocated=resources_to_proto(used + offered),
                    offered=resources_to_proto(offered),
                    registered_time=agent.registered_at,
                    last_heartbeat=agent.last_heartbeat,
                    task_count=len(agent.tasks),
                    draining=master.allocator.has_agent(agent.agent_id)
                    and master.allocator.draining(agent.agent_id),
                )
            )
        return op.ListAgentsResponse(agents=out)

    async def ListFrameworks(
        self, request: op.ListFrameworksRequest, context: Ctx[object, object]
    ) -> op.ListFrameworksResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "ListFrameworks")
        return op.ListFrameworksResponse(
            frameworks=[
                _fw_summary(master, fw)
                for fw in master.state.frameworks.values()
                if self.guard.allows(principal, "view_framework", owner(master, fw.framework_id))
            ]
        )

    async def ListTasks(
        self, request: op.ListTasksRequest, context: Ctx[object, object]
    ) -> op.ListTasksResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "ListTasks")
        state = master.state
        if request.framework_id:
            # Asked before NOT_FOUND: a tenant must not learn which ids exist
            # (an unknown framework's owner is "owner:", no tenant's own).
            await self.guard.require(
                context, principal, "view_task", owner(master, request.framework_id), "ListTasks"
            )
        # A removed framework's completed tasks stay listed (bounded per
        # framework, as Mesos' --max_completed_tasks_per_framework, and the
        # number of removed frameworks kept): `tasks --all` after a teardown.
        removed = list(state.completed_frameworks) if request.include_completed else []
        if (
            request.framework_id
            and request.framework_id not in state.frameworks
            and not any(f.framework_id == request.framework_id for f in removed)
        ):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"framework_id: {request.framework_id!r} is not known"
            )
        out: list[op.TaskSummary] = []
        for fw in [*state.frameworks.values(), *removed]:
            if request.framework_id and fw.framework_id != request.framework_id:
                continue
            if not self.guard.allows(principal, "view_task", owner(master, fw.framework_id)):
                continue
            if request.include_completed:
                out += [_task_summary(t) for t in fw.completed]
            out += [_task_summary(t) for t in fw.tasks.values()]
        return op.ListTasksResponse(tasks=out)

    async def KillTask(
        self, request: op.KillTaskRequest, context: Ctx[object, object]
    ) -> op.KillTaskResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "KillTask")
        if not request.task_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_id: must not be empty")
        # Asked of every task the id names, before anything is done: a
        # principal learns nothing and touches nothing of another's tasks.
        matches = master.state.find_task(request.task_id, request.framework_id)
        owners = sorted({owner(master, t.framework_id) for t in matches})
        await self.guard.require(context, principal, "kill_task", owners, "KillTask")
        try:
            master.operator_kill(request.task_id, request.framework_id)
        except CallError as e:
            self.guard.audit.action(principal, "KillTask", task_id=request.task_id, outcome=e.code)
            await _fail(context, e)
        self.guard.audit.action(principal, "KillTask", task_id=request.task_id, outcome="OK")
        return op.KillTaskResponse()

    async def Teardown(
        self, request: op.TeardownRequest, context: Ctx[object, object]
    ) -> op.TeardownResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "Teardown")
        await self.guard.require(
            context, principal, "teardown_framework", owner(master, request.framework_id), "Teardown"
        )
        try:
            master.teardown(request.framework_id, reason=f"operator teardown by {principal}")
        except CallError as e:
            self.guard.audit.action(principal, "Teardown", framework_id=request.framework_id, outcome=e.code)
            await _fail(context, e)
        self.guard.audit.action(principal, "Teardown", framework_id=request.framework_id, outcome="OK")
        return op.TeardownResponse()

    async def ReadFile(
        self, request: op.ReadFileRequest, context: Ctx[object, object]
    ) -> op.ReadFileResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "ReadFile")
        if not request.task_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_id: must not be empty")
        owners = sorted(
            {
                owner(master, t.framework_id)
                for t in master.state.find_any_task(request.task_id, request.framework_id)
            }
        )
        await self.guard.require(context, principal, "read_sandbox", owners, "ReadFile")
        path = request.path or "stdout"
        if "\0" in path or path.startswith("/") or ".." in path.split("/"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"path: must be relative to the sandbox, got {path!r}"
            )
        try:
            data, size, status = await master.read_file(
                request.task_id,
                request.framework_id,
                request.path or "stdout",
                request.offset,
                request.length,
            )
        except CallError as e:
            await _fail(context, e)
            raise  # unreachable: abort raises
        return op.ReadFileResponse(data=data, size=size, status=status)

    async def ExecTask(
        self, request_iterator: AsyncIterator[op.ExecTaskInput], context: Ctx[object, object]
    ) -> AsyncIterator[op.ExecTaskResponse]:
        """``corral exec``: authorized as ``exec_task`` on the task's owner
        (its framework's principal; operators by the built-in policy),
        audited when it starts and when it ends. The first message is the
        request; the rest (stdin, terminal sizes) go to the command."""
        master = await self.leadership.require(context)
        principal = await self._caller(context, "ExecTask")
        inputs = aiter(request_iterator)
        first = await anext(inputs, None)
        if first is None or not first.HasField("start"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "start: the first message must be the request"
            )
        assert first is not None
        request = first.start
        tasks = master.state.find_task(request.task_id, request.framework_id) if request.task_id else []
        problem = exec_request_problem(request, tasks)
        if problem is not None:
            await context.abort(problem[0], problem[1])
        task = tasks[0]
        await self.guard.require(
            context, principal, "exec_task", owner(master, task.framework_id), "ExecTask"
        )
        fields = {
            "task_id": task.task_id,
            "framework_id": task.framework_id,
            "argv": list(request.argv),
            "stdin": request.stdin,
            "tty": request.tty,
        }
        timeout_s = request.timeout_s or DEFAULT_TIMEOUT_S
        self.guard.audit.action(principal, "ExecTask", agent_id=task.agent_id, outcome="STARTED", **fields)
        outcome = "CANCELLED"
        try:
            yield op.ExecTaskResponse(agent_id=task.agent_id)
            # aclosing: a caller that goes away cancels the command on its agent now.
            async with contextlib.aclosing(master.exec_task(task, request, timeout_s, inputs)) as pieces:
                async for piece in pieces:
                    if piece.error:
                        outcome = "FAILED_PRECONDITION"
                        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, piece.error)
                    yield op.ExecTaskResponse(output=piece.data, done=piece.done, exit_code=piece.exit_code)
                    if piece.done:
                        outcome = f"exit {piece.exit_code}"
        except CallError as e:
            outcome = e.code
            await _fail(context, e)
        finally:
            self.guard.audit.action(principal, "ExecTask", outcome=outcome, **fields)

    # -- allocation -----------------------------------------------------------

    async def Explain(self, request: op.ExplainRequest, context: Ctx[object, object]) -> op.ExplainResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "Explain")
        await self.guard.require(
            context, principal, "view_framework", owner(master, request.framework_id), "Explain"
        )
        try:
            reasons = master.explain(request.framework_id)
        except CallError as e:
            await _fail(context, e)
            raise  # unreachable: abort raises
        fw = master.state.frameworks[request.framework_id]
        return op.ExplainResponse(
            reasons=[
                op.ExplainReason(kind=r.kind, message=r.message, role=r.role, agents=r.agents, until=r.until)
                for r in reasons
            ],
            roles=list(fw.info.roles),
        )

    async def ListRoles(
        self, request: op.ListRolesRequest, context: Ctx[object, object]
    ) -> op.ListRolesResponse:
        master, principal = await self._enter(context, "view_cluster", "cluster", "ListRoles")

        def visible(framework_ids: tuple[str, ...]) -> list[str]:
            # Only the frameworks the caller may view: another tenant's id
            # is what it would need to subscribe as that framework.
            return [
                f for f in framework_ids if self.guard.allows(principal, "view_framework", owner(master, f))
            ]

        return op.ListRolesResponse(
            roles=[
                op.RoleSummary(
                    role=r.role,
                    weight=r.weight,
                    frameworks=visible(r.frameworks),
                    share=r.share,
                    guarantee=resources_to_proto(r.guarantee),
                    limit=quantities_to_proto(r.limit_quantities or {}),
                    has_limit=r.limit_quantities is not None,
                    consumed=resources_to_proto(r.consumed),
                )
                for r in master.roles()
            ]
        )

    async def SetWeights(
        self, request: op.SetWeightsRequest, context: Ctx[object, object]
    ) -> op.SetWeightsResponse:
        roles = [f"role:{w.role}" for w in request.weights]
        master, principal = await self._enter(context, "set_weight", roles, "SetWeights")
        weights = [(w.role, w.weight) for w in request.weights]
        try:
            master.set_weights(weights)
        except CallError as e:
            self.guard.audit.action(principal, "SetWeights", weights=weights, outcome=e.code)
            await _fail(context, e)
        self.guard.audit.action(principal, "SetWeights", weights=weights, outcome="OK")
        return op.SetWeightsResponse()

    async def SetQuota(
        self, request: op.SetQuotaRequest, context: Ctx[object, object]
    ) -> op.SetQuotaResponse:
        master, principal = await self._enter(context, "set_quota", f"role:{request.role}", "SetQuota")
        try:
            guarantee = resources_from_proto(request.guarantee, "guarantee")
            limit = quantities_from_proto(request.limit, "limit") if request.has_limit else None
        except ResourceError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise  # unreachable: abort raises
        try:
            master.set_quota(request.role, guarantee, limit, request.force)
        except CallError as e:
            self.guard.audit.action(principal, "SetQuota", role=request.role, outcome=e.code)
            await _fail(context, e)
        self.guard.audit.action(
            principal,
            "SetQuota",
            role=request.role,
            guarantee=guarantee.format(),
            limit=format_quantities(limit) if limit is not None else None,
            outcome="OK",
        )
        return op.SetQuotaResponse()

    async def DrainAgent(
        self, request: op.DrainAgentRequest, context: Ctx[object, object]
    ) -> op.DrainAgentResponse:
        master, principal = await self._enter(
            context, "drain_agent", f"agent:{request.agent_id}", "DrainAgent"
        )
        try:
            master.drain_agent(request.agent_id, draining=not request.undo)
        except CallError as e:
            self.guard.audit.action(principal, "DrainAgent", agent_id=request.agent_id, outcome=e.code)
            await _fail(context, e)
        self.guard.audit.action(
            principal, "DrainAgent", agent_id=request.agent_id, undo=request.undo, outcome="OK"
        )
        return op.DrainAgentResponse()

    async def ReserveResources(
        self, request: op.ReserveResourcesRequest, context: Ctx[object, object]
    ) -> op.ReserveResourcesResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "ReserveResources")
        try:
            resources = resources_from_proto(request.resources, "resources")
        except ResourceError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise  # unreachable: abort raises
        action = "unreserve_resources" if request.unreserve else "reserve_resources"
        roles = [f"role:{r}" for r in _roles_of(resources)]
        await self.guard.require(context, principal, action, roles, "ReserveResources")
        try:
            master.reserve(request.agent_id, resources, request.unreserve)
        except CallError as e:
            self.guard.audit.action(principal, action, agent_id=request.agent_id, outcome=e.code)
            await _fail(context, e)
        self.guard.audit.action(
            principal, action, agent_id=request.agent_id, resources=resources.format(), outcome="OK"
        )
        return op.ReserveResourcesResponse()

    async def GetUsage(
        self, request: op.GetUsageRequest, context: Ctx[object, object]
    ) -> op.GetUsageResponse:
        master = await self.leadership.require(context)
        principal = await self._caller(context, "GetUsage")
        if request.framework_id:
            await self.guard.require(
                context, principal, "view_task", owner(master, request.framework_id), "GetUsage"
            )
        try:
            usages, errors = await master.usage(request.agent_id, request.framework_id, request.task_id)
        except CallError as e:
            await _fail(context, e)
            raise  # unreachable: abort raises
        visible = [
            u for u in usages if self.guard.allows(principal, "view_task", owner(master, u.framework_id))
        ]
        return op.GetUsageResponse(usages=visible, errors=errors)
