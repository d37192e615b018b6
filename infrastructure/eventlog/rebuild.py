"""Rebuilds: replay the log into fresh `<schema>__build` schemas, chunk by chunk, then swap them in.

Each chunk of `chunk` events is one transaction that writes the build tables and moves the build's own
cursor (checkpoint `<name>__build`), so a rebuild that is interrupted (the process killed, the server
restarted) resumes where its last chunk committed, and no transaction stays open for the whole log.
Several projections rebuild in one pass over the log: each chunk is read once and handed to each of
them (a projection resumed further ahead skips what it already has). Only the events of the stream
types the projections fold are read (all of them when a projection does not declare its types). Once a read comes back short of a
full chunk the builds are caught up: one last transaction takes every projection's batch lock (live
runners wait), replays the tail, drops the live schemas, renames the build schemas in their place and
sets the live cursors to the builds'. Until that commit the live read models are untouched; a rebuild
that fails leaves them as they were, and its build schemas to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from application.ports import StoredEvent
from infrastructure.eventlog.eventstore import READ_GLOBAL_ISOLATION, read_global
from infrastructure.eventlog.projector import RELAXED_COMMIT, Projection, connect, lock_key, notify_projected

log = structlog.get_logger(__name__)

BUILD = "__build"
Progress = Callable[[int, int], None]  # (events replayed, events to replay in this run)
Cursor = tuple[int, int]


class RebuildBusy(Exception):
    """Another process is rebuilding one of these projections."""


@dataclass
class Build:
    projection: Projection
    cursor: Cursor
    cache: Any = None  # rows kept between chunks, for projections that offer a cache (BatchProjection)

    @property
    def name(self) -> str:
        return self.projection.name + BUILD

    @property
    def schema(self) -> str:
        return self.projection.schema + BUILD


async def _set_cursor(conn: asyncpg.Connection, name: str, cursor: Cursor, version: int) -> None:
    await conn.execute(
        "INSERT INTO checkpoints (name, transaction_id, position, version) VALUES ($1, $2::text::xid8, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id,"
        " position = excluded.position, version = excluded.version, updated_at = now()",
        name,
        str(cursor[0]),
        cursor[1],
        version,
    )


async def _start(conn: asyncpg.Connection, projection: Projection, fresh: bool) -> Build:
    """The build of `projection` to go on with: the one left by an earlier run (same version, schema
    and cursor still there), or a new one from the start of the log."""
    build = Build(projection, (0, 0), projection.cache() if hasattr(projection, "cache") else None)
    row = await conn.fetchrow(
        "SELECT transaction_id::text::bigint AS tx, position, version FROM checkpoints WHERE name = $1", build.name
    )
    exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", build.schema)
    if row and exists and row["version"] == projection.version and not fresh:
        build.cursor = (row["tx"], row["position"])
        log.info("resuming rebuild", projection=projection.name, cursor=build.cursor)
        return build
    if build.cache is not None and hasattr(projection, "folded"):
        # Its tables are created empty below: what it never wrote is not there (the pipeline keeps
        # the cache of a projection that folds apart from writing; see _Pipeline.fold).
        build.cache.fresh = True
    async with conn.transaction():
        await conn.execute(f'DROP SCHEMA IF EXISTS "{build.schema}" CASCADE')
        await conn.execute(f'CREATE SCHEMA "{build.schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{build.schema}", public')
        await conn.execute(projection.ddl)
        await _set_cursor(conn, build.name, build.cursor, projection.version)
    return build


@dataclass
class _Folded:
    """One build's share of a chunk: the changes folded ahead of the write (projections that fold apart
    from writing, BatchProjection), or the events to hand to `handle` inside the write."""

    build: Build
    changes: Any = None
    events: list[StoredEvent] | None = None


class _Pipeline:
    """Chunks folded in this process while PostgreSQL writes the chunk before: the fold of chunk n+1
    (Python) overlaps the write and commit of chunk n (the server). Chunks commit in order, each in its
    own transaction with the build cursors; a fold that must load rows a build wrote earlier waits for
    the write in flight first, so it reads them as committed."""

    def __init__(self, conn: asyncpg.Connection, builds: Sequence[Build]) -> None:
        self.conn, self.builds = conn, builds
        self.writing: asyncio.Task[None] | None = None

    async def settle(self) -> None:
        """Wait for the chunk being written (its failure is raised here)."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def cancel(self) -> None:
        if self.writing is not None:
            self.writing.cancel()
            await asyncio.gather(self.writing, return_exceptions=True)
            self.writing = None

    async def fold(self, events: list[StoredEvent]) -> list[_Folded]:
        folded = []
        for build in self.builds:
            todo = [e for e in events if (e.transaction_id, e.position) > build.cursor]
            if not todo:
                continue
            folds = getattr(build.projection, "folded", None)
            if build.cache is None or folds is None:
                folded.append(_Folded(build, events=todo))
            else:
                folded.append(_Folded(build, changes=await folds(todo, build.cache, self._loader(build))))
            build.cursor = (events[-1].transaction_id, events[-1].position)
        return folded

    def _loader(self, build: Build) -> Callable[[Any], Any]:
        async def load(missing: Any) -> Any:
            from projections.batch_store import load as load_rows

            await self.settle()
            async with self.conn.transaction():
                await self.conn.execute(f'SET LOCAL search_path TO "{build.schema}", public')
                return await load_rows(self.conn, build.projection.tables, missing)  # type: ignore[attr-defined]

        return load

    async def write(self, folded: list[_Folded], last: Cursor) -> None:
        """Start writing a folded chunk once the one before it is committed."""
        await self.settle()
        self.writing = asyncio.create_task(self._commit(folded, last))

    async def _commit(self, folded: list[_Folded], last: Cursor) -> None:
        async with self.conn.transaction():
            await self.conn.execute(RELAXED_COMMIT)
            await self.apply(folded, last)

    async def apply(self, folded: list[_Folded], last: Cursor) -> None:
        """Write a folded chunk and move the build cursors to `last`, in the caller's transaction."""
        from projections.batch_store import write

        for item in folded:
            build = item.build
            await self.conn.execute(f'SET LOCAL search_path TO "{build.schema}", public')
            if item.events is not None:
                await build.projection.handle(self.conn, item.events)
            elif item.changes:
                await write(self.conn, build.projection.tables, item.changes)  # type: ignore[attr-defined]
            await _set_cursor(self.conn, build.name, last, build.projection.version)


