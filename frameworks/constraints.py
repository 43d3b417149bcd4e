"""Constraints on agent attributes, as frameworks write them.

    rack == r1
    rack != r2
    zone in [a, b]
    zone not in [c]
    gpu exists

``hostname`` is also matched against the offer's host name, and ``agent_id``
against its agent's id, when the agent has no attribute of that name: so
``agent_id != S3`` or ``hostname not in [h1, h2]`` keeps tasks off those
agents. Parse once with :func:`parse_constraint` (a :class:`ValueError` names
what is wrong), then test offers with :meth:`Constraint.matches` or
:func:`satisfies`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from corral.frameworks.types import Offer

_OPS = ("==", "!=", "in", "not in", "exists")
_RE = re.compile(
    r"^\s*(?P<attr>[A-Za-z0-9_.:/-]+)\s*"
    r"(?:(?P<op>==|!=)\s*(?P<value>\S.*?)|(?P<setop>not\s+in|in)\s*\[(?P<values>[^\]]*)\]|(?P<exists>exists))"
    r"\s*$"
)


@dataclass(frozen=True)
class Constraint:
    """``attribute op value(s)``; values are compared as strings."""

    attribute: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, attributes: Mapping[str, str], hostname: str = "", agent_id: str = "") -> bool:
        """Whether an agent with these attributes (and host name, and id) satisfies it."""
        value = attributes.get(self.attribute)
        if value is None and self.attribute == "hostname" and hostname:
            value = hostname
        if value is None and self.attribute == "agent_id" and agent_id:
            value = agent_id
        match self.op:
            case "exists":
                return value is not None
            case "==" | "in":
                return value is not None and value in self.values
            case _:  # "!=" and "not in": an agent without the attribute satisfies them
                return value not in self.values

    def __str__(self) -> str:
        if self.op == "exists":
            return f"{self.attribute} exists"
        if self.op in ("==", "!="):
            return f"{self.attribute} {self.op} {self.values[0]}"
        return f"{self.attribute} {self.op} [{', '.join(self.values)}]"


def parse_constraint(text: str) -> Constraint:
    """``"rack == r1"`` -> Constraint("rack", "==", ("r1",)); ValueError if malformed."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string such as 'rack == r1', got {text!r}")
    m = _RE.match(text)
    if m is None:
        raise ValueError(
            f"{text!r} is not a constraint; write ATTRIBUTE OP VALUE with OP one of "
            f"{', '.join(_OPS)} (e.g. 'rack == r1', 'zone in [a, b]')"
        )
    attr = m["attr"]
    if m["exists"]:
        return Constraint(attr, "exists")
    if m["op"]:
        return Constraint(attr, m["op"], (_unquote(m["value"]),))
    values = tuple(_unquote(v) for v in m["values"].split(",") if v.strip())
    if not values:
        raise ValueError(f"{text!r}: the list after 'in' is empty")
    return Constraint(attr, "not in" if m["setop"].startswith("not") else "in", values)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def satisfies(offer: Offer, constraints: Iterable[Constraint]) -> Constraint | None:
    """The first constraint the offer's agent fails, or None if it meets them all."""
    for c in constraints:
        if not c.matches(offer.attributes, offer.hostname, offer.agent_id):
            return c
    return None
