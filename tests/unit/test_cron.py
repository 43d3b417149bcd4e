"""The cron schedules (cronsim underneath) against a minute-by-minute brute
force written from crontab(5), what cronsim brought, and the errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.frameworks.batch.cron import CronError, parse_cron

START = datetime(2026, 1, 1, tzinfo=UTC)


def _values(text: str, lo: int, hi: int) -> set[int]:
    """The values of one generated field (*, n, a-b, */n, lists), by the book."""
    out: set[int] = set()
    for item in text.split(","):
        rng, _, step = item.partition("/")
        start, end = (lo, hi) if rng == "*" else (int(rng.split("-")[0]), int(rng.split("-")[-1]))
        out.update(range(start, end + 1, int(step or 1)))
    return out


def brute_next(expr: str, after: datetime, limit_days: int = 366 * 30) -> datetime | None:
    """Every minute in order, with crontab(5)'s rule for the two day fields:
    either may match when neither starts with ``*``, else both must."""
    minute, hour, dom, month, dow = expr.split()
    mins, hours, doms = _values(minute, 0, 59), _values(hour, 0, 23), _values(dom, 1, 31)
    months, dows = _values(month, 1, 12), {d % 7 for d in _values(dow, 0, 7)}
    either = not dom.startswith("*") and not dow.startswith("*")

    def day_ok(t: datetime) -> bool:
        a, b = t.day in doms, (t.isoweekday() % 7) in dows
        return (a or b) if either else (a and b)

    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = t + timedelta(days=limit_days)
    while t < end:
        if t.month not in months or not day_ok(t):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
            continue
        if t.hour in hours and t.minute in mins:
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
        ("60 * * * *", r"minute: '60' is not valid \(values 0-59"),
        ("* 5-2 * * *", "hour: '5-2' is not valid"),
        ("* * * foo *", r"month: 'foo' is not valid \(values 1-12 or jan-dec"),
        ("*/0 * * * *", "minute: '\\*/0' is not valid"),
        ("0 0 31 2 *", "never fires: no month chosen has day 31"),
        ("1,,2 * * * *", "minute: '1,,2' is not valid"),
        ("* * * * mon#9", "day-of-week: 'mon#9' is not valid"),
        ("*/5 * * * * * *", "needs 5 fields"),
    ],
)
def test_bad_expressions_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(expr)


def test_a_star_step_in_one_day_field_means_both_must_match() -> None:
    # Debian's cron (and cronsim): "*/2" starts with a star, so day of month
    # AND day of week. Our own parser took any restriction for OR, which
    # fired this on every Monday too.
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
    assert parse_cron("0 0 */2 * mon").next_after(at) == datetime(2026, 12, 7, tzinfo=UTC)  # Monday the 7th
    assert parse_cron("0 0 1,15 * mon").next_after(at) == datetime(2026, 11, 30, tzinfo=UTC)  # either


def test_last_and_nth_days() -> None:
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_cron("0 0 L * *").next_after(at) == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_cron("0 0 L 2 *").next_after(at) == datetime(2027, 2, 28, tzinfo=UTC)
    assert parse_cron("0 0 * * 5L").next_after(at) == datetime(2026, 12, 25, tzinfo=UTC)  # last Friday
    assert parse_cron("0 0 * * mon#2").next_after(at) == datetime(2026, 12, 14, tzinfo=UTC)
    assert parse_cron("0 0 LW 1 *").next_after(at) == datetime(2027, 1, 29, tzinfo=UTC)  # a Friday


def test_times_are_utc_whatever_the_zone_asked_in() -> None:
    # No daylight saving: 02:30 UTC exists every day, the night Europe skips
    # an hour (2027-03-28) included, and is given back as UTC.
    berlin = timezone(timedelta(hours=1))
    cron = parse_cron("30 2 * * *")
    got = cron.next_after(datetime(2027, 3, 28, 1, 0, tzinfo=berlin))  # 00:00 UTC
    assert got == datetime(2027, 3, 28, 2, 30, tzinfo=UTC)
    assert got.tzinfo == UTC
    assert cron.next_after(datetime(2027, 3, 28, 0, 0)) == got  # naive: taken as UTC


def test_a_fraction_of_a_second_never_fires_the_same_second_again() -> None:
    cron = parse_cron("* * * * * *")
    at = datetime(2026, 1, 1, 0, 0, 5, 900_000, tzinfo=UTC)
    assert cron.next_after(at) == datetime(2026, 1, 1, 0, 0, 6, tzinfo=UTC)
    assert cron.matches(datetime(2026, 1, 1, 0, 0, 6, tzinfo=UTC))
    assert not parse_cron("*/10 * * * * *").matches(datetime(2026, 1, 1, 0, 0, 6, tzinfo=UTC))
