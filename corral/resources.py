"""Exact resource arithmetic.

Scalars (cpus, mem, disk, gpus, ...) are fixed-point integers in milli-units:
``1.5 cpus`` is stored as ``1500``. Summing floats drifts (Mesos learned this and
moved to fixed-point in 1.4), and an allocator that believes 0.1 + 0.2 > 0.3
either over-commits or leaves crumbs. Ranges (ports) are normalised interval
sets; sets are frozensets of strings.

Every quantity is keyed by ``(name, role)``; role ``""`` means unreserved. That
keeps reservations an addition for the allocator issue rather than a rewrite.

>>> r = Resources.parse("cpus:1.5;mem:512;ports:[31000-31009]")
>>> (r - Resources.parse("cpus:0.5;ports:[31000-31000]")).format()
'cpus:1;mem:512;ports:[31001-31009]'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

MILLI = 1000

#: Names whose kind is fixed; any other well-formed name an agent declares is
#: allowed, with its kind taken from its syntax.
SCALAR_NAMES = frozenset({"cpus", "mem", "disk", "gpus"})
RANGE_NAMES = frozenset({"ports"})

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_ROLE_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class ResourceError(ValueError):
    """A resource quantity or expression is malformed; the message names it."""


def to_milli(value: float, what: str = "value") -> int:
    """Convert a wire scalar to milli-units, rejecting what cannot be exact.

    Mesos rounds scalars to three decimals; we do the same, but refuse
    non-finite and negative values outright, and a positive value below the
    resolution (0.001) that rounding would silently make 0.

    >>> to_milli(0.0015, "cpus")
    2
    >>> to_milli(0.0001, "cpus")
    Traceback (most recent call last):
    ...
    corral.resources.ResourceError: cpus: 0.0001 is below the resolution of 0.001
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResourceError(f"{what}: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ResourceError(f"{what}: must be finite, got {value}")
    if value < 0:
        raise ResourceError(f"{what}: must be >= 0, got {value}")
    milli = round(value * MILLI)
    if milli == 0 and value > 0:
        raise ResourceError(f"{what}: {value:g} is below the resolution of {1 / MILLI:g}")
    if milli > 2**62:
        raise ResourceError(f"{what}: too large, got {value}")
    return milli


def format_milli(milli: int) -> str:
    """Format milli-units without float noise: 1500 -> '1.5', 2000 -> '2'."""
    whole, frac = divmod(abs(milli), MILLI)
    sign = "-" if milli < 0 else ""
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:03d}".rstrip("0")


@dataclass(frozen=True, slots=True)
class RangeSet:
    """A normalised set of inclusive integer intervals, e.g. ports."""

    intervals: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, intervals: Iterable[tuple[int, int]]) -> RangeSet:
        items = sorted(intervals)
        for begin, end in items:
            if begin < 0 or end < begin:
                raise ResourceError(f"range [{begin}-{end}]: begin must be <= end and >= 0")
        merged: list[tuple[int, int]] = []
        for begin, end in items:
            if merged and begin <= merged[-1][1] + 1:
                last_begin, last_end = merged[-1]
                merged[-1] = (last_begin, max(last_end, end))
            else:
                merged.append((begin, end))
        return cls(tuple(merged))

    @classmethod
    def parse(cls, text: str) -> RangeSet:
        """Parse ``[31000-32000,33000-33005]``."""
        body = text.strip()
        if not (body.startswith("[") and body.endswith("]")):
            raise ResourceError(f"ranges must look like [B-E,...], got {text!r}")
        parts = [p.strip() for p in body[1:-1].split(",") if p.strip()]
        intervals = []
        for part in parts:
            begin, sep, end = part.partition("-")
            try:
                intervals.append((int(begin), int(end if sep else begin)))
            except ValueError:
                raise ResourceError(f"range {part!r}: must be B-E with integers") from None
        return cls.of(intervals)

    def size(self) -> int:
        return sum(end - begin + 1 for begin, end in self.intervals)

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def __or__(self, other: RangeSet) -> RangeSet:
        return RangeSet.of(self.intervals + other.intervals)

    def __sub__(self, other: RangeSet) -> RangeSet:
        out: list[tuple[int, int]] = []
        for begin, end in self.intervals:
            cur = begin
            for o_begin, o_end in other.intervals:
                if o_end < cur or o_begin > end:
                    continue
                if o_begin > cur:
                    out.append((cur, o_begin - 1))
                cur = max(cur, o_end + 1)
                if cur > end:
                    break
            if cur <= end:
                out.append((cur, end))
        return RangeSet(tuple(out))

    def contains(self, other: RangeSet) -> bool:
        return not (other - self)

    def first(self, count: int) -> RangeSet:
        """The lowest ``count`` values, for picking ports from an offer."""
        out: list[tuple[int, int]] = []
        left = count
        for begin, end in self.intervals:
            if left <= 0:
                break
            take = min(left, end - begin + 1)
            out.append((begin, begin + take - 1))
            left -= take
        if left > 0:
            raise ResourceError(f"only {self.size()} values available, wanted {count}")
        return RangeSet(tuple(out))

    def format(self) -> str:
        return "[" + ",".join(f"{b}-{e}" for b, e in self.intervals) + "]"


