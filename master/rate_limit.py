"""Per-principal rate limits: a token bucket for each principal.

Mesos' ``--rate_limits`` is the model: each listed principal gets ``qps`` with
a burst ``capacity``, and principals not listed share a default. Here every
unlisted principal gets *its own* bucket with the default limits (so one noisy
client cannot starve the other unlisted ones, which Mesos' aggregate default
allows), and the number of buckets kept is bounded: under plaintext a client
can claim any principal name, and a new name must not buy a fresh burst for
ever nor grow the master's memory. When the table is full the least recently
used bucket is dropped; a dropped principal comes back with a full bucket,
which gives at most ``burst`` extra calls per eviction.

Pure: nothing here reads a clock; callers pass ``now`` (monotonic seconds).
A property test checks the contract: in any window of length ``t`` at most
``burst + qps * t`` calls of one principal are admitted.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limit:
    """``qps`` calls a second on average, up to ``burst`` at once."""

    qps: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.qps) and self.qps > 0):
            raise ValueError(f"qps must be a finite number > 0, got {self.qps}")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"burst must be a finite number >= 1, got {self.burst}")

    def __str__(self) -> str:
        return f"{self.qps:g} calls/s, burst {self.burst:g}"


@dataclass
class TokenBucket:
    """A bucket that starts full and refills at ``limit.qps`` up to ``limit.burst``."""

    limit: Limit
    tokens: float = field(init=False)
    updated: float | None = None

    def __post_init__(self) -> None:
        self.tokens = self.limit.burst

    def take(self, now: float) -> bool:
        """Admit one call at ``now`` (seconds) if a token is left."""
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.limit.burst, self.tokens + (now - self.updated) * self.limit.qps)
        # A clock that goes backwards (it should not: callers pass monotonic
        # time) refills nothing rather than raising.
        if self.updated is None or now > self.updated:
            self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token (0 if one is there)."""
        return max(0.0, (1 - self.tokens) / self.limit.qps)


@dataclass(frozen=True)
class RateLimits:
    """What the master enforces: limits by principal (``kind:name``), and the
    default for every other principal (None: unlimited)."""

    by_principal: tuple[tuple[str, Limit | None], ...] = ()
    default: Limit | None = None

    def limit_for(self, principal: str) -> Limit | None:
        for name, limit in self.by_principal:
            if name == principal:
                return limit
        return self.default


#: Defaults, per principal. Calls: far above what a framework needs (acks and
#: updates are batched, FACTS.md: one stream carries a few thousand messages a
#: second), low enough that one principal cannot monopolise the master's loop.
#: Subscriptions: each may rescind and re-offer, and a burst of leaked ones
#: was the offer-hoarding abuse of issue 14.
DEFAULT_FRAMEWORK_RATE_LIMITS = RateLimits(default=Limit(qps=1000, burst=2000))
DEFAULT_SUBSCRIBE_RATE_LIMITS = RateLimits(default=Limit(qps=10, burst=100))
#: Operator API calls of principals that are not operators (frameworks asking
#: about their own work): a dashboard's polling fits, a flood does not.
DEFAULT_OPERATOR_RATE_LIMITS = RateLimits(default=Limit(qps=50, burst=200))


@dataclass(frozen=True)
class Refusal:
    """A call over its principal's limit: what to tell the caller."""

    principal: str
    limit: Limit
    retry_after_s: float

    def __str__(self) -> str:
        return (
            f"rate limit: principal {self.principal} is over its limit of {self.limit}; "
            f"retry in {self.retry_after_s:.2f} s"
        )


class RateLimiter:
    """Token buckets for every principal seen, at most ``max_principals`` kept."""

    def __init__(self, limits: RateLimits, max_principals: int = 10_000) -> None:
        self.limits = limits
        self.max_principals = max_principals
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, principal: str, now: float) -> Refusal | None:
        """Take a token for one call of ``principal`` at ``now``; None if admitted."""
        limit = self.limits.limit_for(principal)
        if limit is None:
            return None
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = TokenBucket(limit)
            self._buckets[principal] = bucket
            while len(self._buckets) > self.max_principals:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(principal)
        if bucket.take(now):
            return None
        return Refusal(principal, limit, bucket.retry_after())

    def __len__(self) -> int:
        return len(self._buckets)


def limit_or_unlimited(qps: float, burst: float) -> Limit | None:
    """A flag pair: ``qps`` 0 means no limit; otherwise both are checked."""
    return None if qps == 0 else Limit(qps, burst)


def parse_rate_limits(text: str, default: Limit | None = None) -> RateLimits:
    """A ``--rate-limits`` file: one ``PRINCIPAL QPS BURST`` per line, ``#``
    comments; ``PRINCIPAL`` is ``kind:name`` or ``default``; ``QPS`` may be
    ``unlimited``. Raises ValueError naming the line."""
    by_principal: list[tuple[str, Limit | None]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) == 2 and parts[1] == "unlimited":
                limit = None
            elif len(parts) == 3:
                limit = Limit(float(parts[1]), float(parts[2]))
            else:
                raise ValueError("expected PRINCIPAL QPS BURST or PRINCIPAL unlimited")
            if parts[0] != "default" and ":" not in parts[0]:
                raise ValueError(f"principal {parts[0]!r}: expected KIND:NAME or 'default'")
        except ValueError as e:
            raise ValueError(f"line {number}: {e}: {raw.strip()!r}") from None
        if parts[0] == "default":
            default = limit
        else:
            by_principal.append((parts[0], limit))
    return RateLimits(tuple(by_principal), default)
