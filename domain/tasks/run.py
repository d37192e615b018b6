"""The TaskRun aggregate: one stream per run (`task-run:<run_id>`), from its request to its outcome.

A scheduled run's id is derived from its task and tick (`run_id`), and every event id of a run stream is
derived from (run, version, event type) (`TaskRun.event_id_for`): two replicas that decide the same tick
append the very same events, and the store answers the second append as a duplicate, never a second
run. Of two replicas that both try to start a run, the first `Started` wins the stream version; the other
learns it lost. `Started` carries the lease (`lease_until`: start + the task's timeout); a run still
`started` past its lease is `TimedOut` by any replica and `Retried` while attempts are left."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.tasks.errors import RunFinished, RunNotStartable

STREAM_TYPE = "task-run"
TRIGGERS = ("schedule", "catch-up", "manual")
FINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
MAX_OUTPUT = 2000  # characters of an output summary or error kept in the event


def tick_text(tick: datetime) -> str:
    """A tick as the run id and the events spell it (UTC, milliseconds)."""
    return tick.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def run_id(task_id: str, tick: datetime) -> str:
    """The one run of `task_id` at `tick`, the same in every replica."""
    return str(uuid5(NAMESPACE_URL, f"charter:task-run:{task_id}@{tick_text(tick)}"))


def run_uuid(run: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:task-run:{run}")


def summary(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT else text[: MAX_OUTPUT - 1] + "…"


def _at(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")


class TaskRun(Aggregate):
    """One run of a task: what it runs (a copy of the task's action and payload when requested),
    its attempts and its outcome."""

    @staticmethod
    def create_id(run_id: str) -> UUID:
        return run_uuid(run_id)

    def event_id_for(self, version: int, event_type: str) -> UUID:
        """The id of this run's event at `version`: equal decisions make equal events."""
        return uuid5(self.id, f"{version}:{event_type}")

    class Requested(Aggregate.Created):
        run_id: str
        task_id: str
        site_id: str | None
        trigger: str
        tick: str | None
        actor: str
        action: str
        payload: dict[str, Any]
        timeout: float
        max_attempts: int
        backoff: float
        reason: str = ""  # the default replays runs recorded before a manual run took a reason

    @event(Requested)
    def __init__(
        self, run_id: str, task_id: str, site_id: str | None, trigger: str, tick: str | None, actor: str,
        action: str, payload: dict[str, Any], timeout: float, max_attempts: int, backoff: float, reason: str = "",
    ) -> None:
        """`reason`: why a manual run was asked for ("" for scheduled ticks)."""
        self.run_id = run_id
        self.task_id = task_id
        self.site_id = site_id
        self.trigger = trigger
        self.tick = tick
        self.action = action
        self.payload = payload
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.status = "requested"
        self.attempt = 0
        self.replica: str | None = None
        self.lease_until: datetime | None = None
        self.not_before: datetime | None = None
        self.started_at: datetime | None = None

    # -- checks -----------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def check_open(self) -> None:
        if self.finished:
            raise RunFinished(f"run {self.run_id} already {self.status}", run_id=self.run_id, status=self.status)

    def startable(self, now: datetime) -> bool:
        """Waiting to start: requested, or retrying with its backoff over."""
        return self.status == "requested" or (
            self.status == "retrying" and (self.not_before is None or self.not_before <= now)
        )

    def lease_expired(self, now: datetime) -> bool:
        return self.status == "started" and self.lease_until is not None and self.lease_until < now

    # -- commands ---------------------------------------------------------------------------------

    def start(self, replica: str, now: datetime) -> None:
        if not self.startable(now):
            raise RunNotStartable(f"run {self.run_id} is {self.status}", run_id=self.run_id, status=self.status)
        lease = now + timedelta(seconds=self.timeout)
        self._started(run_id=self.run_id, task_id=self.task_id, attempt=self.attempt + 1, replica=replica, started_at=_at(now),
                      lease_until=_at(lease))

    @event("Started")
    def _started(self, run_id: str, task_id: str, attempt: int, replica: str, started_at: str, lease_until: str) -> None:
        self.status = "started"
        self.attempt = attempt
        self.replica = replica
        self.started_at = datetime.fromisoformat(started_at)
        self.lease_until = datetime.fromisoformat(lease_until)
        self.not_before = None

    def succeed(self, duration_ms: float, output: str) -> None:
        self._check_running()
        self._succeeded(run_id=self.run_id, task_id=self.task_id, attempt=self.attempt, duration_ms=round(duration_ms, 3),
                        output=summary(output))

    @event("Succeeded")
    def _succeeded(self, run_id: str, task_id: str, attempt: int, duration_ms: float, output: str) -> None:
        self.status = "succeeded"

    def fail(self, duration_ms: float, error: str, now: datetime) -> None:
        """Failed; retried after the backoff while attempts are left."""
        self._check_running()
        self._failed(run_id=self.run_id, task_id=self.task_id, attempt=self.attempt, duration_ms=round(duration_ms, 3), error=summary(error))
        self._retry_if_left(now)

    @event("Failed")
    def _failed(self, run_id: str, task_id: str, attempt: int, duration_ms: float, error: str) -> None:
        self.status = "failed"

    def time_out(self, now: datetime) -> None:
        """The lease ran out (the replica died or the action hung); retried while attempts are left."""
        if not self.lease_expired(now):
            raise RunNotStartable(f"run {self.run_id} holds its lease", run_id=self.run_id, status=self.status)
        self._timed_out(run_id=self.run_id, task_id=self.task_id, attempt=self.attempt, replica=self.replica or "",
                        lease_until=_at(self.lease_until))
        self._retry_if_left(now)

    @event("TimedOut")
    def _timed_out(self, run_id: str, task_id: str, attempt: int, replica: str, lease_until: str) -> None:
        self.status = "timed_out"

    def _retry_if_left(self, now: datetime) -> None:
        if self.attempt < self.max_attempts:
            wait = min(self.backoff * 2 ** max(self.attempt - 1, 0), 3600.0)
            self._retried(run_id=self.run_id, task_id=self.task_id, attempt=self.attempt + 1, not_before=_at(now + timedelta(seconds=wait)))

    @event("Retried")
    def _retried(self, run_id: str, task_id: str, attempt: int, not_before: str) -> None:
        self.status = "retrying"
        self.not_before = datetime.fromisoformat(not_before)

    def cancel(self, actor: str, reason: str | None = None) -> None:
        self.check_open()
        self._cancelled(run_id=self.run_id, task_id=self.task_id, actor=actor, reason=reason or "")

    @event("Cancelled")
    def _cancelled(self, run_id: str, task_id: str, actor: str, reason: str) -> None:
        self.status = "cancelled"

    def _check_running(self) -> None:
        if self.status != "started":
            self.check_open()
            raise RunNotStartable(f"run {self.run_id} is {self.status}", run_id=self.run_id, status=self.status)