Key = tuple[str, str]  # (name, role)


@dataclass(frozen=True, slots=True)
class Resources:
    """An immutable bag of resources. Zero and empty entries are never stored,
    so equality is structural: ``a - b + b == a`` whenever ``b <= a``."""

    scalars: Mapping[Key, int] = field(default_factory=dict)
    ranges: Mapping[Key, RangeSet] = field(default_factory=dict)
    sets: Mapping[Key, frozenset[str]] = field(default_factory=dict)

    # -- construction ---------------------------------------------------------

    @classmethod
    def of(
        cls,
        *,
        role: str = "",
        ranges: Mapping[str, RangeSet] | None = None,
        **scalars: float,
    ) -> Resources:
        """Build from plain numbers: ``Resources.of(cpus=1, mem=256)``."""
        return cls(
            scalars={(n, role): to_milli(v, n) for n, v in scalars.items() if v},
            ranges={(n, role): r for n, r in (ranges or {}).items() if r},
        )

    @classmethod
    def parse(cls, text: str) -> Resources:
        """Parse the agent flag syntax ``cpus:4;mem:8192;ports:[31000-32000]``.

        A role in parentheses reserves a quantity: ``cpus(ml):2``. Sets use
        braces: ``zones:{a,b}``.
        """
        scalars: dict[Key, int] = {}
        ranges: dict[Key, RangeSet] = {}
        sets: dict[Key, frozenset[str]] = {}
        for head, value in _items(text, "NAME:VALUE"):
            name, role = _split_role(head)
            key = (name, role)
            if key in scalars or key in ranges or key in sets:
                raise ResourceError(f"{name}: given more than once")
            if value.startswith("["):
                if name in SCALAR_NAMES:
                    raise ResourceError(f"{name}: must be a number, got ranges {value!r}")
                try:
                    ranges[key] = RangeSet.parse(value)
                except ResourceError as e:
                    raise ResourceError(f"{name}: {e}") from None
            elif value.startswith("{"):
                if name in SCALAR_NAMES or name in RANGE_NAMES:
                    raise ResourceError(f"{name}: cannot be a set, got {value!r}")
                if not value.endswith("}"):
                    raise ResourceError(f"{name}: set must look like {{a,b}}")
                sets[key] = frozenset(v.strip() for v in value[1:-1].split(",") if v.strip())
            else:
                if name in RANGE_NAMES:
                    raise ResourceError(f"{name}: must be ranges like [B-E], got {value!r}")
                try:
                    number = float(value)
                except ValueError:
                    raise ResourceError(f"{name}: not a number: {value!r}") from None
                scalars[key] = to_milli(number, name)
        return cls(
            scalars={k: v for k, v in scalars.items() if v},
            ranges={k: v for k, v in ranges.items() if v},
            sets={k: v for k, v in sets.items() if v},
        )

    # -- queries --------------------------------------------------------------

    def scalar(self, name: str, role: str | None = None) -> int:
        """Milli-units of ``name``; over every role when role is None."""
        if role is not None:
            return self.scalars.get((name, role), 0)
        return sum(v for (n, _), v in self.scalars.items() if n == name)

    def range(self, name: str, role: str | None = None) -> RangeSet:
        out = RangeSet()
        for (n, r), rs in self.ranges.items():
            if n == name and (role is None or r == role):
                out = out | rs
        return out

    def names(self) -> set[str]:
        return {k[0] for k in (*self.scalars, *self.ranges, *self.sets)}

    def roles(self) -> set[str]:
        return {k[1] for k in (*self.scalars, *self.ranges, *self.sets)}

    def is_empty(self) -> bool:
        return not (self.scalars or self.ranges or self.sets)

    def __bool__(self) -> bool:
        return not self.is_empty()

    def contains(self, other: Resources) -> bool:
        """True when ``other`` fits entirely inside ``self`` (role by role)."""
        for key, v in other.scalars.items():
            if self.scalars.get(key, 0) < v:
                return False
        for key, rs in other.ranges.items():
            if not self.ranges.get(key, RangeSet()).contains(rs):
                return False
        return all(s <= self.sets.get(key, frozenset()) for key, s in other.sets.items())

    def __ge__(self, other: Resources) -> bool:
        return self.contains(other)

    def __le__(self, other: Resources) -> bool:
        return other.contains(self)

    # -- arithmetic -----------------------------------------------------------

    def __add__(self, other: Resources) -> Resources:
        # Immutable, so adding nothing can return the other operand as it is
        # (the allocator's hot path: an empty allocation plus an offer).
        if not (other.scalars or other.ranges or other.sets):
            return self
        if not (self.scalars or self.ranges or self.sets):
            return other
        scalars = dict(self.scalars)
        for key, v in other.scalars.items():
            scalars[key] = scalars.get(key, 0) + v
        ranges = dict(self.ranges)
        for key, rs in other.ranges.items():
            ranges[key] = ranges.get(key, RangeSet()) | rs
        sets = dict(self.sets)
        for key, s in other.sets.items():
            sets[key] = sets.get(key, frozenset()) | s
        return Resources(scalars, ranges, sets)

    def __sub__(self, other: Resources) -> Resources:
        """Subtract; raises ResourceError if ``other`` is not contained."""
        if not self.contains(other):
            raise ResourceError(f"cannot subtract {other.format()} from {self.format()}")
        return self.subtract_clamped(other)

    def subtract_clamped(self, other: Resources) -> Resources:
        """Subtract what is there and ignore the rest (never negative)."""
        if other is self:
            return _NONE
        if not (other.scalars or other.ranges or other.sets):
            return self
        scalars = dict(self.scalars)
        for key, v in other.scalars.items():
            left = scalars.get(key, 0) - v
            if left > 0:
                scalars[key] = left
            else:
                scalars.pop(key, None)
        ranges = dict(self.ranges)
        for key, rs in other.ranges.items():
            if key in ranges:
                left_rs = ranges[key] - rs
                if left_rs:
                    ranges[key] = left_rs
                else:
                    del ranges[key]
        sets = dict(self.sets)
        for key, s in other.sets.items():
            if key in sets:
                left_s = sets[key] - s
                if left_s:
                    sets[key] = left_s
                else:
                    del sets[key]
        return Resources(scalars, ranges, sets)

    def unreserved(self) -> Resources:
        """The same quantities with every role dropped (for totals and shares)."""
        out = Resources()
        for (name, _), v in self.scalars.items():
            out = out + Resources({(name, ""): v})
        for (name, _), rs in self.ranges.items():
            out = out + Resources(ranges={(name, ""): rs})
        for (name, _), s in self.sets.items():
            out = out + Resources(sets={(name, ""): s})
        return out

    def __iter__(self) -> Iterator[Key]:
        yield from sorted({*self.scalars, *self.ranges, *self.sets})

    def format(self) -> str:
        """The agent flag syntax, deterministic: ``cpus:1.5;mem:512``."""
        order = {"cpus": 0, "gpus": 1, "mem": 2, "disk": 3, "ports": 4}
        parts: list[tuple[int, str, str]] = []
        for (name, role), v in self.scalars.items():
            parts.append((order.get(name, 9), name, f"{_head(name, role)}:{format_milli(v)}"))
        for (name, role), rs in self.ranges.items():
            parts.append((order.get(name, 9), name, f"{_head(name, role)}:{rs.format()}"))
        for (name, role), s in self.sets.items():
            parts.append((order.get(name, 9), name, f"{_head(name, role)}:{{{','.join(sorted(s))}}}"))
        return ";".join(p[2] for p in sorted(parts))

    def __str__(self) -> str:
        return self.format() or "(none)"


