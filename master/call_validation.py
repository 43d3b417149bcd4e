"""Pure checks of whole messages: scheduler calls, agent messages, operator
requests (issue 14: every field a peer controls is checked somewhere).

master/validation.py checks the parts (a task, a FrameworkInfo, an
AgentInfo) and holds the bounds; this module checks what a whole call or
message may hold, cheaply and before any work: counts first, so an ACCEPT of
100,000 tasks costs a length test. Same contract: a list of sentences naming
the field path and value, empty when valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from google.protobuf.message import Message

from corral.master.validation import (
    MAX_FRAMEWORK_ITEMS_PER_CALL,
    MAX_ITEMS_PER_CALL,
    MAX_OFFERS_PER_CALL,
    MAX_ROLES,
    MAX_STATUS_MESSAGE,
    count,
    optional_id,
    printable,
    validate_agent_info,
    validate_id,
    validate_refuse_seconds,
    validate_resource_sizes,
)
from corral.proto import agent_pb2, scheduler_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import Resources


def accept_task_count(accept: scheduler_pb2.Call.Accept) -> int:
    return sum(len(op.launch.task_infos) for op in accept.operations)


def validate_call_size(call: scheduler_pb2.Call, max_tasks_per_accept: int) -> list[str]:
    """Counts in one scheduler call, checked before any work is done on it:
    an ACCEPT of 100,000 tasks must cost a length check, not 100,000
    validations (it stalled the master for 5 s, issue 14)."""
    Call = scheduler_pb2.Call
    errors: list[str] = []
    if call.type == Call.ACCEPT:
        accept = call.accept
        tasks = accept_task_count(accept)
        if tasks > max_tasks_per_accept:
            errors.append(
                f"accept.operations: at most {max_tasks_per_accept} tasks per ACCEPT "
                f"(the master's max_tasks_per_accept), got {tasks}"
            )
        errors += count(accept.operations, "accept.operations", max_tasks_per_accept)
        known = scheduler_pb2.Operation.Type.values()
        errors += [
            f"accept.operations[{i}].type: unknown operation type {op.type}"
            for i, op in enumerate(accept.operations[:max_tasks_per_accept])
            if op.type not in known
        ]
        errors += count(accept.offer_ids, "accept.offer_ids", MAX_OFFERS_PER_CALL)
        errors += validate_refuse_seconds(accept.filters, "accept.filters")
        for i, op in enumerate(accept.operations[:max_tasks_per_accept]):
            for kind in ("reserve", "unreserve"):
                if op.HasField(kind):
                    resources = getattr(op, kind).resources
                    errors += validate_resource_sizes(resources, f"accept.operations[{i}].{kind}.resources")
    elif call.type == Call.DECLINE:
        errors += count(call.decline.offer_ids, "decline.offer_ids", MAX_OFFERS_PER_CALL)
        errors += validate_refuse_seconds(call.decline.filters, "decline.filters")
    elif call.type == Call.ACKNOWLEDGE:
        errors += count(call.acknowledges, "acknowledges", MAX_FRAMEWORK_ITEMS_PER_CALL)
        acks = list(call.acknowledges[:MAX_FRAMEWORK_ITEMS_PER_CALL])
        if call.HasField("acknowledge"):
            acks.append(call.acknowledge)
        for i, ack in enumerate(acks):
            errors += validate_id(ack.task_id, f"acknowledges[{i}].task_id")
            errors += optional_id(ack.agent_id, f"acknowledges[{i}].agent_id")
            if len(ack.uuid) > 64:
                errors.append(f"acknowledges[{i}].uuid: at most 64 bytes, got {len(ack.uuid)}")
            if len(errors) >= 20:
                break  # enough to say what is wrong
    elif call.type == Call.RECONCILE:
        errors += count(call.reconcile.tasks, "reconcile.tasks", MAX_FRAMEWORK_ITEMS_PER_CALL)
        for i, task in enumerate(call.reconcile.tasks[:MAX_FRAMEWORK_ITEMS_PER_CALL]):
            errors += validate_id(task.task_id, f"reconcile.tasks[{i}].task_id")
            errors += optional_id(task.agent_id, f"reconcile.tasks[{i}].agent_id")
            if len(errors) >= 20:
                break
    elif call.type in (Call.REVIVE, Call.SUPPRESS):
        roles = call.revive.roles if call.type == Call.REVIVE else call.suppress.roles
        errors += count(roles, "roles", MAX_ROLES)
    elif call.type == Call.KILL:
        errors += validate_id(call.kill.task_id, "kill.task_id")
    return errors


def validate_task_status(status: pb.TaskStatus, where: str) -> list[str]:
    """A status update from an agent: ids, a known state, bounded text."""
    errors = validate_id(status.task_id, f"{where}.task_id")
    errors += validate_id(status.framework_id, f"{where}.framework_id")
    errors += optional_id(status.agent_id, f"{where}.agent_id")
    if status.state not in pb.TaskState.values() or status.state == pb.TASK_STATE_UNSPECIFIED:
        errors.append(f"{where}.state: unknown state {status.state}")
    if status.reason not in pb.TaskStatus.Reason.values():
        errors.append(f"{where}.reason: unknown reason {status.reason}")
    for name in ("message", "stderr_tail"):
        value = getattr(status, name)
        if len(value) > MAX_STATUS_MESSAGE:
            errors.append(f"{where}.{name}: at most {MAX_STATUS_MESSAGE} characters, got {len(value)}")
    if not math.isfinite(status.timestamp):
        errors.append(f"{where}.timestamp: must be finite, got {status.timestamp}")
    if len(status.uuid) > 64:
        errors.append(f"{where}.uuid: at most 64 bytes, got {len(status.uuid)}")
    return errors


def validate_status_updates(
    statuses: Iterable[pb.TaskStatus], where: str
) -> tuple[list[pb.TaskStatus], list[str]]:
    """Split an agent's updates into the valid ones and the errors of the rest."""
    good: list[pb.TaskStatus] = []
    errors: list[str] = []
    for i, status in enumerate(statuses):
        problems = validate_task_status(status, f"{where}[{i}]")
        if problems:
            errors += problems
        else:
            good.append(status)
    return good, errors


