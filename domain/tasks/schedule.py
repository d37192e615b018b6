"""When a task runs: a cron expression read in an IANA time zone (`croniter`), or a fixed interval.

Tick times are a pure function of the schedule and the task's id, so every replica computes the same
ticks and the run id derived from (task, tick) is the same everywhere.

Interval ticks are the interval apart, in whole milliseconds, shifted from the Unix epoch by a phase the
task's id decides: `phase = sha256(task id) mod interval` (the first 8 bytes of the digest, big-endian,
as an integer of milliseconds), and the ticks are `epoch + phase + k * interval`. Tasks with the same
interval fall due spread over the interval instead of all at the same instant (10,000 tasks every
second: about 10 a millisecond, not 10,000 at each whole second). A task keeps its phase for life (its
id never changes); changing its interval changes the phase. `align: true` drops the phase: the ticks are
whole multiples of the interval from the epoch (every minute on the minute, every hour on the hour).

Daylight-saving transitions (cron only; intervals count real time and never notice them). A cron's
fields name local wall-clock times, and wall clocks skip an hour in spring and repeat one in autumn.
Charter follows what Vixie cron does:

- spring forward (Europe/Bucharest, last Sunday of March, 03:00 EET -> 04:00 EEST): a time inside the
  missing hour runs once, at the first instant after the gap (a daily `30 3 * * *` runs at 04:00 EEST
  that day); a `*/30 * * * *` has no 03:00 or 03:30 that day and runs at 04:00, once;
- fall back (last Sunday of October, 04:00 EEST -> 03:00 EET): a cron whose hour field names hours
  runs once, at the first occurrence of the repeated time (`30 3 * * *` runs at 03:30 EEST, not again at
  03:30 EET); a cron whose hour field is `*` runs at every real occurrence (`*/30 * * * *` runs at 03:00
  and 03:30 EEST and again at 03:00 and 03:30 EET: those are distinct instants half an hour apart).

tests/unit/tasks/test_schedule.py pins both days.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import hashlib

import msgspec
from croniter import croniter

from domain.tasks.errors import TaskInvalid

MAX_CRON = 120
MAX_TIMEZONE = 64
MIN_INTERVAL = 0.1  # seconds
MAX_INTERVAL = 366 * 86400.0
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Schedule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """`kind` "cron" (with `cron` and `timezone`) or "interval" (with `every`, in seconds; `align`: ticks
    on whole multiples of it from the epoch instead of shifted by the task's phase)."""

    kind: Literal["cron", "interval"]
    cron: str | None = None
    timezone: str = "UTC"
    every: float | None = None
    align: bool = False

    @property
    def every_ms(self) -> int:
        return round((self.every or 0) * 1000)


def check_schedule(schedule: Schedule) -> Schedule:
    """The schedule, checked (TaskInvalid names the field)."""
    if schedule.kind == "interval":
        every = schedule.every
        if every is None or not (MIN_INTERVAL <= every <= MAX_INTERVAL) or every != every:
            raise TaskInvalid(f"schedule.every must be {MIN_INTERVAL} to {MAX_INTERVAL:.0f} seconds", field="schedule.every")
        if schedule.cron is not None:
            raise TaskInvalid("an interval schedule has no cron expression", field="schedule.cron")
        return Schedule(kind="interval", every=schedule.every_ms / 1000, align=schedule.align)
    expr = (schedule.cron or "").strip()
    if not expr or len(expr) > MAX_CRON or len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise TaskInvalid("schedule.cron must be a cron expression of five fields (minute hour day month weekday)",
                          field="schedule.cron")
    try:
        if not schedule.timezone or len(schedule.timezone) > MAX_TIMEZONE or schedule.timezone != schedule.timezone.strip():
            raise ValueError(schedule.timezone)
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise TaskInvalid(f"schedule.timezone {schedule.timezone[:MAX_TIMEZONE]!r} is not an IANA time zone such as "
                          "Europe/Bucharest", field="schedule.timezone") from None
    if schedule.every is not None:
        raise TaskInvalid("a cron schedule has no interval", field="schedule.every")
    if schedule.align:
        raise TaskInvalid("align is for interval schedules (a cron names its own times)", field="schedule.align")
    return Schedule(kind="cron", cron=" ".join(expr.split()), timezone=schedule.timezone)


def _repeated(local: datetime) -> bool:
    """Is `local` the second occurrence of a wall-clock time (the hour a fall-back repeats)?"""
    first = local.replace(fold=0)
    return first.utcoffset() != local.utcoffset()


def phase_ms(schedule: Schedule, task_id: str) -> int:
    """Milliseconds an interval task's ticks are shifted from the epoch's multiples of its interval: a
    pure function of the task's id and interval (0 for `align` and for cron)."""
    if schedule.kind != "interval" or schedule.align:
        return 0
    digest = hashlib.sha256(task_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % schedule.every_ms


def _origin(schedule: Schedule, task_id: str) -> datetime:
    return EPOCH + timedelta(milliseconds=phase_ms(schedule, task_id))


def next_tick(schedule: Schedule, after: datetime, *, task_id: str) -> datetime:
    """The first tick of task `task_id` strictly after `after` (UTC, aware)."""
    if schedule.kind == "interval":
        step = schedule.every_ms
        origin = _origin(schedule, task_id)
        elapsed = (after - origin) // timedelta(milliseconds=1)
        return origin + timedelta(milliseconds=(elapsed // step + 1) * step)
    zone = ZoneInfo(schedule.timezone)
    hour_named = schedule.cron.split()[1] != "*"
    it = croniter(schedule.cron, after.astimezone(zone))
    while True:
        local = it.get_next(datetime)
        if hour_named and _repeated(local):
            continue
        tick = local.astimezone(timezone.utc)
        if tick > after:
            return tick


def ticks_between(schedule: Schedule, after: datetime, until: datetime, limit: int, *, task_id: str,
                  ) -> list[datetime]:
    """Task `task_id`'s ticks in (after, until], at most `limit` of them (the latest ones when there are more)."""
    if schedule.kind == "interval":
        step = timedelta(milliseconds=schedule.every_ms)
        origin = _origin(schedule, task_id)
        last = origin + ((until - origin) // step) * step
        first = next_tick(schedule, after, task_id=task_id)
        count = 0 if last < first else (last - first) // step + 1
        count = min(count, limit)
        return [last - step * i for i in range(count - 1, -1, -1)]
    out: list[datetime] = []
    tick = next_tick(schedule, after, task_id=task_id)
    while tick <= until:
        out.append(tick)
        if len(out) > limit:
            out.pop(0)
        tick = next_tick(schedule, tick, task_id=task_id)
    return out
