"""Tick times: intervals shifted by the task's phase (or aligned on the epoch), cron in an IANA zone, and the two DST days of Europe/Bucharest
(2024-03-31 03:00 EET -> 04:00 EEST; 2024-10-27 04:00 EEST -> 03:00 EET), as domain/tasks/schedule.py
documents them."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import hashlib
import random
from datetime import timedelta

import msgspec
import pytest

from domain.tasks.errors import TaskInvalid
from domain.tasks.schedule import EPOCH, Schedule, check_schedule, next_tick, phase_ms, ticks_between

UTC = timezone.utc
BUCHAREST = ZoneInfo("Europe/Bucharest")


def cron(expr: str) -> Schedule:
    return check_schedule(Schedule(kind="cron", cron=expr, timezone="Europe/Bucharest"))


def local_runs(schedule: Schedule, start: datetime, count: int) -> list[str]:
    out, tick = [], start
    for _ in range(count):
        tick = next_tick(schedule, tick, task_id="nightly")
        out.append(tick.astimezone(BUCHAREST).isoformat(timespec="minutes"))
    return out


def interval(every: float, align: bool = False) -> Schedule:
    return check_schedule(Schedule(kind="interval", every=every, align=align))


def test_aligned_interval_ticks_are_multiples_of_the_interval_from_the_epoch() -> None:
    every = interval(0.1, align=True)
    after = datetime(2024, 1, 1, 0, 0, 0, 50_000, tzinfo=UTC)

    assert next_tick(every, after, task_id="any") == datetime(2024, 1, 1, 0, 0, 0, 100_000, tzinfo=UTC)
    assert len(ticks_between(every, after, datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC), 100, task_id="any")) == 10
    assert phase_ms(every, "any") == phase_ms(every, "other") == 0


def test_ticks_between_keeps_the_latest_when_over_the_limit() -> None:
    every = interval(1, align=True)
    start = datetime(2024, 1, 1, tzinfo=UTC)

    ticks = ticks_between(every, start, start.replace(minute=1), 3, task_id="t")

    assert [t.second for t in ticks] == [58, 59, 0] and ticks[-1].minute == 1


def test_an_interval_tasks_phase_is_sha256_of_its_id_modulo_the_interval() -> None:
    every = interval(60)
    expected = int.from_bytes(hashlib.sha256(b"report-42").digest()[:8], "big") % 60_000

    assert phase_ms(every, "report-42") == expected
    assert next_tick(every, EPOCH, task_id="report-42") == EPOCH + timedelta(milliseconds=expected or 60_000)
    assert phase_ms(check_schedule(Schedule(kind="cron", cron="0 3 * * *")), "report-42") == 0


def test_a_tasks_phase_is_stable_and_its_ticks_are_the_interval_apart() -> None:
    every = interval(1)
    start = datetime(2024, 5, 1, 12, tzinfo=UTC)
    ticks = ticks_between(every, start, start + timedelta(minutes=10), 1000, task_id="sync-7")

    assert len(ticks) == 600
    assert {b - a for a, b in zip(ticks, ticks[1:])} == {timedelta(seconds=1)}
    assert {(t - EPOCH) // timedelta(milliseconds=1) % 1000 for t in ticks} == {phase_ms(every, "sync-7")}
    # one step at a time from anywhere gives the same ticks as the range
    stepped, tick = [], start
    for _ in range(600):
        tick = next_tick(every, tick, task_id="sync-7")
        stepped.append(tick)
    assert stepped == ticks
    # from just before a tick, that tick; from the tick itself, the next one
    assert next_tick(every, ticks[5] - timedelta(microseconds=1), task_id="sync-7") == ticks[5]
    assert next_tick(every, ticks[5], task_id="sync-7") == ticks[6]


def test_replicas_agree_on_every_tick_whatever_instant_they_start_from() -> None:
    """Two replicas, each with its own copy of the schedule (as read from the catalog) and its own start
    time, compute the same ticks: the phase depends on nothing but the task's id and interval."""
    stored = msgspec.json.encode(interval(0.5))
    mine, theirs = (msgspec.json.decode(stored, type=Schedule) for _ in range(2))
    end = datetime(2024, 5, 1, 12, 1, tzinfo=UTC)
    for task_id in ("a", "bench-000001", "nightly-rebuild"):
        a = ticks_between(mine, datetime(2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC), end, 1000, task_id=task_id)
        b = ticks_between(theirs, datetime(2024, 5, 1, 12, 0, 0, 377_000, tzinfo=UTC), end, 1000, task_id=task_id)
        assert a[-100:] == b[-100:] and len(a) >= 119


