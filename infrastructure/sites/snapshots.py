"""A site's stream folded for a report as of a point, from the latest snapshot that point includes.

The rule: a snapshot (table `site_snapshots`, migration 0012) holds the fold of versions 1..v of one
site's stream (application/sites/report_state.py). It serves a point `as_of` when every event it folded
is included in `as_of` (its highest position <= the point's position, or its latest recorded time <=
the point's instant): then versions 1..v are exactly the first v events the prefix replay would read,
and only the events after v are read and folded. Before use, the event at version v must still carry
the hash the snapshot recorded (another database, a restored log: the snapshot is ignored and the stream
read whole). A snapshot whose `state_version` is not the code's is never read.

Snapshots are taken lazily, by the replays themselves: folding past every `every`-th version (the
`report_snapshot_every` setting; 0 turns snapshots off, reads included), the state there is kept and
inserted after the replay (`ON CONFLICT DO NOTHING`: two replicas taking the same one agree, since a
prefix of the append-only log never changes). A snapshot never changes a report: it stands for events
that are final, folded by the same code.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from application.as_of import AsOf
from application.ports import StoredEvent
from application.sites.report_state import STATE_VERSION, SiteState, decode, encode
from domain.sites.site import STREAM_TYPE, Site, site_uuid
from infrastructure.eventlog.global_order import EVENT_COLUMNS, record
from infrastructure.eventlog.repository import reconstruct
from infrastructure.eventlog.upcasting import current

log = structlog.get_logger(__name__)

_LATEST = (
    "SELECT stream_version, position, recorded_at, hash, state FROM site_snapshots"
    " WHERE stream_id = $1 AND state_version = $2 AND ({}) ORDER BY stream_version DESC LIMIT 1"
)
_LATEST_AT_POSITION = _LATEST.format("position <= $3")
_LATEST_AT_INSTANT = _LATEST.format("recorded_at <= $3")
_SAVE = (
    "INSERT INTO site_snapshots (stream_id, state_version, stream_version, position, recorded_at, hash, state)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
)
# The stream from version $2 on, and before it only the events after `since` (all of them when $3):
# $4 a position, $5 an instant (NULL: no such bound). $6: the point's position (NULL: an instant).
_READ = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1"
    " AND (stream_version >= $2 OR $3::bool OR position > $4::bigint OR recorded_at > $5::timestamptz)"
    " AND ($6::bigint IS NULL OR position <= $6) ORDER BY stream_version"
)


def _replay(site: Site | None, events: list[StoredEvent]) -> Site | None:
    return reconstruct(Site, site_uuid(events[0].stream_id.split(":", 1)[1]), events, site)


async def _latest(conn: asyncpg.Connection, stream_id: str, as_of: AsOf) -> SiteState | None:
    if as_of.position is not None:
        row = await conn.fetchrow(_LATEST_AT_POSITION, stream_id, STATE_VERSION, as_of.position)
    else:
        row = await conn.fetchrow(_LATEST_AT_INSTANT, stream_id, STATE_VERSION, as_of.instant)
    if row is None:
        return None
    return decode(row["state"], row["stream_version"], row["position"], row["recorded_at"], row["hash"])


async def _read(conn: asyncpg.Connection, stream_id: str, start: int, as_of: AsOf,
                since: AsOf | None) -> list[StoredEvent]:
    return [current(record(r)) for r in await conn.fetch(
        _READ, stream_id, start, since is None, since.position if since else None,
        since.instant if since else None, as_of.position,
    )]  # fmt: skip


class SiteSnapshots:
    """The site's report state as of a point over the pool, snapshotting every `every` versions."""

    def __init__(self, pool: asyncpg.Pool, every: int = 500) -> None:
        self.pool = pool
        self.every = max(0, every)

    async def site_state(self, site_id: str, as_of: AsOf, since: AsOf | None) -> tuple[SiteState, list[StoredEvent]]:
        stream_id = f"{STREAM_TYPE}:{site_id}"
        async with self.pool.acquire() as conn:
            state = await _latest(conn, stream_id, as_of) if self.every else None
            rows = await _read(conn, stream_id, state.version if state else 1, as_of, since)
            if state is not None and not any(e.stream_version == state.version and e.hash == state.hash for e in rows):
                log.warning("site snapshot does not match the log: ignored", stream_id=stream_id, version=state.version)
                state, rows = None, await _read(conn, stream_id, 1, as_of, since)
        state = state or SiteState()
        taken = self._fold(state, [e for e in rows if e.stream_version > state.version], as_of)
        if taken:
            await self._save(stream_id, taken)
        # The changes: the events of the prefix after `since` (read past the prefix: an instant's replay
        # learns where it stops only from the first event recorded after it).
        changes = [e for e in rows if e.stream_version <= state.version and (since is None or since.after(e))]
        return state, changes

    def _fold(self, state: SiteState, events: list[StoredEvent], as_of: AsOf) -> list[tuple]:
        """Fold the events after the state's version up to the point (stopping at the first one it does
        not include: a prefix), keeping the state at every `every`-th version for a snapshot."""
        taken, chunk = [], []
        for e in events:
            if not as_of.includes(e):
                break
            chunk.append(e)
            if self.every and e.stream_version % self.every == 0:
                state.fold(chunk, _replay)
                chunk = []
                taken.append((state.version, state.position, state.recorded_at, state.hash, encode(state)))
        state.fold(chunk, _replay)
        return taken

    async def _save(self, stream_id: str, taken: list[tuple[int, int, datetime, bytes, bytes]]) -> None:
        try:
            await self.pool.executemany(_SAVE, [(stream_id, STATE_VERSION, *t) for t in taken])
        except (asyncpg.PostgresError, OSError) as exc:  # a read-only replica, a lost connection: no snapshot
            log.warning("site snapshot not saved", stream_id=stream_id, error=type(exc).__name__)
