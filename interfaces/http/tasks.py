"""Scheduled tasks and their runs: `/api/v1/tasks`. Site-scoped: a caller sees and changes the tasks of
the sites it holds `tasks:*` permissions at (global tasks need them everywhere)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from application.tasks import commands as t
from domain.tasks.errors import TaskNotFound
from domain.tasks.schedule import Schedule
from domain.tasks.task import RetryPolicy, check_task_id
from interfaces.http import dependencies as services
from interfaces.http.bodies import JSON_BODY
from interfaces.http.common import command_context, page_params, read_consistency, written
from interfaces.http.dependencies import Commands, ReadModels
from interfaces.http.errors import ApiError
from interfaces.http.schemas import Page, Reason, Written
from interfaces.http.schemas.tasks import Task, TaskCreate, TaskRun, TaskUpdate
from interfaces.runtime import Authority
from interfaces.http.security import access_of, rule, visible_sites
from projections.tasks.queries import RUN_SORT, TASK_SORT, RunFilter, TaskFilter, TaskQueries

TASKS, RUNS = "tasks", "task_runs"
STATUSES = {"active", "paused", "deleted"}
RUN_STATUSES = {"requested", "started", "succeeded", "failed", "timed_out", "retrying", "cancelled"}


def _text(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def task_of(row: dict[str, Any]) -> Task:
    return Task(id=row["task_id"], name=row["name"], site_id=row["site_id"], action=row["action"],
                schedule=row["schedule"], status=row["status"], enabled=row["enabled"], definition=row["definition"],
                created_at=_text(row["created_at"]), updated_at=_text(row["updated_at"]),
                last_run=_text(row["last_run_at"]), last_run_status=row["last_run_status"], next_run=row["next_run"],
                success_count=row["success_count"], failure_count=row["failure_count"],
                average_duration_ms=row["average_duration_ms"], stream_version=row["stream_version"])


def run_of(row: dict[str, Any]) -> TaskRun:
    return TaskRun(id=row["run_id"], **{k: _text(row[k]) for k in (
        "task_id", "site_id", "trigger", "tick", "actor", "action", "status", "attempt", "max_attempts", "replica",
        "requested_at", "started_at", "finished_at", "duration_ms", "output", "error")})


def definition(data: TaskCreate | TaskUpdate) -> dict[str, Any]:
    return {"name": data.name, "schedule": msgspec.convert(msgspec.to_builtins(data.schedule), Schedule),
            "action": data.action, "payload": data.payload, "catch_up": data.catch_up, "timeout": data.timeout,
            "retry": RetryPolicy(max_attempts=data.retry.max_attempts, backoff=data.retry.backoff)}


def task_key(task_id: str) -> str:
    """The path's task id as it came, or 400 naming `task_id` (never cut short to something it is not)."""
    check_task_id(task_id, field="task_id")
    return task_id


def run_key(run_id: str) -> str:
    """Run ids are UUIDs (scheduled ones derived from task and tick); anything else is a 400 naming `run_id`."""
    try:
        if len(run_id) <= 36:
            return str(UUID(run_id))
    except ValueError:
        pass
    raise ApiError(400, "VALIDATION_FAILED", "run_id must be a run's id (a UUID)", field="run_id")


def reason_of(data: Reason | None) -> str | None:
    return data.reason if data is not None else None


def check_visible(request: Request, authority: Authority, row: dict[str, Any] | None, task_id: str) -> dict[str, Any]:
    """The task's row, if the caller may read tasks at its site (else 404: it does not learn it exists)."""
    if row is None or (authority.enabled and not access_of(request).allows(t.READ, row["site_id"])):
        raise TaskNotFound(f"task {task_id} not found", task_id=task_id)
    return row


