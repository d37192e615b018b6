"""A run's life as the scheduler drives it: request a tick (and start it, in the same append), start a
run waiting to start, record its outcome, time it out. Each returns None (or False) when another
replica decided first: that is the normal way of losing a race, not an error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from application.errors import ConcurrencyError
from application.ports import AppendResult
from application.unit import Loaded, Repository
from domain.errors import DomainError
from domain.tasks.run import STREAM_TYPE, TaskRun, run_id, tick_text
from domain.tasks.task import Definition

SCHEDULER = {"actor": "scheduler", "command": "ScheduleTask"}


def metadata(replica: str, command: str, traceparent: str | None = None) -> dict[str, Any]:
    """Who appends (the scheduler of `replica`), and the span of the run's trace the append belongs to."""
    data = {"actor": f"scheduler:{replica}", "command": command}
    return data if traceparent is None else {**data, "traceparent": traceparent}


async def request_tick(
    repository: Repository, task_id: str, site_id: str | None, definition: Definition, tick: datetime, trigger: str,
    replica: str, now: datetime, traceparent: str | None = None,
) -> TaskRun | None:
    """Request and start the run of `task_id` at `tick` in one append. The run id and every event id come
    from (task, tick), so the replica that appends second is answered with a duplicate and gets None:
    exactly one run per tick, started by exactly one replica."""
    rid = run_id(task_id, tick)
    run = TaskRun(run_id=rid, task_id=task_id, site_id=site_id, trigger=trigger, tick=tick_text(tick),
                  actor="scheduler", action=definition.action, payload=definition.payload,
                  timeout=definition.timeout, max_attempts=definition.retry.max_attempts,
                  backoff=definition.retry.backoff)
    run.start(replica, now)
    fresh = repository.new(STREAM_TYPE, rid)
    fresh.aggregate = run
    try:
        result = await repository.save(fresh, metadata(replica, "RequestRun", traceparent), None, site_id)
    except ConcurrencyError:  # the same tick requested with another start (a manual run id never clashes)
        return None
    return None if result.duplicate else run


async def load_run(repository: Repository, rid: str) -> Loaded[TaskRun]:
    return await repository.load(TaskRun, STREAM_TYPE, rid, TaskRun.create_id(rid))


async def _save(repository: Repository, loaded: Loaded[TaskRun], replica: str, command: str,
                traceparent: str | None = None) -> AppendResult | None:
    try:
        result = await repository.save(loaded, metadata(replica, command, traceparent), None, loaded.aggregate.site_id)
    except ConcurrencyError:
        return None
    return None if result.duplicate else result


async def start(repository: Repository, rid: str, replica: str, now: datetime,
                traceparent: str | None = None) -> TaskRun | None:
    """Start a run waiting to start (requested, or retrying past its backoff); None if it is not, or if
    another replica started it first."""
    loaded = await load_run(repository, rid)
    run = loaded.aggregate
    if run is None or not run.startable(now):
        return None
    run.start(replica, now)
    return run if await _save(repository, loaded, replica, "StartRun", traceparent) else None


async def finish(repository: Repository, rid: str, replica: str, attempt: int, duration_ms: float,
                 error: str | None, output: str, now: datetime, traceparent: str | None = None) -> bool:
    """Record the outcome of `attempt`; False when the run moved on meanwhile (cancelled, timed out)."""
    loaded = await load_run(repository, rid)
    run = loaded.aggregate
    if run is None or run.status != "started" or run.attempt != attempt or run.replica != replica:
        return False
    try:
        if error is None:
            run.succeed(duration_ms, output)
        else:
            run.fail(duration_ms, error, now)
    except DomainError:
        return False
    return await _save(repository, loaded, replica, "FinishRun", traceparent) is not None


async def recover(repository: Repository, rid: str, replica: str, now: datetime, grace: float,
                  traceparent: str | None = None) -> TaskRun | None:
    """A run found overdue: time it out past its lease (retrying it if attempts are left), and start it
    here if it is waiting to start (a retry past its backoff, or a request whose requester died)."""
    loaded = await load_run(repository, rid)
    run = loaded.aggregate
    if run is None:
        return None
    if run.lease_expired(now):
        run.time_out(now)
        if await _save(repository, loaded, replica, "TimeOutRun", traceparent) is None:
            return None
        loaded = await load_run(repository, rid)
        run = loaded.aggregate
    if run.startable(now):
        run.start(replica, now)
        return run if await _save(repository, loaded, replica, "StartRun", traceparent) else None
    return None
