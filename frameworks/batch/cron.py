"""When does a periodic job run next? Cron expressions through ``cronsim``.

Five fields, as in crontab(5): minute hour day-of-month month day-of-week,
each ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a
comma list of those; months and days may be names (``jan``, ``mon``); day of
week 0 and 7 are Sunday; ``L`` (last day of the month), ``LW`` (its last
weekday), ``5L`` (the month's last Friday) and ``mon#2`` (its second Monday)
work too. As in Debian's (Vixie) cron, when neither the day of month nor the
day of week starts with ``*``, a day matching either runs; otherwise both
must match. An optional sixth field in front gives seconds
(``*/10 * * * * *``: every 10 s), as Quartz allows. The macros ``@yearly``,
``@monthly``, ``@weekly``, ``@daily`` and ``@hourly`` work.

Times are UTC, so there is no daylight-saving gap or repeat to handle.
Missed runs are the engine's policy (frameworks/batch/engine.py): after a
pause, one run goes at once and the next is the first time after now.

The evaluation is cronsim's (maintained, typed, the parser of Healthchecks,
written to match Debian's cron); this module adds the macros, UTC, and error
messages that name the field. Pure: no clock, no I/O.

>>> from datetime import datetime, UTC
>>> parse_cron("30 2 * * mon-fri").next_after(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
datetime.datetime(2026, 11, 30, 2, 30, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: cronsim's field names (its "Bad <name>" errors), in the order of the six fields
_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_ALLOWED = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L or LW",
    "month": "1-12 or jan-dec",
    "day-of-week": "0-7 or sun-sat, 5L, mon#2",
}
#: a time to parse against: cronsim checks the expression when it is built
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class CronError(ValueError):
    """A cron expression is malformed; the message names the field."""


@dataclass(frozen=True)
class Cron:
    """A checked expression (``fields``: six of them, seconds first)."""

    expression: str
    fields: str

    def next_after(self, after: datetime) -> datetime:
        """The first time strictly after ``after`` when it fires (timezone-aware, UTC)."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        # cronsim starts from the whole second; a fraction must not fire twice.
        start = after.astimezone(UTC).replace(microsecond=0)
        try:
            return next(CronSim(self.fields, start))
        except StopIteration:
            raise CronError(f"{self.expression!r} never fires") from None

    def matches(self, t: datetime) -> bool:
        """Whether the expression fires at ``t`` (to the second)."""
        t = t.replace(microsecond=0)
        return self.next_after(t - timedelta(seconds=1)) == t.astimezone(UTC)

    def next_after_ts(self, after: float) -> float:
        """:meth:`next_after` on POSIX timestamps."""
        return self.next_after(datetime.fromtimestamp(after, UTC)).timestamp()


def parse_cron(expression: str) -> Cron:
    """Parse ``expression``; :class:`CronError` names the field that is wrong."""
    if not isinstance(expression, str):
        raise CronError(f"must be a string such as '*/5 * * * *', got {expression!r}")
    parts = _MACROS.get(expression.strip().lower(), expression).split()
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise CronError(
            f"{expression!r} needs 5 fields (minute hour day-of-month month day-of-week), "
            f"or 6 with seconds first; got {len(parts)}"
        )
    fields = " ".join(parts)
    problem = _check(fields)
    if problem is None:
        return Cron(expression, fields)
    index = _FIELDS.index(problem)
    if problem == "day-of-month" and _check(" ".join([*parts[:4], "*", parts[5]])) is None:
        # Valid with every month: none of the months chosen has that day.
        raise CronError(f"{expression!r} never fires: no month chosen has day {parts[3]}")
    raise CronError(f"{problem}: {parts[index]!r} is not valid (values {_ALLOWED[problem]}; a-b, */n, a,b)")


def _check(fields: str) -> str | None:
    """The name of the first field cronsim refuses, or None."""
    try:
        CronSim(fields, _EPOCH)
    except CronSimError as e:
        name = str(e).removeprefix("Bad ")
        return name if name in _FIELDS else "second"
    return None
