"""The scheduler's catalog reads: reads of changes go by position, and a task write can commit after one
with a higher position, below the cursor, where those reads never look. The periodic full read finds it;
it leaves the tasks that did not change where they are."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from application.tasks.ports import ScheduledTask
from infrastructure.tasks.scheduler import Entry, Scheduler, SchedulerSettings

NOW = datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=timezone.utc)
DEFINED = "2026-03-01T11:00:00+00:00"


def task(task_id: str, every: float = 60.0, enabled: bool = True) -> ScheduledTask:
    definition = {"name": task_id, "schedule": {"kind": "interval", "every": every}, "action": "noop"}
    return ScheduledTask(task_id, None, definition, enabled, False, DEFINED)


def at(position: int, scheduled: ScheduledTask) -> ScheduledTask:
    return replace(scheduled, position=position)


class Catalog:
    """The read model as the scheduler sees it: rows with the position of the task's last write."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, ScheduledTask]] = {}
        self.reads: list[str] = []  # the tasks whose definitions a full read asked for

    def commit(self, position: int, scheduled: ScheduledTask) -> None:
        self.rows[scheduled.task_id] = (position, at(position, scheduled))

    async def changed(self, after: int) -> tuple[int, list[ScheduledTask]]:
        found = sorted((p, t.task_id, t) for p, t in self.rows.values() if p > after)[:2]  # small pages
        return (found[-1][0] if found else after), [t for _, _, t in found]

    async def live(self) -> tuple[int, dict[str, int]]:
        return (max((p for p, _ in self.rows.values()), default=0),
                {k: p for k, (p, t) in self.rows.items() if t.enabled and not t.deleted})

    async def tasks(self, task_ids: list[str]) -> list[ScheduledTask]:
        self.reads += task_ids
        return [self.rows[k][1] for k in task_ids if k in self.rows]

    async def overdue_runs(self, grace: float, limit: int) -> list[str]:
        return []

    async def cancelled(self, run_ids: list[str]) -> list[str]:
        return []


def scheduler(catalog: Catalog) -> tuple[Scheduler, list[tuple[str, datetime]]]:
    fired: list[tuple[str, datetime]] = []

    async def record(_: Scheduler, entry: Entry, tick: datetime, trigger: str) -> None:
        fired.append((entry.task.task_id, tick))

    s = Scheduler(None, catalog, None, replica="r1", settings=SchedulerSettings(), clock=lambda: NOW,  # type: ignore[arg-type]
                  launch=record)
    return s, fired


async def test_a_write_committed_below_the_cursor_is_missed_by_changes_and_found_by_the_full_read() -> None:
    catalog = Catalog()
    catalog.commit(10, task("a"))
    s, _ = scheduler(catalog)
    await s.refresh()
    assert set(s.entries) == {"a"} and s.cursor == 10

    catalog.commit(7, task("late"))  # took position 7 before a's 10, committed after it
    await s.refresh()
    assert "late" not in s.entries

    await s.refresh(full=True)
    assert set(s.entries) == {"a", "late"} and s.cursor == 10


async def test_a_pause_committed_below_the_cursor_is_found_by_the_full_read() -> None:
    catalog = Catalog()
    catalog.commit(5, task("a"))
    catalog.commit(9, task("b"))
    s, _ = scheduler(catalog)
    await s.refresh()

    catalog.commit(8, task("a", enabled=False))
    await s.refresh()
    assert "a" in s.entries
    await s.refresh(full=True)
    assert set(s.entries) == {"b"}


async def test_the_full_read_leaves_unchanged_tasks_alone_and_redefines_changed_ones() -> None:
    catalog = Catalog()
    for n in range(5):  # more than one page
        catalog.commit(10 * n + 10, task(f"t{n}"))
    s, _ = scheduler(catalog)
    await s.refresh()
    assert len(s.entries) == 5
    generations = {k: e.generation for k, e in s.entries.items()}

    catalog.commit(25, task("t2", every=30.0))  # below the cursor (50)
    await s.refresh(full=True)

    assert {k: e.generation for k, e in s.entries.items() if k != "t2"} == {k: g for k, g in generations.items() if k != "t2"}
    assert s.entries["t2"].generation != generations["t2"]
    assert s.entries["t2"].definition.schedule.every == 30.0
    assert catalog.reads == ["t2"]  # the unchanged definitions are not read again
