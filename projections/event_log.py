"""Queries of the event log itself: what happened, where, by whom, when (the auditors' view)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from application.envelope import EventEnvelope, passed_through
from infrastructure.eventlog.eventstore import PUBLIC_PAYLOAD
from infrastructure.eventlog.upcasting import current_json
from projections.sql import Where, fetch_page, order_by


@dataclass(frozen=True)
class EventQuery:
    site_id: str | None = None
    stream_id: str | None = None
    stream_type: str | None = None
    event_type: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_position: int | None = None
    visible_sites: set[str] | None = None  # None: every site and the global events
    with_global: bool = False  # with visible_sites: the global events as well (a user's own stream)


def _where(q: EventQuery) -> Where:
    where = Where()
    if q.site_id == "global":
        where.add("site_id IS NULL")
    elif q.site_id:
        where.add("site_id = {}", q.site_id)
    if q.stream_id:
        where.add("stream_id = {}", q.stream_id)
    if q.stream_type:
        where.add("stream_type = {}", q.stream_type)
    if q.event_type:
        where.add("event_type = ANY({}::text[])", [t.strip() for t in q.event_type.split(",") if t.strip()])
    if q.actor:
        where.add("metadata->>'actor' = {}", q.actor)
    if q.since:
        where.add("recorded_at >= {}", q.since)
    if q.until:
        where.add("recorded_at < {}", q.until)
    if q.after_position is not None:
        where.add("position > {}", q.after_position)
    if q.visible_sites is not None:
        either = "site_id IS NULL OR " if q.with_global else ""
        where.add(f"({either}site_id = ANY({{}}::text[]))", sorted(q.visible_sites))
    return where


# The envelope's fields in its order, payload (credentials withheld) and metadata as stored JSON text.
_COLUMNS = (
    "event_id::text AS event_id, position, transaction_id::text::bigint AS transaction_id, stream_id, stream_type,"
    " stream_version, event_type, schema_version, site_id, metadata->>'actor' AS actor, recorded_at,"
    f" {PUBLIC_PAYLOAD}::text AS payload, metadata::text AS metadata"
)


async def list_events(
    pool: asyncpg.Pool, q: EventQuery, skip: int, limit: int, descending: bool = False
) -> tuple[int, list[EventEnvelope]]:
    """The total of events matching `q` and one page of them, as the envelopes JetStream carries."""
    total, rows = await fetch_page(
        pool, columns=_COLUMNS, source="events", where=_where(q), order=order_by("position", descending),
        skip=skip, limit=limit,
    )
    return total, [envelope(row) for row in rows]


def envelope(row: dict[str, Any]) -> EventEnvelope:
    """One row of `_COLUMNS` as the envelope (its payload and metadata passed through as stored; the
    payload of an event older than its current schema version upcast first)."""
    row["schema_version"], row["payload"] = current_json(
        row["event_type"], row["schema_version"], row["payload"], row["stream_id"], row["stream_version"], row["position"]
    )
    return passed_through(**row)


class EventLogQueries:
    """The event log's questions as one object over the pool (what the HTTP controllers are given)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, q: EventQuery, skip: int, limit: int, descending: bool = False) -> tuple[int, list[EventEnvelope]]:
        return await list_events(self.pool, q, skip, limit, descending)