def validate_registration(register: agent_pb2.AgentMessage.Register) -> tuple[list[str], Resources]:
    """An agent's (re-)registration: its info, and what it reports it runs."""
    errors, total = validate_agent_info(register.agent_info)
    errors += count(register.tasks, "register.tasks", MAX_ITEMS_PER_CALL)
    errors += count(register.task_infos, "register.task_infos", MAX_ITEMS_PER_CALL)
    errors += count(register.frameworks, "register.frameworks", MAX_ITEMS_PER_CALL)
    if errors:
        return errors, total
    for i, status in enumerate(register.tasks):
        errors += validate_task_status(status, f"register.tasks[{i}]")
    for i, info in enumerate(register.task_infos):
        where = f"register.task_infos[{i}]"
        errors += validate_id(info.task_id, f"{where}.task_id")
        errors += optional_id(info.agent_id, f"{where}.agent_id")
        errors += validate_resource_sizes(info.resources, f"{where}.resources")
    for i, fw in enumerate(register.frameworks):
        where = f"register.frameworks[{i}]"
        errors += validate_id(fw.id, f"{where}.id")
        errors += printable(fw.name, f"{where}.name")
    return errors[:20], total  # the first twenty say enough; the rest would only fill the log


def validate_operator_request(request: Message) -> list[str]:
    """The fields an operator request names things by (``*_id``, ``role``,
    ``path``, weights, resources), whatever the method: one check for every
    Operator call, run by corral/malformed.py before the servicer."""
    errors: list[str] = []
    for field, value in request.ListFields():
        name = field.name
        if name.endswith("_id") and isinstance(value, str):
            errors += validate_id(value, name)
        elif name == "role" and isinstance(value, str):
            errors += printable(value, name)
        elif name == "path" and isinstance(value, str):
            if len(value) > 4096:
                errors.append(f"path: at most 4096 characters, got {len(value)}")
        elif name in ("resources", "guarantee", "limit"):
            errors += validate_resource_sizes(value, name)
        elif name == "weights":
            errors += count(value, name, MAX_ITEMS_PER_CALL)
            for i, w in enumerate(value[:MAX_ITEMS_PER_CALL]):
                errors += printable(w.role, f"weights[{i}].role")  # the allocator checks the rest
    return errors