_NONE = Resources()


def _head(name: str, role: str) -> str:
    return f"{name}({role})" if role else name


def _split_role(head: str) -> Key:
    name, paren, rest = head.partition("(")
    role = ""
    if paren:
        if not rest.endswith(")"):
            raise ResourceError(f"{head!r}: role must look like NAME(ROLE)")
        role = rest[:-1]
        if role == "*":
            role = ""  # the default role: unreserved
        elif not _ROLE_RE.fullmatch(role):
            raise ResourceError(f"{head!r}: bad role {role!r}")
    validate_name(name)
    return name, role


def validate_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ResourceError(f"resource name {name!r}: must match {_NAME_RE.pattern}")


def validate_role(role: str) -> None:
    """``*`` is the default role (unreserved), as in Mesos."""
    if role and role != "*" and not _ROLE_RE.fullmatch(role):
        raise ResourceError(f"role {role!r}: must be path segments of [A-Za-z0-9_.-]")


def _items(text: str, expected: str) -> Iterator[tuple[str, str]]:
    """The ``HEAD:VALUE`` items of a ``;``-separated spec (empty ones skipped);
    an item without ``:`` is refused, saying it should look like ``expected``."""
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        head, sep, value = item.partition(":")
        if not sep:
            raise ResourceError(f"{item!r}: expected {expected}")
        yield head.strip(), value.strip()


