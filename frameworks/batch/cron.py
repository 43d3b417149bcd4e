"""A small cron parser: when does a periodic job run next?

Five fields, as in crontab(5): minute hour day-of-month month day-of-week,
each ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a
comma list of those; months and days may be names (``jan``, ``mon``); day of
week 0 and 7 are Sunday. As in Vixie cron, when both day of month and day of
week are restricted a day matching either runs. An optional sixth field in
front gives seconds (``*/10 * * * * *``: every 10 s), as Quartz allows. The
macros ``@yearly``, ``@monthly``, ``@weekly``, ``@daily`` and ``@hourly`` work.

Times are UTC. Pure: no clock, no I/O.

>>> from datetime import datetime, UTC
>>> parse_cron("30 2 * * mon-fri").next_after(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
datetime.datetime(2026, 11, 30, 2, 30, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
#: a search never looks further ahead than this (Feb 29 on a Monday is ~28 years out)
_HORIZON_DAYS = 366 * 30


class CronError(ValueError):
    """A cron expression is malformed; the message names the field."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def matches(self, t: datetime) -> bool:
        """Whether the expression fires at ``t`` (to the second)."""
        return (
            t.second in self.seconds
            and t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self._day_matches(t)
        )

    def next_after(self, after: datetime) -> datetime:
        """The first time strictly after ``after`` when it fires (timezone-aware, UTC)."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        t = after.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = t + timedelta(days=_HORIZON_DAYS)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t += timedelta(seconds=1)
                continue
            return t
        raise CronError(f"{self.expression!r} never fires")

    def next_after_ts(self, after: float) -> float:
        """:meth:`next_after` on POSIX timestamps."""
        return self.next_after(datetime.fromtimestamp(after, UTC)).timestamp()


def parse_cron(expression: str) -> Cron:
    """Parse ``expression``; :class:`CronError` names the field that is wrong."""
    if not isinstance(expression, str):
        raise CronError(f"must be a string such as '*/5 * * * *', got {expression!r}")
    text = _MACROS.get(expression.strip().lower(), expression)
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise CronError(
            f"{expression!r} needs 5 fields (minute hour day-of-month month day-of-week), "
            f"or 6 with seconds first; got {len(parts)}"
        )
    values = [_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[5])
    cron = Cron(
        expression=expression,
        seconds=values[0],
        minutes=values[1],
        hours=values[2],
        days=values[3],
        months=values[4],
        weekdays=weekdays,
        days_restricted=parts[3] != "*",
        weekdays_restricted=parts[5] != "*",
    )
    # Refuse what can never fire (e.g. "0 0 31 2 *") now, not at run time.
    if not cron.days_restricted or cron.weekdays_restricted:
        return cron
    longest = max(
        {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}[m]
        for m in cron.months
    )
    if min(cron.days) > longest:
        raise CronError(f"{expression!r} never fires: no month chosen has day {min(cron.days)}")
    return cron


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{name}: empty item in {text!r}")
        rng, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{name}: step must be a positive number, got {step_text!r}")
            step = int(step_text)
        if rng == "*":
            start, end = lo, hi if name != "day of week" else 6
        elif "-" in rng:
            a, _, b = rng.partition("-")
            start, end = _value(a, name, lo, hi, names), _value(b, name, lo, hi, names)
            if start > end:
                raise CronError(f"{name}: range {rng!r} goes backwards")
        else:
            start = _value(rng, name, lo, hi, names)
            end = hi if step_text else start
        out.update(range(start, end + 1, step))
    return frozenset(out)


def _value(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(
            f"{name}: {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else "")
        )
    value = int(text)
    if not lo <= value <= hi:
        raise CronError(f"{name}: {value} is outside {lo}-{hi}")
    return value
