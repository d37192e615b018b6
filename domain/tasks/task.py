"""The Task aggregate: one stream per task (`task:<task_id>`), what to run, when, and how to recover.

A task is global (`site_id` None) or belongs to one site; its events are saved with that site's id, so
grants, SSE filters and JetStream subjects scope them like every other site event. The payload is
checked against the target action's JSON Schema by the handler (the action registry owns the schemas);
the aggregate checks everything else."""

from __future__ import annotations

import re
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.identity.access import check_site_id
from domain.identity.errors import InvalidSiteId
from domain.tasks.errors import TaskDeleted, TaskInvalid
from domain.tasks.schedule import Schedule, check_schedule

STREAM_TYPE = "task"
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ACTION = re.compile(r"^[a-z][a-z0-9_.:-]{0,127}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CATCH_UP = ("skip", "once", "all")
MAX_TIMEOUT = 86400.0
MAX_ATTEMPTS = 10
MAX_BACKOFF = 3600.0

CatchUp = Literal["skip", "once", "all"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """`max_attempts` in all (1: never retried); attempt n+1 waits `backoff` * 2**(n-1) seconds."""

    max_attempts: int = 1
    backoff: float = 1.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        return min(self.backoff * 2 ** max(attempt - 1, 0), MAX_BACKOFF)


class Definition(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a task says about its runs (what `Created` and `Updated` record)."""

    name: str
    schedule: Schedule
    action: str
    payload: dict[str, Any] = {}
    catch_up: CatchUp = "skip"
    timeout: float = 60.0
    retry: RetryPolicy = RetryPolicy()


def task_uuid(task_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:task:{task_id}")


def check_task_id(task_id: str, field: str = "id") -> None:
    if not TASK_ID.fullmatch(task_id):
        raise TaskInvalid(f"{field} must be 1 to 64 letters, digits, '.', '_' or '-'", field=field)


def check_definition(d: Definition) -> Definition:
    name = d.name.strip()
    if not name or len(name) > 200 or CONTROL.search(name):
        raise TaskInvalid("name must be 1 to 200 printable characters", field="name")
    if not ACTION.fullmatch(d.action):
        raise TaskInvalid("action must name a registered action (lower-case letters, digits, '_', '.', ':', '-')",
                          field="action")
    if d.catch_up not in CATCH_UP:
        raise TaskInvalid("catch_up must be skip, once or all", field="catch_up")
    if not (0.1 <= d.timeout <= MAX_TIMEOUT):
        raise TaskInvalid(f"timeout must be 0.1 to {MAX_TIMEOUT:.0f} seconds", field="timeout")
    if not (1 <= d.retry.max_attempts <= MAX_ATTEMPTS):
        raise TaskInvalid(f"retry.max_attempts must be 1 to {MAX_ATTEMPTS}", field="retry.max_attempts")
    if not (0 <= d.retry.backoff <= MAX_BACKOFF):
        raise TaskInvalid(f"retry.backoff must be 0 to {MAX_BACKOFF:.0f} seconds", field="retry.backoff")
    return msgspec.structs.replace(d, name=name, schedule=check_schedule(d.schedule))


def _site(site_id: str | None) -> str | None:
    if site_id is None:
        return None
    try:
        check_site_id(site_id)
    except InvalidSiteId as exc:
        raise TaskInvalid(exc.message, field="site_id") from None
    return site_id


class Task(Aggregate):
    """Scheduled work. `enabled` False: paused (no tick fires, manual runs still may)."""

    @staticmethod
    def create_id(task_id: str) -> UUID:
        return task_uuid(task_id)

    @event("Created")
    def __init__(self, task_id: str, site_id: str | None, definition: dict[str, Any], enabled: bool) -> None:
        self.task_id = task_id
        self.site_id = site_id
        self.definition_data = definition
        self.enabled = enabled
        self.deleted = False

    @classmethod
    def create(cls, task_id: str, site_id: str | None, definition: Definition, enabled: bool = True) -> "Task":
        check_task_id(task_id)
        d = check_definition(definition)
        return cls(task_id=task_id, site_id=_site(site_id), definition=msgspec.to_builtins(d), enabled=enabled)

    @property
    def definition(self) -> Definition:
        return msgspec.convert(self.definition_data, Definition)

    @property
    def status(self) -> str:
        return "deleted" if self.deleted else "active" if self.enabled else "paused"

    def check_live(self) -> None:
        if self.deleted:
            raise TaskDeleted(f"task {self.task_id} was deleted", task_id=self.task_id)

    def update(self, definition: Definition) -> bool:
        self.check_live()
        data = msgspec.to_builtins(check_definition(definition))
        if data == self.definition_data:
            return False
        self._updated(task_id=self.task_id, definition=data)
        return True

    @event("Updated")
    def _updated(self, task_id: str, definition: dict[str, Any]) -> None:
        self.definition_data = definition

    def pause(self, reason: str | None = None) -> bool:
        self.check_live()
        if not self.enabled:
            return False
        self._paused(task_id=self.task_id, reason=reason or "")
        return True

    @event("Paused")
    def _paused(self, task_id: str, reason: str) -> None:
        self.enabled = False

    def resume(self, reason: str | None = None) -> bool:
        self.check_live()
        if self.enabled:
            return False
        self._resumed(task_id=self.task_id, reason=reason or "")
        return True

    class Resumed(Aggregate.Event):
        task_id: str
        reason: str = ""  # the default replays events recorded before a resume took a reason

    @event(Resumed)
    def _resumed(self, task_id: str, reason: str) -> None:
        self.enabled = True

    def delete(self, reason: str | None = None) -> bool:
        if self.deleted:
            return False
        self._deleted(task_id=self.task_id, reason=reason or "")
        return True

    class Deleted(Aggregate.Event):
        task_id: str
        reason: str = ""  # as for Resumed

    @event(Deleted)
    def _deleted(self, task_id: str, reason: str) -> None:
        self.deleted = True
        self.enabled = False