def parse_quantities(text: str) -> dict[str, int]:
    """Parse unreserved scalar quantities, ``cpus:0;mem:512``, into milli-units
    by name, keeping zeros: a quota limit of ``cpus:0`` means no cpus, which
    :class:`Resources` (where zero quantities vanish) cannot say."""
    out: dict[str, int] = {}
    for name, value in _items(text, "NAME:NUMBER"):
        validate_name(name)
        if name in RANGE_NAMES:
            raise ResourceError(f"{name}: only scalars (cpus, mem, ...) are quantities, got {value!r}")
        if name in out:
            raise ResourceError(f"{name}: given more than once")
        try:
            number = float(value)
        except ValueError:
            raise ResourceError(f"{name}: not a number: {value!r}") from None
        out[name] = to_milli(number, name)
    return out


def format_quantities(q: Mapping[str, int]) -> str:
    """``{"cpus": 0, "mem": 512000}`` -> ``cpus:0;mem:512`` (zeros shown)."""
    return ";".join(f"{n}:{format_milli(v)}" for n, v in sorted(q.items()))


def limit_text(limit: Resources | Mapping[str, int]) -> str:
    """A quota limit given either way, for logs and messages."""
    return limit.format() if isinstance(limit, Resources) else format_quantities(limit)


def dominant_share(allocated: Resources, total: Resources) -> float:
    """Dominant Resource Fairness share: the largest fraction of any scalar
    of the cluster total that ``allocated`` holds (Ghodsi et al., NSDI 2011)."""
    share = 0.0
    for name in {k[0] for k in allocated.scalars}:
        tot = total.scalar(name)
        if tot > 0:
            share = max(share, allocated.scalar(name) / tot)
    return share
