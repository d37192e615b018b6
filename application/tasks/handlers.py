"""Command handlers of the tasks feature: load the task (or run), check the caller may act at its site,
call one aggregate method, append. A manual run is started in this process at once (`RunExecutor`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from uuid import uuid4

from application.context import CommandContext, CommandResult
from application.errors import ConcurrencyError, PreconditionFailed
from application.tasks.commands import RUN, WRITE, CancelRun, CreateTask, DeleteTask, PauseTask, ResumeTask, RunTask, UpdateTask
from application.tasks.ports import ActionRegistry, RunExecutor
from application.unit import Loaded, Repository
from domain.tasks.errors import RunNotFound, TaskExists, TaskNotFound
from domain.tasks.run import STREAM_TYPE as RUN_STREAM
from domain.tasks.run import TaskRun
from domain.tasks.task import STREAM_TYPE, Definition, Task, check_task_id


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TaskServices:
    repository: Repository
    actions: ActionRegistry
    executor: RunExecutor | None = None
    clock: Callable[[], datetime] = utcnow


def check_allowed(ctx: CommandContext, permission: str, site_id: str | None, task_id: str) -> None:
    """A caller without `permission` at the task's site does not learn the task exists."""
    if ctx.access is not None and not ctx.access.allows(permission, site_id):
        raise TaskNotFound(f"task {task_id} not found", task_id=task_id)


async def load_task(services: TaskServices, task_id: str, ctx: CommandContext, permission: str) -> Loaded[Task]:
    check_task_id(task_id)
    loaded = await services.repository.load(Task, STREAM_TYPE, task_id, Task.create_id(task_id))
    if loaded.aggregate is None:
        raise TaskNotFound(f"task {task_id} not found", task_id=task_id)
    check_allowed(ctx, permission, loaded.aggregate.site_id, task_id)
    if ctx.expected_version is not None and ctx.expected_version != loaded.version:
        raise PreconditionFailed(loaded.stream_id, ctx.expected_version, loaded.version)
    return loaded


async def save(services: TaskServices, loaded: Loaded, ctx: CommandContext, command: str, site_id: str | None) -> CommandResult:
    r = await services.repository.save(loaded, ctx.metadata(command), ctx.idempotency, site_id)
    return CommandResult(r.stream_id, r.version, r.position, r.duplicate)


def definition_of(cmd: CreateTask | UpdateTask, services: TaskServices, site_id: str | None) -> Definition:
    services.actions.check(cmd.action, cmd.payload, site_id)
    return Definition(name=cmd.name, schedule=cmd.schedule, action=cmd.action, payload=cmd.payload,
                      catch_up=cmd.catch_up, timeout=cmd.timeout, retry=cmd.retry)


async def create_task(cmd: CreateTask, ctx: CommandContext, services: TaskServices) -> CommandResult:
    check_allowed(ctx, WRITE, cmd.site_id, cmd.task_id)
    task = Task.create(cmd.task_id, cmd.site_id, definition_of(cmd, services, cmd.site_id), cmd.enabled)
    fresh = services.repository.new(STREAM_TYPE, cmd.task_id)
    fresh.aggregate = task
    try:
        return await save(services, fresh, ctx, "CreateTask", task.site_id)
    except ConcurrencyError:
        raise TaskExists(f"task {cmd.task_id} already exists", field="id", task_id=cmd.task_id) from None


async def update_task(cmd: UpdateTask, ctx: CommandContext, services: TaskServices) -> CommandResult:
    loaded = await load_task(services, cmd.task_id, ctx, WRITE)
    loaded.aggregate.update(definition_of(cmd, services, loaded.aggregate.site_id))
    return await save(services, loaded, ctx, "UpdateTask", loaded.aggregate.site_id)


async def delete_task(cmd: DeleteTask, ctx: CommandContext, services: TaskServices) -> CommandResult:
    loaded = await load_task(services, cmd.task_id, ctx, WRITE)
    loaded.aggregate.delete(cmd.reason)
    return await save(services, loaded, ctx, "DeleteTask", loaded.aggregate.site_id)


async def pause_task(cmd: PauseTask, ctx: CommandContext, services: TaskServices) -> CommandResult:
    loaded = await load_task(services, cmd.task_id, ctx, RUN)
    loaded.aggregate.pause(cmd.reason)
    return await save(services, loaded, ctx, "PauseTask", loaded.aggregate.site_id)


async def resume_task(cmd: ResumeTask, ctx: CommandContext, services: TaskServices) -> CommandResult:
    loaded = await load_task(services, cmd.task_id, ctx, RUN)
    loaded.aggregate.resume(cmd.reason)
    return await save(services, loaded, ctx, "ResumeTask", loaded.aggregate.site_id)


async def run_task(cmd: RunTask, ctx: CommandContext, services: TaskServices) -> CommandResult:
    """A manual run: requested with the caller as actor, then started here (or by any replica's sweep)."""
    loaded = await load_task(services, cmd.task_id, ctx, RUN)
    task = loaded.aggregate
    task.check_live()
    d = task.definition
    run_id = str(uuid4())
    run = TaskRun(run_id=run_id, task_id=task.task_id, site_id=task.site_id, trigger="manual", tick=None,
                  actor=ctx.actor, action=d.action, payload=d.payload, timeout=d.timeout,
                  max_attempts=d.retry.max_attempts, backoff=d.retry.backoff, reason=cmd.reason or "")
    fresh = services.repository.new(RUN_STREAM, run_id)
    fresh.aggregate = run
    result = await save(services, fresh, ctx, "RunTask", task.site_id)
    if services.executor is not None and not result.duplicate:
        services.executor.submit(run_id)
    return result


async def cancel_run(cmd: CancelRun, ctx: CommandContext, services: TaskServices) -> CommandResult:
    loaded = await services.repository.load(TaskRun, RUN_STREAM, cmd.run_id, TaskRun.create_id(cmd.run_id))
    run = loaded.aggregate
    if run is None or (cmd.task_id is not None and run.task_id != cmd.task_id):
        raise RunNotFound(f"run {cmd.run_id} not found", run_id=cmd.run_id)
    if ctx.access is not None and not ctx.access.allows(RUN, run.site_id):
        raise RunNotFound(f"run {cmd.run_id} not found", run_id=cmd.run_id)
    run.cancel(ctx.actor, cmd.reason)
    result = await save(services, loaded, ctx, "CancelRun", run.site_id)
    if services.executor is not None:
        services.executor.cancel(cmd.run_id)
    return result


HANDLERS = {
    CreateTask: create_task,
    UpdateTask: update_task,
    DeleteTask: delete_task,
    PauseTask: pause_task,
    ResumeTask: resume_task,
    RunTask: run_task,
    CancelRun: cancel_run,
}