def test_tasks_of_one_interval_are_spread_over_it() -> None:
    every = interval(1)
    phases = [phase_ms(every, f"bench-{n:06d}") for n in range(10_000)]

    per_100ms = [0] * 10
    for phase in phases:
        per_100ms[phase // 100] += 1
    assert min(per_100ms) > 850 and max(per_100ms) < 1150  # about 1,000 in each tenth of the second
    assert len(set(phases)) > 990  # not a handful of instants


def test_the_phase_follows_the_interval_in_whole_milliseconds() -> None:
    rng = random.Random(7)
    for _ in range(200):
        every = interval(round(rng.uniform(0.1, 86400), 3))
        phase = phase_ms(every, "t")
        assert 0 <= phase < every.every_ms


def test_align_belongs_to_interval_schedules() -> None:
    with pytest.raises(TaskInvalid) as refused:
        check_schedule(Schedule(kind="cron", cron="0 3 * * *", align=True))

    assert refused.value.details["field"] == "schedule.align"
    assert interval(5, align=True).align is True
    assert b"align" not in msgspec.json.encode(interval(5))  # stored definitions say it only when set


def test_spring_forward_a_daily_run_in_the_missing_hour_runs_once_after_the_gap() -> None:
    runs = local_runs(cron("30 3 * * *"), datetime(2024, 3, 29, 12, tzinfo=BUCHAREST), 3)

    assert runs == ["2024-03-30T03:30+02:00", "2024-03-31T04:00+03:00", "2024-04-01T03:30+03:00"]


def test_fall_back_a_daily_run_in_the_repeated_hour_runs_once() -> None:
    runs = local_runs(cron("30 3 * * *"), datetime(2024, 10, 25, 12, tzinfo=BUCHAREST), 3)

    assert runs == ["2024-10-26T03:30+03:00", "2024-10-27T03:30+03:00", "2024-10-28T03:30+02:00"]


def test_fall_back_a_run_every_half_hour_runs_at_each_real_half_hour() -> None:
    runs = local_runs(cron("*/30 * * * *"), datetime(2024, 10, 27, 2, 45, tzinfo=BUCHAREST), 5)

    assert runs == ["2024-10-27T03:00+03:00", "2024-10-27T03:30+03:00", "2024-10-27T03:00+02:00",
                    "2024-10-27T03:30+02:00", "2024-10-27T04:00+02:00"]


def test_spring_forward_a_run_every_half_hour_skips_only_the_missing_times() -> None:
    runs = local_runs(cron("*/30 * * * *"), datetime(2024, 3, 31, 2, 15, tzinfo=BUCHAREST), 3)

    assert runs == ["2024-03-31T02:30+02:00", "2024-03-31T04:00+03:00", "2024-03-31T04:30+03:00"]


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (Schedule(kind="cron", cron="61 * * * *"), "schedule.cron"),
        (Schedule(kind="cron", cron="* * * * * *"), "schedule.cron"),
        (Schedule(kind="cron", cron="0 3 * * *", timezone="Mars/Olympus"), "schedule.timezone"),
        (Schedule(kind="interval", every=0.01), "schedule.every"),
        (Schedule(kind="interval"), "schedule.every"),
        (Schedule(kind="interval", every=float("nan")), "schedule.every"),
    ],
)
def test_rejects_a_malformed_schedule_naming_the_field(schedule: Schedule, field: str) -> None:
    with pytest.raises(TaskInvalid) as refused:
        check_schedule(schedule)

    assert refused.value.details["field"] == field
