"""Cron expressions as the inventory writes them -> APScheduler 3 CronTriggers.

Two differences from APScheduler's own `CronTrigger.from_crontab` are fixed here:
- day-of-week numbers follow crontab (0 or 7 = Sunday), not APScheduler 3's 0 = Monday; they are
  translated to day names, which both agree on;
- an optional 6th field in front gives seconds (`30 0 3 * * *` = 03:00:30), so tests and demos can set
  schedules seconds apart.
When both day-of-month and day-of-week are restricted, classic cron fires when EITHER matches; APScheduler
(and so orch) fires when BOTH match. Nightly schedules never restrict both.
"""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


class CronError(ValueError):
    """A cron expression that cannot be scheduled; the message says which part and why."""


def _day_number(text: str) -> int:
    """Given a crontab day-of-week item (0-7 or a name), return 0-6 with 0 = Sunday; raise CronError if invalid."""
    lowered = text.lower()
    if lowered[:3] in DAY_NAMES and len(lowered) >= 3:
        return DAY_NAMES.index(lowered[:3])
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text) % 7
    raise CronError(f"day of week {text!r} is not 0-7 or a day name")


def days_of_week(field: str) -> str:
    """Given a crontab day-of-week field, return the same days for APScheduler as names (`*` for every day).

    Raise CronError if the field is malformed.
    """
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise CronError(f"day of week step {step_text!r} is not a positive number")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _day_number(low), _day_number(high)
            last = 7 if high == "7" else last  # `5-7` is Friday to Sunday
        else:
            first = last = _day_number(span)
            if step:
                last = 6
        if first > last:
            raise CronError(f"day of week range {span!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step or 1))
    if len(days) == 7:
        return "*"
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def trigger(expr: str, *, timezone=None, jitter: int | None = None) -> CronTrigger:
    """Given a 5- or 6-field (seconds first) cron expression, return its CronTrigger.

    Raise CronError naming the problem if the expression is malformed or out of range.
    """
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CronError(f"cron {expr!r}: expected 5 fields (or 6 with seconds first), got {len(fields)}")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=days_of_week(dow),
            timezone=timezone,
            jitter=jitter or None,
        )
    except CronError as exc:
        raise CronError(f"cron {expr!r}: {exc}") from None
    except ValueError as exc:
        raise CronError(f"cron {expr!r}: {exc}") from None
