"""Events recorded before deletions, resumes and manual runs took a reason: their payloads have no
`reason`, and they still replay through the store's own `reconstruct` (the event classes default it to "")."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

from application.ports import StoredEvent
from domain.tasks.run import TaskRun, run_uuid
from domain.tasks.task import Task, task_uuid
from infrastructure.eventlog.repository import reconstruct

DEFINITION = {"name": "Ping", "schedule": {"kind": "interval", "every": 60.0, "cron": None, "timezone": "UTC"},
              "action": "projections.rebuild", "payload": {"name": "plugins"}, "catch_up": "skip", "timeout": 60.0,
              "retry": {"max_attempts": 1, "backoff": 1.0}}
OLD_TASK = [("Created", {"task_id": "t1", "site_id": None, "definition": DEFINITION, "enabled": True}),
            ("Paused", {"task_id": "t1", "reason": ""}), ("Resumed", {"task_id": "t1"}), ("Deleted", {"task_id": "t1"})]
OLD_RUN = [("Requested", {"run_id": "r1", "task_id": "t1", "site_id": None, "trigger": "manual", "tick": None,
                          "actor": "alice", "action": "projections.rebuild", "payload": {"name": "plugins"},
                          "timeout": 60.0, "max_attempts": 1, "backoff": 1.0})]


def stored(stream_id: str, aggregate: str, events: list[tuple[str, dict[str, Any]]]) -> list[StoredEvent]:
    now = datetime.now(timezone.utc)
    return [StoredEvent(position=n, transaction_id=n, event_id=uuid4(), stream_id=stream_id,
                        stream_type=stream_id.split(":", 1)[0], stream_version=n, event_type=f"{aggregate}.{name}",
                        schema_version=1, payload=dict(payload), metadata={}, site_id=None, recorded_at=now, hash=b"")
            for n, (name, payload) in enumerate(events, start=1)]


def test_a_task_resumed_and_deleted_without_reasons_replays() -> None:
    task = reconstruct(Task, task_uuid("t1"), stored("task:t1", "Task", OLD_TASK))

    assert task.deleted and not task.enabled and task.version == len(OLD_TASK)


def test_a_manual_run_requested_without_a_reason_replays() -> None:
    run = reconstruct(TaskRun, run_uuid("r1"), stored("task-run:r1", "TaskRun", OLD_RUN))

    assert run.status == "requested" and run.task_id == "t1"
