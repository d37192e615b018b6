"""The scheduler every replica runs: fires each due tick of each enabled task, executes the runs it
wins, and recovers the runs other replicas left behind.

Exactly one run per tick, however many replicas: all of them compute the same ticks (domain/tasks/
schedule.py) and request each one; the run id and its event ids come from (task, tick), so the first
append wins and the others are answered as duplicates (application/tasks/runs.py). The winner's append
holds `Started` with its lease (start + the task's timeout): it alone executes. A run still `started`
after its lease (the replica died) is timed out by whichever replica's sweep finds it first, and retried
by the task's retry policy; a run requested but never started (its requester died between the two) is
started by a sweep too.

Task definitions come from the tasks read model (`TaskCatalog`), read again every `refresh` seconds:
a pause, resume or change reaches every replica within that plus the projection's lag. Those reads
ask only for what changed past the last position seen, and the read model receives events in commit
order, not position order: a task write that took a lower position but committed after a higher one
appears below the cursor and that read misses it. So every `reload` seconds the whole catalog is read
again and each task that differs from what this replica schedules is redefined (unchanged ones keep
their place): such a change is late by at most `reload`, never lost. Ticks missed
while no replica ran (more than `misfire_grace` late) follow the task's catch-up policy: `skip` none,
`once` the latest, `all` each (at most `max_catch_up`). Ticks before a task was created or resumed are
never caught up.

Firing and housekeeping are two tasks of one loop: the catalog reads and sweeps wait on PostgreSQL without
holding the ticks back. Interval tasks fall due spread over their interval (each task's phase, domain/
tasks/schedule.py), so the firing loop wakes about as often as ticks fall due and fires the few that
are due; each fired tick is handed to a pool of launcher tasks (grown on demand, at most `launchers`),
not to an asyncio task of its own: a launcher takes the next tick as soon as its last request is done.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import msgspec
import structlog

from application.tasks import runs
from application.tasks.ports import ActionRegistry, RunContext, ScheduledTask, TaskCatalog
from application.unit import Repository
from domain.tasks.run import TaskRun, run_id, tick_text
from domain.tasks.schedule import next_tick, ticks_between
from domain.tasks.task import Definition
from infrastructure.eventlog.availability import is_unavailable
from infrastructure.telemetry import metrics, tracing

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class SchedulerSettings:
    tick: float = 0.05  # longest sleep between two looks at the heap
    refresh: float = 1.0  # seconds between reads of the task catalog's changes (and sweeps)
    reload: float = 30.0  # seconds between full reads of the catalog (what a changes read missed)
    misfire_grace: float = 1.0  # a tick later than this is missed (catch-up policy), not just late
    recovery_grace: float = 2.0  # extra seconds past a lease, or after a request, before a sweep steps in
    max_catch_up: int = 100
    resolution: float = 0.002  # the firing loop wakes at most this often: ticks due within it fire together
    launchers: int = 1024  # ticks being requested at once, at most (more wait their turn, in tick order)


@dataclass(slots=True)  # one per scheduled task: no __dict__ for the garbage collector to walk
class Entry:
    task: ScheduledTask
    definition: Definition
    generation: int
    next_fire: datetime | None = None
    last_fired: datetime | None = None
    step: timedelta | None = None  # an interval schedule's interval: its ticks are that far apart


# What happens to a tick this replica decided to request: by default, request it through the store
# (and execute it when won); the benchmark passes a recorder instead.
Launch = Callable[["Scheduler", Entry, datetime, str], Awaitable[None]]


@dataclass
class Stats:
    fired: int = 0
    won: int = 0
    lost: int = 0
    recovered: int = 0
    lateness: list[float] = field(default_factory=list)  # seconds from tick to start (won runs), when kept


class Scheduler:
    def __init__(
        self, repository: Repository, catalog: TaskCatalog, actions: ActionRegistry, *, replica: str,
        settings: SchedulerSettings = SchedulerSettings(), clock: Callable[[], datetime] = utcnow,
        launch: Launch | None = None, keep_lateness: bool = False,
    ) -> None:
        self.repository = repository
        self.catalog = catalog
        self.actions = actions
        self.replica = replica
        self.settings = settings
        self.clock = clock
        self.launch = launch or Scheduler.request
        self.keep_lateness = keep_lateness
        self.entries: dict[str, Entry] = {}
        self.heap: list[tuple[datetime, int, str, int]] = []
        self.cursor = 0
        self.running: dict[str, asyncio.Task[None]] = {}
        self.pending: set[asyncio.Task[None]] = set()
        self.stats = Stats()
        self._seq = itertools.count()
        self._generation = itertools.count(1)
        self._waker: asyncio.Future[None] | None = None
        self._launches: deque[tuple[Entry, datetime, str]] = deque()
        self._launchers: set[asyncio.Task[None]] = set()
        self._idle: list[asyncio.Future[None]] = []  # launchers waiting for a tick, each on its future

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Fire what is due, sleeping until the next tick (at most `tick`); the catalog reads and sweeps
        run beside it."""
        housekeeping = asyncio.create_task(self._housekeep(), name="task-scheduler-refresh")
        try:
            while True:
                self.fire_due(self.clock())
                await self._sleep(self.settings.tick)
        finally:
            housekeeping.cancel()
            await asyncio.gather(housekeeping, return_exceptions=True)

    async def _housekeep(self) -> None:
        next_reload = 0.0
        while True:
            started = time.monotonic()
            try:
                full = started >= next_reload
                await self.refresh(full=full)
                if full:
                    next_reload = time.monotonic() + self.settings.reload
                self.wake()  # what was (re)defined may be due before the firing loop's next look
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = log.warning if is_unavailable(exc) else log.exception
                level("scheduler refresh failed", error=repr(exc))
            await asyncio.sleep(max(0.0, started + self.settings.refresh - time.monotonic()))

    async def _sleep(self, longest: float) -> None:
        """Until the next tick is due (or `longest`, or `wake`): one timer and one future, no task."""
        if self.heap:
            until = (self.heap[0][0] - self.clock()).total_seconds()
            longest = min(longest, max(until, self.settings.resolution))
        loop = asyncio.get_running_loop()
        self._waker = waker = loop.create_future()
        timer = loop.call_later(longest, _resolve, waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._waker = None

    def wake(self) -> None:
        """Have the firing loop look at the heap now."""
        if self._waker is not None:
            _resolve(self._waker)

    async def stop(self) -> None:
        tasks = [*self.running.values(), *self.pending, *self._launchers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what is scheduled ------------------------------------------------------------------------

    async def refresh(self, full: bool = False) -> None:
        """Read the catalog's changes (every page of them); `full`: compare the whole catalog's tasks to
        be scheduled, by the position of their last change, with what is scheduled here, and (re)define
        only the ones that differ (reading just their definitions): unchanged tasks cost a row of two
        columns, and the reload no longer allocates (and hands the garbage collector) every definition."""
        if full:
            await self._reload()
            return
        cursor = self.cursor
        while True:
            cursor, changed = await self.catalog.changed(cursor)
            if not changed:
                break
            now = self.clock()
            for task in changed:
                self.define(task, now)
        self.cursor = max(self.cursor, cursor)

    async def _reload(self) -> None:
        cursor, live = await self.catalog.live()
        now = self.clock()
        for task_id in [t for t in self.entries if t not in live]:  # paused or deleted since
            self.entries.pop(task_id)
        stale = [t for t, position in live.items() if (e := self.entries.get(t)) is None or e.task.position != position]
        for task in await self.catalog.tasks(stale):
            if self.differs(task):
                self.define(task, now)
        self.cursor = max(self.cursor, cursor)

    def differs(self, task: ScheduledTask) -> bool:
        """Whether the catalog's `task` is not what this replica schedules (by position, definition and state)."""
        entry = self.entries.get(task.task_id)
        if task.deleted or not task.enabled:
            return entry is not None
        return entry is None or (entry.task.position, entry.task.definition, entry.task.defined_at) != (
            task.position, task.definition, task.defined_at)

    def define(self, task: ScheduledTask, now: datetime) -> None:
        """(Re)schedule one task as the catalog has it now, firing the missed ticks its policy asks for."""
        old = self.entries.pop(task.task_id, None)
        if task.deleted or not task.enabled:
            return
        definition = msgspec.convert(task.definition, Definition)
        schedule = definition.schedule
        step = timedelta(milliseconds=schedule.every_ms) if schedule.kind == "interval" else None
        entry = Entry(task, definition, next(self._generation), step=step)
        self.entries[task.task_id] = entry
        anchor = datetime.fromisoformat(task.defined_at)
        known = [t for t in (old.last_fired if old else None, _parse(task.last_tick)) if t is not None]
        after = max([anchor, *known])
        task_id = task.task_id
        due = ticks_between(definition.schedule, after, now, self.settings.max_catch_up + 1000, task_id=task_id)
        cutoff = now - timedelta(seconds=self.settings.misfire_grace)
        missed = [t for t in due if t < cutoff]
        late = [t for t in due if t >= cutoff]
        policy = definition.catch_up
        chosen = [] if policy == "skip" else missed[-1:] if policy == "once" else missed[-self.settings.max_catch_up:]
        for tick in chosen:
            self._fire(entry, tick, "catch-up")
        for tick in late:
            self._fire(entry, tick, "schedule")
        self._push(entry, next_tick(definition.schedule, max([after, *due]) if due else max(after, now - timedelta(
            seconds=self.settings.misfire_grace)), task_id=task_id))

    def _push(self, entry: Entry, tick: datetime) -> None:
        entry.next_fire = tick
        heapq.heappush(self.heap, (tick, next(self._seq), entry.task.task_id, entry.generation))

    def fire_due(self, now: datetime) -> None:
        heap = self.heap
        missed = now - timedelta(seconds=self.settings.misfire_grace)
        while heap and heap[0][0] <= now:
            tick, _, task_id, generation = heapq.heappop(heap)
            entry = self.entries.get(task_id)
            if entry is None or entry.generation != generation:
                continue  # paused, deleted or redefined since
            self._fire(entry, tick, "schedule")
            if entry.step is not None and tick >= missed:
                self._push(entry, tick + entry.step)  # what next_tick answers from an interval's tick
            else:
                self._push(entry, next_tick(entry.definition.schedule, max(tick, missed), task_id=task_id))

    def _fire(self, entry: Entry, tick: datetime, trigger: str) -> None:
        """Hand the tick to a launcher: an idle one, else a new one while there are fewer than
        `launchers`, else it waits in line for the first to be done."""
        entry.last_fired = tick if entry.last_fired is None else max(entry.last_fired, tick)
        self.stats.fired += 1
        self._launches.append((entry, tick, trigger))
        if self._idle:
            _resolve(self._idle.pop())
        elif len(self._launchers) < self.settings.launchers:
            task = asyncio.create_task(self._launcher())
            self._launchers.add(task)
            task.add_done_callback(self._launchers.discard)

    async def _launcher(self) -> None:
        """Request ticks one after the other while there are any; then wait to be handed one."""
        launches = self._launches
        loop = asyncio.get_running_loop()
        while True:
            while launches:
                entry, tick, trigger = launches.popleft()
                try:
                    await self.launch(self, entry, tick, trigger)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # request() logs its own; this is a launch that did not
                    log.warning("tick not launched", task_id=entry.task.task_id, tick=tick.isoformat(), error=repr(exc))
            waiter = loop.create_future()
            self._idle.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._idle:  # cancelled while idle
                    self._idle.remove(waiter)

    # -- runs -------------------------------------------------------------------------------------

    async def request(self, entry: Entry, tick: datetime, trigger: str) -> None:
        """Request the run of `tick`; execute it when this replica's append won."""
        task_id, now = entry.task.task_id, self.clock()
        rid = run_id(task_id, tick)
        attributes = {"charter.task.id": task_id, "charter.task.action": entry.definition.action,
                      "charter.task.tick": tick_text(tick), "charter.task.lateness_seconds": (now - tick).total_seconds()}

        def request(traceparent: str | None) -> Awaitable[TaskRun | None]:
            return runs.request_tick(self.repository, task_id, entry.task.site_id, entry.definition, tick, trigger,
                                     self.replica, now, traceparent)

        try:
            run, span = await self._start_traced(rid, trigger, "task request", request, attributes)
        except Exception as exc:
            log.warning("run request failed", task_id=task_id, tick=tick.isoformat(), error=repr(exc))
            return
        if run is None:
            self.stats.lost += 1
            return
        self.stats.won += 1
        lateness = (now - tick).total_seconds()
        metrics.TASK_START_LATENESS.observe(max(lateness, 0.0))
        if self.keep_lateness:
            self.stats.lateness.append(lateness)
        self.execute(run, span)

    async def _start_traced(
        self, rid: str, trigger: str, step: str, start: Callable[[str | None], Awaitable[TaskRun | None]],
        attributes: dict[str, Any] | None = None,
    ) -> tuple[TaskRun | None, Any]:
        """Start run `rid` by `start` (given the traceparent its append stores) inside the `task run` span of
        the run's trace (tracing.start_keyed_span: every replica and attempt of one run join one trace),
        which `_execute` ends; a start that loses (or fails) ends it here."""
        span = tracing.start_keyed_span("task run", rid.encode(), {
            "charter.task.run_id": rid, "charter.task.replica": self.replica, "charter.task.trigger": trigger,
            **(attributes or {})})  # fmt: skip
        try:
            with tracing.using(span), tracing.operation_span(step) as starting:
                run = await start(tracing.current_traceparent())
                tracing.set_attributes(starting, {"charter.outcome": "won" if run is not None else "lost"})
        except BaseException as exc:
            tracing.end(span, {"charter.outcome": "start_failed"}, type(exc).__name__)
            raise
        if run is None:
            tracing.end(span, {"charter.outcome": "lost"})
        else:
            tracing.set_attributes(span, {"charter.task.id": run.task_id, "charter.task.action": run.action,
                                          "charter.task.attempt": run.attempt})
        return run, span

    def execute(self, run: TaskRun, span: Any = None) -> None:
        with tracing.using(span):  # the run's task continues its trace
            task = asyncio.create_task(self._execute(run, span), name=f"task-run-{run.run_id}")
        self.running[run.run_id] = task
        task.add_done_callback(lambda _: self.running.pop(run.run_id, None))

    async def _execute(self, run: TaskRun, span: Any = None) -> None:
        ctx = RunContext(run.run_id, run.task_id, run.site_id, run.attempt, run.timeout)
        started = time.perf_counter()
        error, failure, output = None, None, ""
        try:
            with tracing.operation_span(f"task action {run.action}", {"charter.task.action": run.action,
                                                                      "charter.task.attempt": run.attempt}):
                output = await asyncio.wait_for(self.actions.run(run.action, run.payload, ctx), run.timeout)
        except asyncio.CancelledError:
            # cancelled here (CancelRun, or the process stopping): the log already says, or a sweep will
            tracing.end(span, {"charter.outcome": "cancelled"}, "CancelledError")
            raise
        except TimeoutError:
            error, failure = f"timed out after {run.timeout:g} s", "TimeoutError"
        except Exception as exc:
            error, failure = f"{type(exc).__name__}: {exc}", type(exc).__name__
        duration = (time.perf_counter() - started) * 1000
        outcome = "succeeded" if error is None else "failed"
        metrics.TASK_RUNS.labels(outcome).inc()
        metrics.TASK_RUN_SECONDS.labels(run.action, outcome).observe(duration / 1000)
        recorded = False
        try:
            with tracing.operation_span("task outcome", {"charter.outcome": outcome}) as step:
                recorded = await runs.finish(self.repository, run.run_id, self.replica, run.attempt, duration, error,
                                             output or "", self.clock(), tracing.current_traceparent())
                tracing.set_attributes(step, {"charter.task.recorded": recorded})
        except Exception as exc:  # the lease runs out and a sweep retries it by policy
            log.warning("run outcome not recorded", run_id=run.run_id, error=repr(exc))
        finally:  # (a cancellation while recording ends the run's span too)
            tracing.end(span, {"charter.outcome": outcome, "charter.task.recorded": recorded,
                               "charter.task.duration_ms": duration}, failure)

    async def sweep(self) -> None:
        """Runs that need a hand: time out expired leases, start what waits; stop what was cancelled."""
        for rid in await self.catalog.cancelled(list(self.running)):
            self.cancel(rid)
        for rid in await self.catalog.overdue_runs(self.settings.recovery_grace, 100):
            if rid in self.running:
                continue
            run, span = await self._start_traced(rid, "recovery", "task recover", lambda traceparent, rid=rid: runs.recover(
                self.repository, rid, self.replica, self.clock(), self.settings.recovery_grace, traceparent))
            if run is not None:
                self.stats.recovered += 1
                self.execute(run, span)

    # -- RunExecutor: what the handlers ask of this process ---------------------------------------

    def submit(self, run_id: str) -> None:
        task = asyncio.create_task(self._start_submitted(run_id))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _start_submitted(self, run_id: str) -> None:
        try:
            run, span = await self._start_traced(run_id, "manual", "task start", lambda traceparent: runs.start(
                self.repository, run_id, self.replica, self.clock(), traceparent))
        except Exception as exc:
            log.warning("manual run not started here", run_id=run_id, error=repr(exc))
            return
        if run is not None:
            self.execute(run, span)

    def cancel(self, run_id: str) -> None:
        task = self.running.get(run_id)
        if task is not None:
            task.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
