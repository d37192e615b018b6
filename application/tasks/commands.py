"""Commands of the tasks feature (imperative names). Each names what the caller must hold at the task's
site (global tasks: everywhere), checked by the handler once the task's site is known."""

from __future__ import annotations

from typing import Any

from application.commands import Command
from domain.tasks.schedule import Schedule
from domain.tasks.task import CatchUp, RetryPolicy

READ = "tasks:read"
WRITE = "tasks:write"
RUN = "tasks:run"


class CreateTask(Command):
    """A task; `task_id` chosen by the caller (or made by the interface). `site_id` None: global."""

    task_id: str
    name: str
    schedule: Schedule
    action: str
    payload: dict[str, Any] = {}
    site_id: str | None = None
    enabled: bool = True
    catch_up: CatchUp = "skip"
    timeout: float = 60.0
    retry: RetryPolicy = RetryPolicy()


class UpdateTask(Command):
    """Replace a task's definition (name, schedule, action, payload, policies); its site stays."""

    task_id: str
    name: str
    schedule: Schedule
    action: str
    payload: dict[str, Any] = {}
    catch_up: CatchUp = "skip"
    timeout: float = 60.0
    retry: RetryPolicy = RetryPolicy()


class DeleteTask(Command):
    task_id: str
    reason: str | None = None


class PauseTask(Command):
    task_id: str
    reason: str | None = None


class ResumeTask(Command):
    """Ticks missed while paused are not caught up: the task runs again from its next tick."""

    task_id: str
    reason: str | None = None


class RunTask(Command):
    """Run now, whatever the schedule (also while paused); answers the run's stream. The run does what
    the task says: no payload of its own (one would let `tasks:run` do what only `tasks:write` defines)."""

    task_id: str
    reason: str | None = None


class CancelRun(Command):
    """Cancel a run that has not ended (a running one is stopped by the replica executing it).
    `task_id`: the task the caller names the run under (None: any), a run of another task is not found."""

    run_id: str
    task_id: str | None = None
    reason: str | None = None
