"""Runs projections: batches of the global order applied with their cursor in one transaction.

Each projection keeps its tables in its own PostgreSQL schema. One runner per projection leads across
all processes (session advisory lock); the others wait as hot standbys. Every batch also takes a
transaction advisory lock, which a rebuild (infrastructure/eventlog/rebuild.py) takes too while it
swaps the freshly built schema in.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from typing import Protocol

import asyncpg
import structlog

from application.ports import StoredEvent
from infrastructure.telemetry import metrics, tracing
from infrastructure.eventlog.availability import DATABASE, is_unavailable
from infrastructure.eventlog.eventstore import NOTIFY_CHANNEL, READ_GLOBAL_ISOLATION, init_connection, read_global

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 5.0  # a server that accepts TCP but never answers must not hold a loop for asyncpg's 60 s


class Projection(Protocol):
    name: str
    version: int
    schema: str
    ddl: str

    async def handle(self, conn: asyncpg.Connection, events: list[StoredEvent]) -> None: ...


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event` at most `seconds`. Unlike `asyncio.wait_for` on Python 3.11, a cancellation
    arriving as the event is set or the time runs out is never swallowed."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    if cancel_requested():
        raise asyncio.CancelledError


def cancel_requested() -> bool:
    """True when the current task is being cancelled (some libraries catch CancelledError and raise
    their own error instead; a retry loop must not mistake that for a failure to retry)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


# A read model's batch commits without waiting for its WAL flush: if the server crashes, the batch is lost
# together with the cursor move (one transaction), and is projected again from the log.
RELAXED_COMMIT = "SET LOCAL synchronous_commit = off"


def lock_key(kind: str, name: str) -> int:
    return zlib.crc32(f"charter:{kind}:{name}".encode())


async def connect(dsn: str) -> asyncpg.Connection:
    """A projector's own connection, with asyncpg's statement cache on: each batch runs the same few
    statements, prepared once. PostgreSQL re-plans a prepared statement whose tables a rebuild swapped
    (they are found again by name through the search_path); when the swap changed a result's columns,
    the statement fails once with InvalidCachedStatementError and the batch is retried (`apply_batch`)."""
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    await init_connection(conn)
    return conn


async def ensure_projection(conn: asyncpg.Connection, projection: Projection) -> None:
    """Create the projection's schema, tables and checkpoint if missing."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("batch", projection.name))
        exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", projection.schema)
        if not exists:
            await conn.execute(f'CREATE SCHEMA "{projection.schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{projection.schema}", public')
            await conn.execute(projection.ddl)
        await conn.execute(
            "INSERT INTO checkpoints (name, version) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            projection.name,
            projection.version,
        )


async def move_checkpoint(conn: asyncpg.Connection, name: str, cursor: tuple[int, int]) -> None:
    """Record that the reader `name` has handled the global order up to `cursor` (transaction_id, position)."""
    await conn.execute(
        "UPDATE checkpoints SET transaction_id = $2::text::xid8, position = $3, updated_at = now() WHERE name = $1",
        name,
        str(cursor[0]),
        cursor[1],
    )


async def notify_projected(conn: asyncpg.Connection, name: str, cursor: tuple[int, int], changed: bool = True) -> None:
    """Tell every process, as the transaction commits, that read model `name` now reflects `cursor`; a batch
    with no event of the projection's streams says `unchanged` (its rows are as they were: answers stand)."""
    payload = f"{name} {cursor[0]} {cursor[1]}" + ("" if changed else " unchanged")
    await conn.execute("SELECT pg_notify($1, $2)", PROJECTED_CHANNEL, payload)


async def checkpoint(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        "SELECT transaction_id::text::bigint AS tx, position, version FROM checkpoints WHERE name = $1", name
    )
    return (row["tx"], row["position"], row["version"]) if row else (0, 0, 0)


async def has_processed(pool: asyncpg.Pool, name: str, position: int) -> bool:
    """True once projection `name` has handled the event at global `position`."""
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events e JOIN checkpoints c ON c.name = $1"
            " WHERE e.position = $2 AND (e.transaction_id, e.position) <= (c.transaction_id, c.position))",
            name,
            position,
        )
    )


async def last_committed(pool: asyncpg.Pool) -> tuple[int, int] | None:
    """The last event of the global order visible now, as a cursor `(transaction_id, position)`."""
    row = await pool.fetchrow(
        "SELECT transaction_id::text::bigint AS tx, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1"
    )
    return (row["tx"], row["position"]) if row else None


async def lag(pool: asyncpg.Pool, name: str, cap: int = 1_000_000) -> int:
    """Events committed beyond the projection's cursor (counted up to `cap`); a projection that never
    ran is behind by the whole log."""
    return await pool.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM events e LEFT JOIN checkpoints c ON c.name = $1"
        " WHERE c.name IS NULL OR (e.transaction_id, e.position) > (c.transaction_id, c.position) LIMIT $2) behind",
        name,
        cap,
    )


async def lag_seconds(pool: asyncpg.Pool, name: str) -> float:
    """Age of the oldest event committed beyond the reader's cursor (0 when it has caught up)."""
    return await pool.fetchval(
        "SELECT coalesce(extract(epoch FROM now() - (SELECT e.recorded_at FROM events e LEFT JOIN checkpoints c ON c.name = $1"
        " WHERE c.name IS NULL OR (e.transaction_id, e.position) > (c.transaction_id, c.position)"
        " ORDER BY e.transaction_id, e.position LIMIT 1)), 0)::float8",
        name,
    )


