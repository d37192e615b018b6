"""Request and response bodies of the tasks routes (bounded: every string and list has a limit)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from domain.limits import Id, Name

Seconds = Annotated[float, Meta(ge=0.1, le=86400.0)]


class TaskScheduleBody(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["cron", "interval"]
    cron: Annotated[str, Meta(max_length=120)] | None = None
    timezone: Annotated[str, Meta(max_length=64)] = "UTC"
    every: Annotated[float, Meta(ge=0.1, le=366 * 86400.0)] | None = None
    align: bool = False  # interval: ticks on whole multiples of `every` from the epoch (no per-task phase)


class TaskRetryBody(msgspec.Struct, forbid_unknown_fields=True):
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 1
    backoff: Annotated[float, Meta(ge=0, le=3600)] = 1.0


class TaskCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    schedule: TaskScheduleBody
    action: Annotated[str, Meta(max_length=128)]
    id: Annotated[str, Meta(max_length=64)] | None = None
    payload: dict[Annotated[str, Meta(max_length=128)], Any] = {}
    site_id: Id | None = None
    enabled: bool = True
    catch_up: Literal["skip", "once", "all"] = "skip"
    timeout: Seconds = 60.0
    retry: TaskRetryBody = msgspec.field(default_factory=TaskRetryBody)


class TaskUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    schedule: TaskScheduleBody
    action: Annotated[str, Meta(max_length=128)]
    payload: dict[Annotated[str, Meta(max_length=128)], Any] = {}
    catch_up: Literal["skip", "once", "all"] = "skip"
    timeout: Seconds = 60.0
    retry: TaskRetryBody = msgspec.field(default_factory=TaskRetryBody)


class Task(msgspec.Struct):
    id: str
    name: str
    site_id: str | None
    action: str
    schedule: dict[str, Any]
    status: str
    enabled: bool
    definition: dict[str, Any]
    created_at: str
    updated_at: str
    last_run: str | None
    last_run_status: str | None
    next_run: str | None
    success_count: int
    failure_count: int
    average_duration_ms: float | None
    stream_version: int


class TaskRun(msgspec.Struct):
    id: str
    task_id: str
    site_id: str | None
    trigger: str
    tick: str | None
    actor: str
    action: str
    status: str
    attempt: int
    max_attempts: int
    replica: str | None
    requested_at: str
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None
    output: str | None
    error: str | None
