"""The cron parser against a minute-by-minute brute force, and its errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.frameworks.batch.cron import CronError, parse_cron

START = datetime(2026, 1, 1, tzinfo=UTC)


def brute_next(expr: str, after: datetime, limit_days: int = 800) -> datetime | None:
    """Every minute in order, skipping only whole days whose noon does not match
    on the day fields (a day either matches all day long or not at all)."""
    cron = parse_cron(expr)
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = t + timedelta(days=limit_days)
    while t < end:
        noon = t.replace(hour=12, minute=0)
        if t.month not in cron.months or not cron._day_matches(noon):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
            continue
        if cron.matches(t):
            return t
        t += timedelta(minutes=1)
    return None


def field(lo: int, hi: int) -> st.SearchStrategy[str]:
    num = st.integers(lo, hi)
    return st.one_of(
        st.just("*"),
        num.map(str),
        st.tuples(num, num).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.integers(1, 10).map(lambda n: f"*/{n}"),
        st.lists(num, min_size=1, max_size=3).map(lambda xs: ",".join(map(str, xs))),
    )


@settings(max_examples=60, deadline=None)
@given(
    minute=field(0, 59),
    hour=field(0, 23),
    dom=field(1, 28),
    month=field(1, 12),
    dow=field(0, 7),
    offset=st.integers(0, 60 * 24 * 365),
)
def test_next_after_is_the_first_matching_minute(
    minute: str, hour: str, dom: str, month: str, dow: str, offset: int
) -> None:
    expr = f"{minute} {hour} {dom} {month} {dow}"
    after = START + timedelta(minutes=offset, seconds=17)
    got = parse_cron(expr).next_after(after)
    assert got > after
    assert got == brute_next(expr, after)


def test_examples() -> None:
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
    assert parse_cron("30 2 * * mon-fri").next_after(at) == datetime(2026, 11, 30, 2, 30, tzinfo=UTC)
    assert parse_cron("@hourly").next_after(at) == datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
    assert parse_cron("0 0 1 jan *").next_after(at) == datetime(2027, 1, 1, tzinfo=UTC)
    # Day of month OR day of week when both are given (Vixie cron).
    assert parse_cron("0 0 13 * 5").next_after(at) == datetime(2026, 12, 4, tzinfo=UTC)
    assert parse_cron("*/15 * * * * *").next_after(at) == datetime(2026, 11, 28, 12, 0, 15, tzinfo=UTC)
    assert parse_cron("0 0 * * 7").next_after(at) == datetime(2026, 11, 29, tzinfo=UTC)  # 7 is Sunday


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "needs 5 fields"),
        ("60 * * * *", "minute: 60 is outside 0-59"),
        ("* 5-2 * * *", "hour: range '5-2' goes backwards"),
        ("* * * foo *", "month: 'foo' is not a number or a name"),
        ("*/0 * * * *", "minute: step must be a positive number"),
        ("0 0 31 2 *", "never fires"),
        ("1,,2 * * * *", "minute: empty item"),
    ],
)
def test_bad_expressions_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(expr)
