"""Events the relay cannot publish, and the operator's decisions about them (table relay_unpublishable).

The relay writes here; `/ready` and `charter relay status` read; `charter relay skip` decides. A row with
no outcome is the event the relay is holding at: fan-out waits there until it is skipped or published.
"""

from __future__ import annotations

from typing import Any

import asyncpg

HELD = "held"
SKIPPED = "skipped"
PUBLISHED = "published"

_RECORD = """
INSERT INTO relay_unpublishable (event_id, position, transaction_id, event_type, size, reason)
VALUES ($1::uuid, $2, $3::text::xid8, $4, $5, $6)
ON CONFLICT (event_id) DO UPDATE
    SET attempts = relay_unpublishable.attempts + 1, last_attempt_at = now(), reason = excluded.reason,
        size = excluded.size
RETURNING attempts, outcome
"""

_COLUMNS = """event_id::text, position, transaction_id::text::bigint AS transaction_id, event_type, size, reason,
    attempts, detected_at, last_attempt_at, coalesce(outcome, 'held') AS outcome, decided_at, decided_by"""


async def record(
    conn: asyncpg.Connection, event_id: str, cursor: tuple[int, int], event_type: str, size: int, reason: str
) -> tuple[int, str | None]:
    """Note an attempt that failed for good; returns (attempts so far, outcome decided meanwhile or None)."""
    row = await conn.fetchrow(_RECORD, event_id, cursor[1], str(cursor[0]), event_type, size, reason)
    return row["attempts"], row["outcome"]


async def outcome(conn: asyncpg.Connection, event_id: str) -> str | None:
    return await conn.fetchval("SELECT outcome FROM relay_unpublishable WHERE event_id = $1::uuid", event_id)


async def decide(conn: asyncpg.Connection | asyncpg.Pool, event_id: str, decision: str, by: str) -> bool:
    """Settle a held event (skipped or published); False when it is not held."""
    done = await conn.fetchval(
        "UPDATE relay_unpublishable SET outcome = $2, decided_at = now(), decided_by = $3"
        " WHERE event_id = $1::uuid AND outcome IS NULL RETURNING true",
        event_id, decision, by,
    )
    return bool(done)


async def settle_passed(conn: asyncpg.Connection, cursor: tuple[int, int]) -> int:
    """Held events the stream has since taken (the relay's cursor is past them): mark them published."""
    done = await conn.fetch(
        "UPDATE relay_unpublishable SET outcome = 'published', decided_at = now(), decided_by = 'relay (found in the stream)'"
        " WHERE outcome IS NULL AND (transaction_id, position) <= ($1::text::xid8, $2) RETURNING event_id",
        str(cursor[0]), cursor[1],
    )
    return len(done)


async def skipped_ids(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT event_id::text FROM relay_unpublishable WHERE outcome = 'skipped'")
    return {r[0] for r in rows}


async def listed(conn: asyncpg.Connection | asyncpg.Pool, *, held_only: bool = False) -> list[dict[str, Any]]:
    """Every event the relay could not publish (or only those it holds at), in log order."""
    where = "WHERE outcome IS NULL" if held_only else ""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM relay_unpublishable {where} ORDER BY transaction_id, position")
    return [dict(r) for r in rows]
