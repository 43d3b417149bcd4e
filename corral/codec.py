"""Conversions between protobuf messages and corral's domain values.

Protobuf stops at the transport edge (CONVENTIONS.md); these functions are the
edge. Conversion from the wire validates as it goes and names the offending
field in its error, e.g. ``tasks[3].resources[1].scalar: must be finite, got nan``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

from corral.proto import messages_pb2 as pb
from corral.resources import (
    MILLI,
    RANGE_NAMES,
    SCALAR_NAMES,
    RangeSet,
    ResourceError,
    Resources,
    to_milli,
    validate_name,
    validate_role,
)


def _named(item: pb.Resource, where: str) -> str:
    """``where`` with the resource's name once that name is valid (errors name the field)."""
    try:
        validate_name(item.name)
    except ResourceError as e:
        raise ResourceError(f"{where}.name: {e}") from None
    return f"{where} ({item.name})"


def resources_from_proto(items: Sequence[pb.Resource], path: str = "resources") -> Resources:
    """Parse and validate wire resources; duplicates of one name and role add up."""
    out = Resources()
    for i, item in enumerate(items):
        where = _named(item, f"{path}[{i}]")
        try:
            validate_role(item.role)
        except ResourceError as e:
            raise ResourceError(f"{where}.role: {e}") from None
        kind = item.WhichOneof("value")
        # "*" is Mesos' name for the default role: unreserved, the same as "".
        key = (item.name, "" if item.role == "*" else item.role)
        if kind is None:
            raise ResourceError(f"{where}: has no value")
        if kind == "scalar":
            if item.name in RANGE_NAMES:
                raise ResourceError(f"{where}: {item.name} must be ranges, got a scalar")
            milli = to_milli(item.scalar, f"{where}.scalar")
            out = out + Resources(scalars={key: milli} if milli else {})
        elif kind == "ranges":
            if item.name in SCALAR_NAMES:
                raise ResourceError(f"{where}: {item.name} must be a scalar, got ranges")
            try:
                rs = RangeSet.of((r.begin, r.end) for r in item.ranges.range)
            except ResourceError as e:
                raise ResourceError(f"{where}.ranges: {e}") from None
            out = out + Resources(ranges={key: rs} if rs else {})
        else:
            if item.name in SCALAR_NAMES or item.name in RANGE_NAMES:
                raise ResourceError(f"{where}: {item.name} cannot be a set")
            s = frozenset(item.set.item)
            out = out + Resources(sets={key: s} if s else {})
    return out


def resources_to_proto(resources: Resources) -> list[pb.Resource]:
    out: list[pb.Resource] = []
    for name, role in resources:
        key = (name, role)
        if key in resources.scalars:
            out.append(pb.Resource(name=name, role=role, scalar=resources.scalars[key] / MILLI))
        if key in resources.ranges:
            rs = resources.ranges[key]
            out.append(
                pb.Resource(
                    name=name,
                    role=role,
                    ranges=pb.Value.Ranges(range=[pb.Value.Range(begin=b, end=e) for b, e in rs.intervals]),
                )
            )
        if key in resources.sets:
            out.append(pb.Resource(name=name, role=role, set=pb.Value.Set(item=sorted(resources.sets[key]))))
    return out


def quantities_from_proto(items: Sequence[pb.Resource], path: str = "resources") -> dict[str, int]:
    """Unreserved scalar quantities by name, in milli-units, zeros kept (a
    quota limit); ranges, sets and reserved resources are refused."""
    out: dict[str, int] = {}
    for i, item in enumerate(items):
        where = _named(item, f"{path}[{i}]")
        if item.role not in ("", "*"):
            raise ResourceError(f"{where}: quota is for unreserved quantities, got role {item.role!r}")
        if item.WhichOneof("value") != "scalar" or item.name in RANGE_NAMES:
            raise ResourceError(f"{where}: only scalars (cpus, mem, ...) can be quantities")
        out[item.name] = out.get(item.name, 0) + to_milli(item.scalar, f"{where}.scalar")
    return out


def quantities_to_proto(q: Mapping[str, int]) -> list[pb.Resource]:
    """The reverse of :func:`quantities_from_proto`: zeros are sent as 0."""
    return [pb.Resource(name=n, scalar=v / MILLI) for n, v in sorted(q.items())]


def attributes_from_proto(items: Iterable[pb.Attribute]) -> dict[str, str]:
    return {a.name: a.value for a in items}


def attributes_to_proto(attributes: Mapping[str, str]) -> list[pb.Attribute]:
    return [pb.Attribute(name=k, value=v) for k, v in sorted(attributes.items())]


def parse_attributes(text: str) -> dict[str, str]:
    """Parse the agent flag syntax ``rack:r1;zone:a``."""
    out: dict[str, str] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"attribute {item!r}: expected NAME:VALUE")
        if name.strip() in out:
            raise ValueError(f"attribute {name.strip()!r}: given more than once")
        out[name.strip()] = value.strip()
    return out


TERMINAL_STATES = frozenset(
    {
        pb.TASK_FINISHED,
        pb.TASK_FAILED,
        pb.TASK_KILLED,
        pb.TASK_ERROR,
        pb.TASK_LOST,
        pb.TASK_DROPPED,
        pb.TASK_GONE,
        pb.TASK_GONE_BY_OPERATOR,
    }
)


State: TypeAlias = pb.TaskState
Reason: TypeAlias = pb.TaskStatus.Reason


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


def state_name(state: State) -> str:
    """``TASK_FINISHED`` -> ``FINISHED``."""
    return pb.TaskState.Name(state).removeprefix("TASK_")


def reason_name(reason: Reason) -> str:
    return pb.TaskStatus.Reason.Name(reason).removeprefix("REASON_")
