"""The replay phases of `charter bench rebuild`: the raw-scan floor, then rebuilds (each projection
alone, then all of them in one pass), each over the whole log of the same database."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from infrastructure.eventlog.eventstore import EVENT_COLUMNS, init_connection
from infrastructure.eventlog.rebuild import rebuild

SCAN_PAGE = 10_000  # rows per page of the raw scan

# The floor: the log read in global order, keyset-paged as a rebuild reads it, jsonb decoded by msgspec
# (the codec every Charter connection uses), nothing built from the rows.
SCAN = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2::bigint)"
    " ORDER BY events.transaction_id, events.position LIMIT $3"
)


@dataclass
class Replay:
    key: str
    name: str
    method: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def raw_scan(dsn: str, page: int, tick: Callable[[int], None]) -> Replay:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        cursor, done, started = ("0", 0), 0, time.perf_counter()
        while rows := await conn.fetch(SCAN, cursor[0], cursor[1], page):
            done += len(rows)
            cursor = (str(rows[-1]["transaction_id"]), rows[-1]["position"])
            tick(done)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return Replay("raw_scan", "raw scan (floor)", f"asyncpg keyset pages of {page}, msgspec jsonb decoding", done, seconds)


async def rebuild_phase(
    dsn: str, projections: Sequence[Any], chunk: int, tick: Callable[[int], None], key: str | None = None,
    log_events: int = 0,
) -> Replay:
    """One rebuild, timed; its rate is of the log it brings the read models up to (`log_events`), as the
    raw scan's is, though it reads only the events of the stream types its projections fold."""
    names = ", ".join(p.name for p in projections)
    started = time.perf_counter()
    done = await rebuild(dsn, projections, lambda done, total: tick(done), chunk=chunk, fresh=True)
    seconds = time.perf_counter() - started
    return Replay(
        key or f"rebuild_{projections[0].name}",
        f"rebuild {names}",
        f"charter projections rebuild {' '.join(p.name for p in projections)}: chunks of {chunk}, swap at the end"
        f" ({done:,} events of its stream types read)",
        max(done, log_events),
        seconds,
    )