async def apply_batch(conn: asyncpg.Connection, projection: Projection, batch_size: int) -> int:
    """Handle the next batch and advance the cursor in one transaction; return how many events. A
    batch meeting statements prepared before a rebuild swapped the tables is rolled back and run again
    with fresh ones."""
    try:
        return await _apply_batch(conn, projection, batch_size)
    except asyncpg.InvalidCachedStatementError:
        await conn.reload_schema_state()
        return await _apply_batch(conn, projection, batch_size)


async def _apply_batch(conn: asyncpg.Connection, projection: Projection, batch_size: int) -> int:
    async with conn.transaction(isolation=READ_GLOBAL_ISOLATION):
        await conn.execute(RELAXED_COMMIT)
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("batch", projection.name))
        tx, pos, _ = await checkpoint(conn, projection.name)
        events = await read_global(conn, (tx, pos), batch_size)
        if not events:
            return 0
        traces = (e.metadata.get("traceparent") for e in events) if tracing.enabled() else ()
        with tracing.batch_span(f"project {projection.name}", traces, {"charter.projection": projection.name, "charter.events": len(events)}):
            await projection.handle(conn, events)
            last = events[-1]
            await move_checkpoint(conn, projection.name, (last.transaction_id, last.position))
            streams = getattr(projection, "stream_types", None)
            changed = streams is None or any(e.stream_type in streams for e in events)
            await notify_projected(conn, projection.name, (last.transaction_id, last.position), changed)
    metrics.PROJECTION_EVENTS.labels(projection.name).inc(len(events))
    return len(events)


# Each projector batch notifies `<projection> <transaction_id> <position>` (its new cursor) on this
# channel as it commits: the read cache (infrastructure/eventlog/read_cache.py) drops that read model's answers.
PROJECTED_CHANNEL = "charter_projected"


class Notifier:
    """One LISTEN connection per process and channel (by default the event store's: appends); wakes every
    registered waiter and hands each payload to every listener (`on_message`).

    The connection is re-opened when the server drops it (restart, failover); waiters are woken then, and
    listeners called with None (notifications may have been missed), so nothing committed during the
    outage waits for the poll interval.
    """

    def __init__(self, dsn: str, *, retry_every: float = 0.25, channel: str = NOTIFY_CHANNEL) -> None:
        self.dsn = dsn
        self.retry_every = retry_every
        self.channel = channel
        self._conn: asyncpg.Connection | None = None
        self._events: list[asyncio.Event] = []
        self._listeners: list[Callable[[str | None], None]] = []
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def on_message(self, listener: Callable[[str | None], None]) -> None:
        self._listeners.append(listener)

    def _wake(self, _conn: object = None, _pid: object = None, _channel: object = None, payload: str | None = None) -> None:
        for event in self._events:
            event.set()
        for listener in self._listeners:
            listener(payload)

    async def _listen(self) -> None:
        self._lost.clear()
        conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(self.channel, self._wake)
        self._conn = conn

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._keep_listening(), name="notifier")

    async def _keep_listening(self) -> None:
        while True:
            await self._lost.wait()
            self._conn = None
            while True:
                try:
                    await self._listen()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if cancel_requested():
                        raise asyncio.CancelledError from exc
                    DATABASE.failed(exc, "notifier")
                    await asyncio.sleep(self.retry_every)
            self._wake()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._conn is not None:
            await self._conn.close(timeout=2)
            self._conn = None


class ProjectionRunner:
    """Keeps one projection up to date; woken by NOTIFY, polling as a fallback."""

    def __init__(
        self,
        dsn: str,
        projection: Projection,
        wakeup: asyncio.Event | None = None,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        rebuild_chunk: int = 20_000,
    ) -> None:
        self.dsn = dsn
        self.projection = projection
        self.wakeup = wakeup or asyncio.Event()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.rebuild_chunk = rebuild_chunk
        self.leading = False

    async def run(self) -> None:
        """Run until cancelled, reconnecting after failures."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                if is_unavailable(exc):
                    DATABASE.failed(exc, f"projection {self.projection.name}")
                else:
                    log.error("projection runner failed; restarting", projection=self.projection.name, error=repr(exc))
                self.leading = False
                await asyncio.sleep(self.poll_interval)

    async def _run_once(self) -> None:
        from infrastructure.eventlog.rebuild import rebuild

        conn = await connect(self.dsn)
        try:
            await ensure_projection(conn, self.projection)
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key("leader", self.projection.name)):
                await asyncio.sleep(self.poll_interval)  # another process leads; stand by
            self.leading = True
            log.info("projection leading", projection=self.projection.name)
            _, _, version = await checkpoint(conn, self.projection.name)
            if version != self.projection.version:
                log.info("projection version changed; rebuilding", projection=self.projection.name, was=version)
                await rebuild(self.dsn, [self.projection], chunk=self.rebuild_chunk)
                await conn.reload_schema_state()
            await conn.execute(f'SET search_path TO "{self.projection.schema}", public')
            while True:
                self.wakeup.clear()
                started = time.monotonic()
                handled = await apply_batch(conn, self.projection, self.batch_size)
                DATABASE.succeeded(started)
                if handled < self.batch_size:
                    await wait_or_timeout(self.wakeup, self.poll_interval)
        finally:
            self.leading = False
            await conn.close(timeout=2)