async def _swap(conn: asyncpg.Connection, build: Build) -> None:
    live = build.projection
    await conn.execute(f'DROP SCHEMA IF EXISTS "{live.schema}" CASCADE')
    await conn.execute(f'ALTER SCHEMA "{build.schema}" RENAME TO "{live.schema}"')
    await _set_cursor(conn, live.name, build.cursor, live.version)
    await conn.execute("DELETE FROM checkpoints WHERE name = $1", build.name)
    await notify_projected(conn, live.name, build.cursor)  # the read caches drop the old tables' answers


async def rebuild(
    dsn: str,
    projections: Sequence[Projection],
    progress: Progress | None = None,
    *,
    chunk: int = 20_000,
    fresh: bool = False,
) -> int:
    """Rebuild `projections` in one pass over the log and swap them in; return the events replayed by
    this run. `fresh` starts over instead of resuming an interrupted build."""
    chunk = max(1, chunk)
    with _no_cycle_collection():
        return await _rebuild(dsn, projections, progress, chunk, fresh)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """A rebuild allocates and holds many objects (two chunks of events, the row cache): each pass of
    the cycle collector walks them all again, which measured as half of a rebuild's CPU. Events and rows
    are plain acyclic data, freed by reference counting as soon as a chunk is done, so the collector is
    paused for the rebuild (in a serving process, cycles made meanwhile wait until it ends)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _folded_types(projections: Sequence[Projection]) -> list[str] | None:
    """The stream types the projections fold, when each says (`stream_types`): the rebuild reads only
    those events. None (every event) when one of them does not say."""
    declared = [getattr(p, "stream_types", None) for p in projections]
    if any(types is None for types in declared):
        return None
    return sorted(set().union(*declared))


async def _rebuild(
    dsn: str, projections: Sequence[Projection], progress: Progress | None, chunk: int, fresh: bool
) -> int:
    conn = await connect(dsn)
    try:
        keys = sorted({lock_key("rebuild", p.name) for p in projections})
        for key in keys:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                raise RebuildBusy("another process is rebuilding " + ", ".join(p.name for p in projections))
        builds = [await _start(conn, p, fresh) for p in projections]
        cursor = min(b.cursor for b in builds)
        types = _folded_types(projections)
        total = await conn.fetchval(
            "SELECT count(*) FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2)"
            " AND ($3::text[] IS NULL OR stream_type = ANY($3::text[]))",
            str(cursor[0]), cursor[1], types,
        )  # fmt: skip
        done, started = 0, time.monotonic()

        def advanced(events: list[StoredEvent]) -> Cursor:
            """The cursor after `events`, counted and shown as done (committed, or being written)."""
            nonlocal cursor, done
            cursor = (events[-1].transaction_id, events[-1].position)
            done += len(events)
            if progress:
                progress(done, max(total, done))
            return cursor

        # Chunk by chunk, each committed with the build cursors; the next chunk is read on a second
        # connection and folded while this one is written, so the server's work and ours overlap.
        reader = await connect(dsn)
        pipeline = _Pipeline(conn, builds)
        try:
            ahead = asyncio.create_task(read_global(reader, cursor, chunk, types))
            while True:
                events = await ahead
                if len(events) == chunk:
                    ahead = asyncio.create_task(
                        read_global(reader, (events[-1].transaction_id, events[-1].position), chunk, types)
                    )
                if events:
                    folded = await pipeline.fold(events)
                    await pipeline.write(folded, advanced(events))
                if len(events) < chunk:
                    break
            await pipeline.settle()
        finally:
            await pipeline.cancel()
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
            await reader.close()
        async with conn.transaction(isolation=READ_GLOBAL_ISOLATION):  # the tail and the swap, atomically
            for key in sorted({lock_key("batch", p.name) for p in projections}):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            while events := await read_global(conn, cursor, chunk, types):
                folded = await pipeline.fold(events)
                await pipeline.apply(folded, advanced(events))
            for build in builds:
                build.cursor = max(build.cursor, cursor)
                await _swap(conn, build)
        seconds = time.monotonic() - started
        log.info(
            "projections rebuilt",
            projections=[p.name for p in projections],
            events=done,
            seconds=round(seconds, 2),
            events_per_second=round(done / seconds) if seconds else None,
        )
        return done
    finally:
        await conn.close()
