"""Read model `task_runs`: every run with its status, attempts, timings and outcome (the history
`GET /tasks/{id}/runs` answers, and the overdue runs each replica's sweep looks for)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from application.ports import StoredEvent
from projections.batch import BatchProjection, Needs, Rows, Table

NAME = "task_runs"
SCHEMA = "rm_task_runs"
VERSION = 1

DDL = """
CREATE TABLE runs (
    run_id         text PRIMARY KEY,
    task_id        text NOT NULL,
    site_id        text,
    trigger        text NOT NULL,
    tick           text,
    actor          text NOT NULL,
    action         text NOT NULL,
    status         text NOT NULL,
    attempt        integer NOT NULL,
    max_attempts   integer NOT NULL,
    replica        text,
    requested_at   timestamptz NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    lease_until    timestamptz,
    not_before     timestamptz,
    duration_ms    double precision,
    output         text,
    error          text,
    stream_version integer NOT NULL,
    last_position  bigint NOT NULL
);
CREATE INDEX runs_task ON runs (task_id, requested_at DESC, run_id);
CREATE INDEX runs_open ON runs (status) WHERE status IN ('requested', 'started', 'retrying');
"""

RUNS = Table("runs", ("run_id",))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class RunsProjection(BatchProjection):
    name = NAME
    schema = SCHEMA
    version = VERSION
    ddl = DDL
    tables = (RUNS,)
    stream_types = frozenset({"task-run"})

    def needs(self, events: Sequence[StoredEvent]) -> Needs:
        return {"runs": {e.payload["run_id"] for e in events}}

    def apply(self, rows: Rows, e: StoredEvent) -> None:
        p = e.payload
        rid = p["run_id"]
        touched = {"stream_version": e.stream_version, "last_position": e.position}
        match e.event_type:
            case "TaskRun.Requested":
                rows.put("runs", {
                    "run_id": rid, "task_id": p["task_id"], "site_id": p["site_id"], "trigger": p["trigger"],
                    "tick": p["tick"], "actor": p["actor"], "action": p["action"], "status": "requested",
                    "attempt": 0, "max_attempts": p["max_attempts"], "replica": None, "requested_at": e.recorded_at,
                    "started_at": None, "finished_at": None, "lease_until": None, "not_before": None,
                    "duration_ms": None, "output": None, "error": None, **touched,
                })  # fmt: skip
            case "TaskRun.Started":
                rows.update("runs", rid, status="started", attempt=p["attempt"], replica=p["replica"],
                            started_at=_time(p["started_at"]), lease_until=_time(p["lease_until"]), not_before=None,
                            **touched)
            case "TaskRun.Succeeded":
                rows.update("runs", rid, status="succeeded", finished_at=e.recorded_at, duration_ms=p["duration_ms"],
                            output=p["output"], error=None, **touched)
            case "TaskRun.Failed":
                rows.update("runs", rid, status="failed", finished_at=e.recorded_at, duration_ms=p["duration_ms"],
                            error=p["error"], **touched)
            case "TaskRun.TimedOut":
                rows.update("runs", rid, status="timed_out", finished_at=e.recorded_at,
                            error=f"lease of replica {p['replica']} ran out at {p['lease_until']}", **touched)
            case "TaskRun.Retried":
                rows.update("runs", rid, status="retrying", not_before=_time(p["not_before"]), finished_at=None,
                            **touched)
            case "TaskRun.Cancelled":
                rows.update("runs", rid, status="cancelled", finished_at=e.recorded_at, **touched)
