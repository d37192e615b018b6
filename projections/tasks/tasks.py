"""Read model `tasks`: each task's definition and state, with what its runs did (last tick, last run,
success and failure counts, average duration). `defined_position` moves only with the task's own
events: the schedulers' catalog reads changed definitions by it (projections/tasks/queries.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from application.ports import StoredEvent
from projections.batch import BatchProjection, Needs, Rows, Table

NAME = "tasks"
SCHEMA = "rm_tasks"
VERSION = 1

DDL = """
CREATE TABLE tasks (
    task_id           text PRIMARY KEY,
    site_id           text,
    name              text NOT NULL,
    action            text NOT NULL,
    schedule          jsonb NOT NULL,
    definition        jsonb NOT NULL,
    status            text NOT NULL,
    enabled           boolean NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    defined_at        timestamptz NOT NULL,
    defined_position  bigint NOT NULL,
    last_tick         text,
    last_run_at       timestamptz,
    last_run_status   text,
    success_count     integer NOT NULL DEFAULT 0,
    failure_count     integer NOT NULL DEFAULT 0,
    finished_count    integer NOT NULL DEFAULT 0,
    total_duration_ms double precision NOT NULL DEFAULT 0,
    stream_version    integer NOT NULL,
    last_position     bigint NOT NULL
);
CREATE INDEX tasks_defined ON tasks (defined_position);
CREATE INDEX tasks_site ON tasks (site_id, task_id);
"""

TASKS = Table("tasks", ("task_id",))


class TasksProjection(BatchProjection):
    name = NAME
    schema = SCHEMA
    version = VERSION
    ddl = DDL
    tables = (TASKS,)
    stream_types = frozenset({"task", "task-run"})

    def needs(self, events: Sequence[StoredEvent]) -> Needs:
        return {"tasks": {e.payload["task_id"] for e in events}}

    def apply(self, rows: Rows, e: StoredEvent) -> None:
        p = e.payload
        tid = p["task_id"]
        defined = {"updated_at": e.recorded_at, "defined_at": e.recorded_at, "defined_position": e.position,
                   "stream_version": e.stream_version, "last_position": e.position}
        match e.event_type:
            case "Task.Created":
                d = p["definition"]
                rows.put("tasks", {
                    "task_id": tid, "site_id": p["site_id"], "name": d["name"], "action": d["action"],
                    "schedule": d["schedule"], "definition": d, "status": "active" if p["enabled"] else "paused",
                    "enabled": p["enabled"], "created_at": e.recorded_at, "last_tick": None, "last_run_at": None,
                    "last_run_status": None, "success_count": 0, "failure_count": 0, "finished_count": 0,
                    "total_duration_ms": 0.0, **defined,
                })  # fmt: skip
            case "Task.Updated":
                d = p["definition"]
                rows.update("tasks", tid, name=d["name"], action=d["action"], schedule=d["schedule"], definition=d,
                            **defined)
            case "Task.Paused":
                rows.update("tasks", tid, status="paused", enabled=False, **defined)
            case "Task.Resumed":
                rows.update("tasks", tid, status="active", enabled=True, **defined)
            case "Task.Deleted":
                rows.update("tasks", tid, status="deleted", enabled=False, **defined)
            case "TaskRun.Requested":
                if (row := rows.get("tasks", tid)) is not None:
                    tick = p.get("tick")
                    last = row["last_tick"]
                    rows.update("tasks", tid, last_run_at=e.recorded_at, last_run_status="requested",
                                last_tick=_later(last, tick), last_position=e.position)
            case "TaskRun.Started":
                rows.update("tasks", tid, last_run_status="started", last_position=e.position)
            case "TaskRun.Succeeded" | "TaskRun.Failed" | "TaskRun.TimedOut" | "TaskRun.Cancelled":
                if (row := rows.get("tasks", tid)) is not None:
                    ok = e.event_type == "TaskRun.Succeeded"
                    rows.update("tasks", tid, last_run_status=e.event_type.split(".")[1].lower(),
                                success_count=row["success_count"] + ok,
                                failure_count=row["failure_count"] + (not ok and e.event_type != "TaskRun.Cancelled"),
                                finished_count=row["finished_count"] + ("duration_ms" in p),
                                total_duration_ms=row["total_duration_ms"] + p.get("duration_ms", 0.0),
                                last_position=e.position)


def _later(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return b if datetime.fromisoformat(b) > datetime.fromisoformat(a) else a
