"""Queries of the tasks read models: the schedulers' catalog (changed definitions, overdue runs), the
task list and details (next run worked out from the schedule), and the runs history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import asyncpg
import msgspec

from application.tasks.ports import ScheduledTask
from domain.tasks.schedule import Schedule, next_tick
from projections.sql import Where, fetch_page, order_by
from projections.tasks.runs import SCHEMA as RUNS
from projections.tasks.tasks import SCHEMA as TASKS

CATALOG_PAGE = 5000
SCHEDULED = "task_id, site_id, definition, enabled, status, defined_at, last_tick, defined_position"


def _scheduled(r: asyncpg.Record) -> ScheduledTask:
    return ScheduledTask(r["task_id"], r["site_id"], r["definition"], r["enabled"], r["status"] == "deleted",
                         r["defined_at"].isoformat(), r["last_tick"], r["defined_position"])


class Catalog:
    """`TaskCatalog` over the read models (every replica's scheduler reads it)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self.pool.fetch(sql, *args)
        except asyncpg.UndefinedTableError:  # not yet: the projectors create the read models as they start
            return []

    async def changed(self, after: int) -> tuple[int, list[ScheduledTask]]:
        rows = await self._fetch(
            f"SELECT {SCHEDULED} FROM {TASKS}.tasks WHERE defined_position > $1 ORDER BY defined_position"
            f" LIMIT {CATALOG_PAGE}", after)
        return (rows[-1]["defined_position"] if rows else after), [_scheduled(r) for r in rows]

    async def live(self) -> tuple[int, dict[str, int]]:
        rows = await self._fetch(f"SELECT task_id, defined_position, enabled AND status <> 'deleted' FROM {TASKS}.tasks")
        return max((r[1] for r in rows), default=0), {r[0]: r[1] for r in rows if r[2]}

    async def tasks(self, task_ids: list[str]) -> list[ScheduledTask]:
        out: list[ScheduledTask] = []
        for start in range(0, len(task_ids), CATALOG_PAGE):
            rows = await self._fetch(f"SELECT {SCHEDULED} FROM {TASKS}.tasks WHERE task_id = ANY($1)",
                                     task_ids[start:start + CATALOG_PAGE])
            out += [_scheduled(r) for r in rows]
        return out

    async def overdue_runs(self, grace: float, limit: int) -> list[str]:
        rows = await self._fetch(
            f"SELECT run_id FROM {RUNS}.runs WHERE status IN ('requested', 'started', 'retrying') AND ("
            f" (status = 'started' AND lease_until < now() - make_interval(secs => $1))"
            f" OR (status = 'retrying' AND not_before <= now())"
            f" OR (status = 'requested' AND requested_at < now() - make_interval(secs => $1)))"
            f" ORDER BY requested_at LIMIT $2", grace, limit)
        return [r["run_id"] for r in rows]

    async def cancelled(self, run_ids: list[str]) -> list[str]:
        if not run_ids:
            return []
        rows = await self._fetch(
            f"SELECT run_id FROM {RUNS}.runs WHERE run_id = ANY($1) AND status = 'cancelled'", run_ids)
        return [r["run_id"] for r in rows]


@dataclass(frozen=True)
class TaskFilter:
    sites: set[str] | None = None  # None: every site and the global tasks; else these sites only
    status: str | None = None
    site_id: str | None = None
    action: str | None = None
    include_deleted: bool = False


@dataclass(frozen=True)
class RunFilter:
    task_id: str
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


TASK_SORT = {"id": "task_id", "name": "name", "status": "status", "created_at": "created_at",
             "last_run_at": "last_run_at", "updated_at": "updated_at"}
RUN_SORT = {"requested_at": "requested_at", "started_at": "started_at", "status": "status"}


def next_run(row: dict[str, Any], now: datetime | None = None) -> str | None:
    if not row["enabled"]:
        return None
    now = now or datetime.now(timezone.utc)
    schedule = msgspec.convert(row["schedule"], Schedule)
    return next_tick(schedule, now, task_id=row["task_id"]).isoformat(timespec="milliseconds")


def shaped(row: dict[str, Any]) -> dict[str, Any]:
    finished = row.pop("finished_count")
    total = row.pop("total_duration_ms")
    row["average_duration_ms"] = round(total / finished, 3) if finished else None
    row["next_run"] = next_run(row)
    for name in ("defined_position", "last_position"):
        row.pop(name, None)
    return row


def _task_where(f: TaskFilter) -> Where:
    where = Where()
    if f.sites is not None:
        where.add("site_id = ANY({})", sorted(f.sites))
    if f.site_id:
        where.add("site_id = {}", f.site_id)
    if f.status:
        where.add("status = {}", f.status)
    elif not f.include_deleted:
        where.add("status <> 'deleted'")
    if f.action:
        where.add("action = {}", f.action)
    return where


async def list_tasks(pool: asyncpg.Pool, f: TaskFilter, skip: int, limit: int, sort_by: str, descending: bool,
                     ) -> tuple[int, list[dict[str, Any]]]:
    total, rows = await fetch_page(pool, columns="*", source=f"{TASKS}.tasks", where=_task_where(f),
                                   order=order_by(TASK_SORT[sort_by], descending, "task_id"), skip=skip, limit=limit)
    return total, [shaped(r) for r in rows]


async def get_task(pool: asyncpg.Pool, task_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT * FROM {TASKS}.tasks WHERE task_id = $1", task_id)
    return shaped(dict(row)) if row is not None else None


async def list_runs(pool: asyncpg.Pool, f: RunFilter, skip: int, limit: int, sort_by: str, descending: bool,
                    ) -> tuple[int, list[dict[str, Any]]]:
    where = Where().add("task_id = {}", f.task_id)
    if f.status:
        where.add("status = {}", f.status)
    if f.since:
        where.add("requested_at >= {}", f.since)
    if f.until:
        where.add("requested_at < {}", f.until)
    total, rows = await fetch_page(pool, columns="*", source=f"{RUNS}.runs", where=where,
                                   order=order_by(RUN_SORT[sort_by], descending, "run_id"), skip=skip, limit=limit)
    for row in rows:
        row.pop("last_position", None)
    return total, rows


class TaskQueries:
    """The tasks' questions as one object over the pool (what the HTTP controller and the CLI are given)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, f: TaskFilter, skip: int, limit: int, sort_by: str = "id", descending: bool = False,
                   ) -> tuple[int, list[dict[str, Any]]]:
        return await list_tasks(self.pool, f, skip, limit, sort_by, descending)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        return await get_task(self.pool, task_id)

    async def runs(self, f: RunFilter, skip: int, limit: int, sort_by: str = "requested_at", descending: bool = True,
                   ) -> tuple[int, list[dict[str, Any]]]:
        return await list_runs(self.pool, f, skip, limit, sort_by, descending)
