"""master/rate_limit.py: token buckets per principal, with time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.master.rate_limit import Limit, RateLimiter, RateLimits, TokenBucket, parse_rate_limits


def test_a_full_bucket_admits_its_burst_then_refills_at_qps() -> None:
    bucket = TokenBucket(Limit(qps=2, burst=3))
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.5)
    assert not bucket.take(0.4)  # 0.8 of a token
    assert bucket.take(0.5)  # one whole token
    assert bucket.take(100.0)
    assert bucket.tokens == pytest.approx(2)  # capped at the burst, one taken


def test_one_principal_over_its_limit_does_not_slow_another() -> None:
    limiter = RateLimiter(RateLimits(default=Limit(qps=1, burst=5)))
    refusals = [limiter.admit("framework:noisy", 0.0) for _ in range(100)]
    assert sum(r is None for r in refusals) == 5
    refusal = refusals[-1]
    assert refusal is not None
    assert "framework:noisy" in str(refusal)
    assert "1 calls/s, burst 5" in str(refusal)
    assert all(limiter.admit("framework:quiet", 0.0) is None for _ in range(5))


def test_listed_principals_get_their_own_limit_or_none() -> None:
    limits = RateLimits(
        by_principal=(("framework:big", Limit(100, 200)), ("operator:root", None)),
        default=Limit(1, 1),
    )
    limiter = RateLimiter(limits)
    assert sum(limiter.admit("framework:big", 0.0) is None for _ in range(300)) == 200
    assert all(limiter.admit("operator:root", 0.0) is None for _ in range(1000))
    assert limiter.admit("framework:other", 0.0) is None
    assert limiter.admit("framework:other", 0.0) is not None


def test_unlimited_by_default() -> None:
    limiter = RateLimiter(RateLimits())
    assert all(limiter.admit("anonymous:anonymous", 0.0) is None for _ in range(10_000))
    assert len(limiter) == 0


def test_the_table_of_buckets_is_bounded() -> None:
    limiter = RateLimiter(RateLimits(default=Limit(1, 1)), max_principals=3)
    for i in range(10):
        limiter.admit(f"framework:f{i}", 0.0)
    assert len(limiter) == 3


def test_a_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(Limit(qps=10, burst=1))
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.05)  # half a token since 10.0, not since 5.0


@pytest.mark.parametrize(
    ("bad", "message"),
    [((0, 1), "qps"), ((float("inf"), 1), "qps"), ((1, 0.5), "burst"), ((1, float("nan")), "burst")],
)
def test_bad_limits_are_refused(bad: tuple[float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limit(*bad)


def test_parse_rate_limits_file() -> None:
    limits = parse_rate_limits(
        """
        # principal      qps   burst
        framework:batch  50    100
        operator:root    unlimited
        default          5     10
        """
    )
    assert limits.limit_for("framework:batch") == Limit(50, 100)
    assert limits.limit_for("operator:root") is None
    assert limits.limit_for("framework:x") == Limit(5, 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("framework:a 1", "line 1: expected PRINCIPAL QPS BURST"),
        ("framework:a x 2", "line 1"),
        ("\nbatch 1 2", "line 2: principal 'batch'"),
        ("framework:a -1 2", "qps must be"),
    ],
)
def test_parse_rate_limits_names_the_bad_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rate_limits(text)


@settings(max_examples=300, deadline=None)
@given(
    qps=st.floats(0.1, 1000),
    burst=st.integers(1, 100),
    gaps=st.lists(st.floats(0, 2, allow_subnormal=False), min_size=1, max_size=300),
)
def test_never_more_than_burst_plus_qps_t_in_any_window(qps: float, burst: int, gaps: list[float]) -> None:
    """The token bucket's contract: whatever the arrival times, the calls
    admitted in any window [a, b] number at most burst + qps * (b - a)."""
    limiter = RateLimiter(RateLimits(default=Limit(qps, burst)))
    now = 0.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        if limiter.admit("framework:f", now) is None:
            admitted.append(now)
    # Windows that matter start and end at admitted calls.
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            count = j - i + 1
            assert count <= burst + qps * (admitted[j] - start) + 1e-6, (i, j, start, admitted[j])
