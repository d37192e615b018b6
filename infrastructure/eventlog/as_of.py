"""The log read as of a point (application/as_of.py's `History`): a stream's prefix up to a position
or an instant, replayed into its aggregate, and the last settled position that "now" resolves to."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import asyncpg
import structlog

from application.as_of import AsOf, Replayed
from application.ports import StoredEvent
from application.sites.report_state import SiteState
from infrastructure.eventlog.global_order import EVENT_COLUMNS, record
from infrastructure.eventlog.repository import reconstruct
from infrastructure.eventlog.upcasting import current
from infrastructure.sites.snapshots import SiteSnapshots

log = structlog.get_logger(__name__)
A = TypeVar("A")

_STREAM_UNTIL = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND ($2::bigint IS NULL OR position <= $2)"
    " ORDER BY stream_version"
)
# Transactions inserting events now (they hold ROW EXCLUSIVE on `events`), by virtual transaction id.
_WRITERS = """
SELECT virtualtransaction AS vxid FROM pg_locks
WHERE locktype = 'relation' AND relation = 'events'::regclass AND mode = 'RowExclusiveLock' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND pid <> pg_backend_pid()
"""
_WRITERS_AMONG = _WRITERS + " AND virtualtransaction = any($1::text[])"


async def read_stream_until(
    pool: asyncpg.Pool, stream_id: str, position: int | None = None, recorded_at: datetime | None = None
) -> list[StoredEvent]:
    """The stream as it stood at a point of the log: its events from the first up to (not past) the first
    one beyond global `position` or recorded after `recorded_at`. A prefix: a replay never skips an event
    of its stream, even where clocks went backwards between two commands."""
    events: list[StoredEvent] = []
    for row in await pool.fetch(_STREAM_UNTIL, stream_id, position):
        event = current(record(row))  # the report reads payloads: each at its type's current schema
        if recorded_at is not None and event.recorded_at > recorded_at:
            break
        events.append(event)
    return events


async def settled_position(pool: asyncpg.Pool, timeout: float = 5.0) -> int:
    """The highest position visible now, once every transaction that was inserting events when it was
    read has ended. A writer takes its lock on `events` before it draws a position (migration 0004), so
    any transaction that could still commit an event at or below that position holds the lock when the
    holders are listed; waiting them out makes the position settled: what lies at or below it is final."""
    async with pool.acquire() as conn:
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        waiting = [r["vxid"] for r in await conn.fetch(_WRITERS)]
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
            waiting = [r["vxid"] for r in await conn.fetch(_WRITERS_AMONG, waiting)]
    if waiting:
        log.warning("event writers still running past the wait", position=head, writers=len(waiting))
    return head


class StoreHistory:
    """`History` over the event store's pool (`SiteHistory` too: a site's stream folded for a report,
    from a snapshot every `snapshot_every` versions; 0: none)."""

    def __init__(self, pool: asyncpg.Pool, snapshot_every: int = 500) -> None:
        self.pool = pool
        self.sites = SiteSnapshots(pool, snapshot_every)

    async def site_state(self, site_id: str, as_of: AsOf, since: AsOf | None) -> tuple[SiteState, list[StoredEvent]]:
        return await self.sites.site_state(site_id, as_of, since)

    async def replay(self, aggregate_cls: type[A], stream_type: str, key: str, aggregate_id: UUID,
                     as_of: AsOf) -> Replayed[A]:
        events = await read_stream_until(self.pool, f"{stream_type}:{key}", as_of.position, as_of.instant)
        return Replayed(reconstruct(aggregate_cls, aggregate_id, events), events)

    async def settled_position(self) -> int:
        return await settled_position(self.pool)
