"""What the tasks feature needs from the outside: the actions a task may target, and a way to have a
run started in this process at once (a manual run, before any scheduler sweep would find it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RunContext:
    """What an action knows about the run it serves."""

    run_id: str
    task_id: str
    site_id: str | None
    attempt: int
    timeout: float


class Action(Protocol):
    """One thing a task can do. `schema`: the JSON Schema its payload must satisfy. Returns a short
    summary of what it did (kept in `TaskRun.Succeeded`); raises to fail the attempt."""

    name: str
    schema: dict[str, Any]

    async def __call__(self, payload: dict[str, Any], run: RunContext) -> str: ...


class ActionRegistry(Protocol):
    """The actions known to this process: the built-ins, and later the tools of enabled plugins."""

    def names(self) -> list[str]: ...

    def check(self, action: str, payload: dict[str, Any], site_id: str | None = None) -> None:
        """Raises TaskInvalid naming `action` (unknown), `payload.<field>` (against the action's schema) or
        `site_id` (an action that runs for a site, on a task that has none)."""
        ...

    async def run(self, action: str, payload: dict[str, Any], run: RunContext) -> str: ...


class RunExecutor(Protocol):
    """The scheduler of this process, as the handlers see it."""

    def submit(self, run_id: str) -> None:
        """Start this run here soon (it may lose the start to another replica: then nothing happens)."""
        ...

    def cancel(self, run_id: str) -> None:
        """Stop executing this run here, if this process executes it."""
        ...


@dataclass(frozen=True)
class ScheduledTask:
    """A task as the scheduler sees it (from the tasks read model). `last_tick`: the latest tick any
    replica requested a run for (ISO text, or None); `defined_at`: when the task was created or last
    resumed or changed schedule, ticks before it are never caught up; `position`: the log position of
    the task's last write that changed its definition or state (a different one means a change)."""

    task_id: str
    site_id: str | None
    definition: dict[str, Any]
    enabled: bool
    deleted: bool
    defined_at: str
    last_tick: str | None = None
    position: int = 0


class TaskCatalog(Protocol):
    """What every replica's scheduler reads: task definitions as they change, and runs needing a hand."""

    async def changed(self, after: int) -> tuple[int, list[ScheduledTask]]:
        """Tasks whose definition or state changed after cursor `after`, and the new cursor."""
        ...

    async def live(self) -> tuple[int, dict[str, int]]:
        """Every task to schedule (enabled, not deleted) with its `position`, and the cursor past every
        task read: what a full read compares to what a replica schedules, without reading the
        definitions that did not change."""
        ...

    async def tasks(self, task_ids: list[str]) -> list[ScheduledTask]:
        """These tasks as the catalog has them now (those it has)."""
        ...

    async def overdue_runs(self, grace: float, limit: int) -> list[str]:
        """Runs `started` past their lease, `retrying` past their backoff, or `requested` and not started
        for `grace` seconds (their requester died first)."""
        ...

    async def cancelled(self, run_ids: list[str]) -> list[str]:
        """Those of `run_ids` cancelled since they started."""
        ...
