"""The never-skip global order: every event once, in an order no later commit can overtake.

Projectors and the relay read the log with `read_global` (or its `HORIZON` and `NEVER_SKIP` parts) after
a cursor `(transaction_id, position)` they keep in their checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from application.ports import StoredEvent
from infrastructure.eventlog.upcasting import current

EVENT_COLUMNS = (
    "position, transaction_id::text::bigint AS transaction_id, event_id, stream_id, stream_type, stream_version,"
    " event_type, schema_version, payload, metadata, site_id, recorded_at, hash"
)

# How far the global order can be read without ever skipping an event: below the oldest transaction
# still writing events. A transaction can take a lower position and commit after a higher one was read;
# reading only below every transaction that may still add events means such an event is read before
# anything that could overtake it. Event writers are the in-progress transactions holding a ROW
# EXCLUSIVE lock on `events`, which they take before they get a transaction id (migration 0004 makes
# inserting events the first write of a transaction), so a writer whose id is in this statement's
# snapshot is still in pg_locks when they are read, or has committed before the next statement's
# snapshot. Unlike the snapshot's xmin, transactions writing only elsewhere (projectors' read models,
# checkpoints) hold nobody back. The read itself must be a later statement with a newer snapshot: in a
# transaction, that means READ COMMITTED (READ_GLOBAL_ISOLATION), whatever the server's default.
READ_GLOBAL_ISOLATION = "read_committed"
HORIZON = """
SELECT LEAST(
    pg_snapshot_xmax(s),
    (SELECT min(x) FROM pg_snapshot_xip(s) AS x
     WHERE x::text::bigint % 4294967296 IN (
         SELECT t.transactionid::text::bigint
         FROM pg_locks r JOIN pg_locks t ON t.pid = r.pid
         WHERE r.locktype = 'relation' AND r.relation = 'events'::regclass AND r.mode = 'RowExclusiveLock'
           AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted))
)::text
FROM pg_current_snapshot() AS s
"""

# $1, $2: the cursor (transaction_id as text, position); $3: the most rows to read; $4: the horizon.
# The ORDER BY names the table's columns: a bare `transaction_id` would be the selected
# `transaction_id::text::bigint`, which no index covers (every row after the cursor would be read and
# sorted, not just `$3`).
NEVER_SKIP = """
WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2::bigint)
  AND events.transaction_id < $4::text::xid8
ORDER BY events.transaction_id, events.position
LIMIT $3
"""

_READ_GLOBAL = f"SELECT {EVENT_COLUMNS} FROM events {NEVER_SKIP}"
# The same, of some stream types only ($5): a rebuild reads what its projections fold, nothing else.
_OF_TYPES = "  AND events.stream_type = ANY($5::text[])\nORDER BY"
_READ_GLOBAL_OF = "SELECT " + EVENT_COLUMNS + " FROM events " + NEVER_SKIP.replace("ORDER BY", _OF_TYPES)


def record(row: asyncpg.Record) -> StoredEvent:
    """A row of EVENT_COLUMNS as stored (what hash chains are verified on); consumers read `current`."""
    return StoredEvent(*row)  # EVENT_COLUMNS are StoredEvent's fields, in order (no dict per event)


async def read_global(
    conn: asyncpg.Connection, after: tuple[int, int], limit: int, stream_types: Sequence[str] | None = None
) -> list[StoredEvent]:
    """Events committed after the cursor `(transaction_id, position)`, in the never-skip global order, each
    at the current schema version of its type (infrastructure/eventlog/upcasting.py); of `stream_types`
    only when given (the others are passed over: a cursor at the last event read is past them too)."""
    horizon = await conn.fetchval(HORIZON)
    if stream_types is None:
        rows = await conn.fetch(_READ_GLOBAL, str(after[0]), after[1], limit, horizon)
    else:
        rows = await conn.fetch(_READ_GLOBAL_OF, str(after[0]), after[1], limit, horizon, list(stream_types))
    return [current(record(r)) for r in rows]