class TaskController(Controller):
    path = "/api/v1/tasks"
    tags = ["tasks"]
    dependencies = services.TASKS

    @get("/", operation_id="listTasks", opt=rule(t.READ, "any-site"), summary="Tasks, with last and next run and counts")
    async def list_tasks(
        self, request: Request, read_models: NamedDependency[ReadModels], tasks: NamedDependency[TaskQueries],
        status: FromQuery[str | None] = None, site_id: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None, skip: FromQuery[int] = 0, limit: FromQuery[int] = 20,
        sort_by: FromQuery[str] = "id", sort_order: FromQuery[str] = "asc", consistent: FromQuery[bool] = False,
    ) -> Page[Task]:
        page_params(skip, limit, sort_by, sort_order, TASK_SORT)
        if status is not None and status not in STATUSES:
            raise ApiError(400, "VALIDATION_FAILED", "status must be active, paused or deleted", field="status")
        for name, value in (("site_id", site_id), ("action", action)):
            if value is not None and len(value) > 128:
                raise ApiError(400, "VALIDATION_FAILED", f"{name} is at most 128 characters", field=name)
        await read_consistency(request, read_models, TASKS, consistent)
        f = TaskFilter(sites=visible_sites(request, t.READ), status=status, site_id=site_id, action=action,
                       include_deleted=status == "deleted")
        total, rows = await tasks.list(f, skip, limit, sort_by, sort_order == "desc")
        items = [task_of(r) for r in rows]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @post("/", operation_id="createTask", opt=rule(t.WRITE, "any-site"), **JSON_BODY)
    async def create_task(self, request: Request, commands: NamedDependency[Commands], data: JSONBody[TaskCreate]) -> Response[Written]:
        task_id = data.id or uuid4().hex
        cmd = t.CreateTask(task_id=task_id, site_id=data.site_id, enabled=data.enabled, **definition(data))
        result = await commands.execute(cmd, command_context(request))
        return written(result, task_id, 201, location=f"/api/v1/tasks/{task_id}")

    @get("/{task_id:str}", operation_id="getTask", opt=rule(t.READ, "any-site"))
    async def get_task(self, request: Request, read_models: NamedDependency[ReadModels],
                       tasks: NamedDependency[TaskQueries], authority: NamedDependency[Authority],
                       task_id: FromPath[str], consistent: FromQuery[bool] = False) -> Response[Task]:
        key = task_key(task_id)
        await read_consistency(request, read_models, TASKS, consistent)
        row = check_visible(request, authority, await tasks.get(key), key)
        return Response(task_of(row), headers={"ETag": f'"{row["stream_version"]}"'})

    @put("/{task_id:str}", operation_id="updateTask", opt=rule(t.WRITE, "any-site"), **JSON_BODY)
    async def update_task(self, request: Request, commands: NamedDependency[Commands], task_id: FromPath[str],
                          data: JSONBody[TaskUpdate]) -> Response[Written]:
        cmd = t.UpdateTask(task_id=task_key(task_id), **definition(data))
        return written(await commands.execute(cmd, command_context(request)), task_id)

    @delete("/{task_id:str}", operation_id="deleteTask", opt=rule(t.WRITE, "any-site"), status_code=200,
            summary="Delete a task (the body, with a reason, is optional)", **JSON_BODY)
    async def delete_task(self, request: Request, commands: NamedDependency[Commands], task_id: FromPath[str],
                          data: JSONBody[Reason | None] = None) -> Response[Written]:
        cmd = t.DeleteTask(task_id=task_key(task_id), reason=reason_of(data))
        return written(await commands.execute(cmd, command_context(request)), task_id)

    @post("/{task_id:str}/run", operation_id="runTask", opt=rule(t.RUN, "any-site"), status_code=202,
          summary="Run a task now, as it is defined (the body, with a reason, is optional)", **JSON_BODY)
    async def run_task(self, request: Request, commands: NamedDependency[Commands], task_id: FromPath[str],
                       data: JSONBody[Reason | None] = None) -> Response[Written]:
        cmd = t.RunTask(task_id=task_key(task_id), reason=reason_of(data))
        result = await commands.execute(cmd, command_context(request))
        run_id = result.stream_id.split(":", 1)[1]
        return written(result, run_id, 202, location=f"/api/v1/tasks/{task_id}/runs")

    @post("/{task_id:str}/pause", operation_id="pauseTask", opt=rule(t.RUN, "any-site"), status_code=200, **JSON_BODY)
    async def pause_task(self, request: Request, commands: NamedDependency[Commands], task_id: FromPath[str],
                         data: JSONBody[Reason | None] = None) -> Response[Written]:
        cmd = t.PauseTask(task_id=task_key(task_id), reason=reason_of(data))
        return written(await commands.execute(cmd, command_context(request)), task_id)

    @post("/{task_id:str}/resume", operation_id="resumeTask", opt=rule(t.RUN, "any-site"), status_code=200, **JSON_BODY)
    async def resume_task(self, request: Request, commands: NamedDependency[Commands], task_id: FromPath[str],
                          data: JSONBody[Reason | None] = None) -> Response[Written]:
        cmd = t.ResumeTask(task_id=task_key(task_id), reason=reason_of(data))
        return written(await commands.execute(cmd, command_context(request)), task_id)

    @post("/{task_id:str}/runs/{run_id:str}/cancel", operation_id="cancelTaskRun", opt=rule(t.RUN, "any-site"),
          status_code=200, **JSON_BODY)
    async def cancel_run(self, request: Request, commands: NamedDependency[Commands], task_id: FromPath[str],
                         run_id: FromPath[str], data: JSONBody[Reason | None] = None) -> Response[Written]:
        key = run_key(run_id)
        cmd = t.CancelRun(run_id=key, task_id=task_key(task_id), reason=reason_of(data))
        return written(await commands.execute(cmd, command_context(request)), key)

    @get("/{task_id:str}/runs", operation_id="listTaskRuns", opt=rule(t.READ, "any-site"))
    async def list_runs(
        self, request: Request, read_models: NamedDependency[ReadModels], tasks: NamedDependency[TaskQueries],
        authority: NamedDependency[Authority], task_id: FromPath[str], status: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None, until: FromQuery[datetime | None] = None, skip: FromQuery[int] = 0,
        limit: FromQuery[int] = 20, sort_by: FromQuery[str] = "requested_at", sort_order: FromQuery[str] = "desc",
        consistent: FromQuery[bool] = False,
    ) -> Page[TaskRun]:
        key = task_key(task_id)
        page_params(skip, limit, sort_by, sort_order, RUN_SORT)
        if status is not None and status not in RUN_STATUSES:
            raise ApiError(400, "VALIDATION_FAILED", f"status must be one of {', '.join(sorted(RUN_STATUSES))}", field="status")
        await read_consistency(request, read_models, RUNS, consistent)
        check_visible(request, authority, await tasks.get(key), key)
        total, rows = await tasks.runs(RunFilter(key, status, since, until), skip, limit, sort_by, sort_order == "desc")
        items = [run_of(r) for r in rows]
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)
