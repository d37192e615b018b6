"""The never-skip proof: a projector reading the global order sees every committed event exactly once,
however transactions interleave, commit late or are held open.

A position alone is not a safe cursor: a transaction can take a lower position and commit after a
higher one was read. The reader orders by (transaction_id, position) and only reads below the oldest
running transaction, so such an event is either read before the higher one or held back until it can
no longer be overtaken.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from uuid import uuid4

import asyncpg
import pytest

from application.ports import AppendRequest, NewEvent, StoredEvent
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from infrastructure.eventlog.projector import ProjectionRunner, has_processed, lag

POLL = 0.05

INSERT_RAW = """
INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type, payload, hash)
VALUES ($1, $2, 'test', $3, 'Thing.Happened', '{}'::jsonb, $4)
RETURNING position, transaction_id::text::bigint AS tx
"""


class SeenProjection:
    """Records every position it handles; the primary key turns a duplicate delivery into an error."""

    name = "seen"
    version = 1
    schema = "rm_seen"
    ddl = "CREATE TABLE seen (position bigint PRIMARY KEY, event_id uuid NOT NULL, transaction_id bigint NOT NULL)"

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.handled: list[tuple[int, int]] = []

    async def handle(self, conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
        try:
            await conn.executemany(
                "INSERT INTO seen (position, event_id, transaction_id) VALUES ($1, $2, $3)",
                [(e.position, e.event_id, e.transaction_id) for e in events],
            )
        except BaseException as exc:
            self.errors.append(exc)
            raise
        self.handled.extend((e.transaction_id, e.position) for e in events)


class Projector:
    """A running ProjectionRunner of SeenProjection and a pool to look at what it saw."""

    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        self.dsn = dsn
        self.pool = pool
        self.projection = SeenProjection()
        self.runner = ProjectionRunner(dsn, self.projection, poll_interval=POLL)

    async def seen(self) -> list[int]:
        if not await self.pool.fetchval("SELECT to_regclass('rm_seen.seen') IS NOT NULL"):
            return []
        return [r["position"] for r in await self.pool.fetch("SELECT position FROM rm_seen.seen ORDER BY position")]

    async def has_seen(self, position: int) -> bool:
        return position in await self.seen()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {check}")
        await asyncio.sleep(0.02)


async def still_not(check: Callable[[], Awaitable[bool]], polls: int = 8) -> bool:
    """True when `check` stays false while the projector polls `polls` times."""
    for _ in range(polls):
        if await check():
            return False
        await asyncio.sleep(POLL)
    return not await check()


def new_event(stream_id: str, version: int) -> NewEvent:
    return NewEvent(uuid4(), stream_id, "test", version, "Thing.Happened", {"n": version}, {}, datetime.now(timezone.utc))


@pytest.fixture
async def projector(fresh_database_url: str) -> AsyncIterator[Projector]:
    pool = await create_pool(fresh_database_url)
    running = Projector(fresh_database_url, pool)
    task = asyncio.create_task(running.runner.run())
    try:
        await eventually(lambda: asyncio.sleep(0, running.runner.leading))
        yield running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()


@pytest.fixture
async def store(projector: Projector) -> AsyncIterator[EventStore]:
    event_store = EventStore(projector.pool)
    await event_store.start()
    yield event_store
    await event_store.stop()


async def append_one(store: EventStore) -> int:
    stream = f"test:{uuid4().hex}"
    result = await store.append(AppendRequest(stream, 0, [new_event(stream, 1)], GENESIS))
    return result.position


async def warm_up(projector: Projector, store: EventStore) -> int:
    """One event seen end to end: the projector is running and polling."""
    stream = f"test:warm-{uuid4().hex}"
    result = await store.append(AppendRequest(stream, 0, [new_event(stream, 1)], GENESIS))
    await eventually(lambda: projector.has_seen(result.position))
    return result.position


async def insert_raw(conn: asyncpg.Connection, stream: str, version: int = 1) -> tuple[int, int]:
    row = await conn.fetchrow(INSERT_RAW, uuid4(), stream, version, bytes(32))
    return row["position"], row["tx"]


async def all_positions(pool: asyncpg.Pool) -> list[int]:
    return [r["position"] for r in await pool.fetch("SELECT position FROM events ORDER BY position")]


def assert_exactly_once(projector: Projector, seen: list[int], expected: list[int]) -> None:
    assert projector.projection.errors == []
    assert seen == sorted(expected)
    handled_positions = [p for _, p in projector.projection.handled]
    assert sorted(handled_positions) == sorted(expected), "an event was handled twice or not at all"
    assert projector.projection.handled == sorted(projector.projection.handled), "not in (transaction_id, position) order"


class TestNeverSkip:
    async def test_an_event_with_a_lower_position_committed_late_is_seen_exactly_once(
        self, projector: Projector, store: EventStore
    ) -> None:
        """B took its transaction id before A, A inserts the lower position, B the higher and commits first."""
        warm = await warm_up(projector, store)
        a = await asyncpg.connect(projector.dsn)
        b = await asyncpg.connect(projector.dsn)
        try:
            await b.execute("BEGIN")
            await b.execute("SELECT events_write_begin()")  # an event writer taking its id early says so first
            tx_b = int(await b.fetchval("SELECT pg_current_xact_id()::text"))
            await a.execute("BEGIN")
            low, tx_a = await insert_raw(a, f"test:a-{uuid4().hex}")
            high, _ = await insert_raw(b, f"test:b-{uuid4().hex}")
            assert low < high and tx_b < tx_a
            await b.execute("COMMIT")

            await eventually(lambda: projector.has_seen(high))
            assert not await projector.has_seen(low)

            await a.execute("COMMIT")
            await eventually(lambda: projector.has_seen(low))
        finally:
            await a.close()
            await b.close()

        assert_exactly_once(projector, await projector.seen(), [warm, low, high])
        assert await has_processed(projector.pool, "seen", low)
        assert await has_processed(projector.pool, "seen", high)

    async def test_a_later_commit_is_held_back_until_an_older_open_transaction_ends(
        self, projector: Projector, store: EventStore
    ) -> None:
        """A takes the lower position and stays open; an append through the store commits the higher one."""
        warm = await warm_up(projector, store)
        a = await asyncpg.connect(projector.dsn)
        try:
            await a.execute("BEGIN")
            low, _ = await insert_raw(a, f"test:a-{uuid4().hex}")
            high = await append_one(store)
            assert low < high

            # The higher event sorts after A's (its transaction is younger), so it must wait for A.
            assert await still_not(lambda: projector.has_seen(high))
            assert not await projector.has_seen(low)
            assert not await has_processed(projector.pool, "seen", high)

            await a.execute("COMMIT")
            await eventually(lambda: projector.has_seen(high))
        finally:
            await a.close()

        assert_exactly_once(projector, await projector.seen(), [warm, low, high])
        order = [p for _, p in projector.projection.handled]
        assert order.index(low) < order.index(high), "A's event sorts first: its transaction is older"

    async def test_a_rolled_back_transaction_leaves_no_gap_and_blocks_nothing(
        self, projector: Projector, store: EventStore
    ) -> None:
        warm = await warm_up(projector, store)
        a = await asyncpg.connect(projector.dsn)
        try:
            await a.execute("BEGIN")
            aborted, _ = await insert_raw(a, f"test:a-{uuid4().hex}")
            high = await append_one(store)
            await a.execute("ROLLBACK")

            await eventually(lambda: projector.has_seen(high))
        finally:
            await a.close()

        assert aborted not in await all_positions(projector.pool)
        assert_exactly_once(projector, await projector.seen(), [warm, high])

    async def test_five_hundred_events_from_twenty_interleaved_writers_arrive_exactly_once(
        self, projector: Projector, store: EventStore
    ) -> None:
        rng = random.Random(20240501)
        per_writer = 25

        async def raw_writer(index: int) -> None:
            """Own transaction per event; some take their id early, some stay open for a while."""
            conn = await asyncpg.connect(projector.dsn)
            stream = f"test:raw-{index}-{uuid4().hex[:8]}"
            try:
                for version in range(1, per_writer + 1):
                    async with conn.transaction():
                        if rng.random() < 0.3:  # an event writer taking its id early says so first
                            await conn.execute("SELECT events_write_begin()")
                            await conn.fetchval("SELECT pg_current_xact_id()")
                            await asyncio.sleep(rng.random() * 0.01)
                        await insert_raw(conn, stream, version)
                        if rng.random() < 0.4:
                            await asyncio.sleep(rng.random() * 0.02)
            finally:
                await conn.close()

        async def store_writer(index: int) -> None:
            stream = f"test:store-{index}-{uuid4().hex[:8]}"
            for version in range(1, per_writer + 1):
                await store.append(AppendRequest(stream, version - 1, [new_event(stream, version)], GENESIS))
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() * 0.005)

        writing = asyncio.gather(*(raw_writer(i) for i in range(10)), *(store_writer(i) for i in range(10)))

        async def bystander(index: int) -> None:
            """Transactions writing elsewhere, held open a while: they must neither block nor confuse."""
            conn = await asyncpg.connect(projector.dsn)
            try:
                while not writing.done():
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET updated_at = now()",
                            f"bystander-{index}",
                        )
                        await asyncio.sleep(rng.random() * 0.05)
            finally:
                await conn.close()

        await asyncio.gather(writing, *(bystander(i) for i in range(3)))
        positions = await all_positions(projector.pool)
        assert len(positions) == 500

        await eventually(lambda: asyncio.sleep(0, len(projector.projection.handled) >= 500), timeout=15)
        assert await still_not(lambda: asyncio.sleep(0, len(projector.projection.handled) > 500), polls=4)

        assert_exactly_once(projector, await projector.seen(), positions)
        assert all([await has_processed(projector.pool, "seen", p) for p in positions])


class TestLag:
    async def test_lag_is_zero_once_caught_up_even_when_positions_committed_out_of_order(
        self, projector: Projector, store: EventStore
    ) -> None:
        await warm_up(projector, store)
        a = await asyncpg.connect(projector.dsn)
        b = await asyncpg.connect(projector.dsn)
        try:
            await b.execute("BEGIN")
            await b.execute("SELECT events_write_begin()")
            await b.fetchval("SELECT pg_current_xact_id()")
            await a.execute("BEGIN")
            low, _ = await insert_raw(a, f"test:a-{uuid4().hex}")
            high, _ = await insert_raw(b, f"test:b-{uuid4().hex}")
            await b.execute("COMMIT")
            await a.execute("COMMIT")
        finally:
            await a.close()
            await b.close()

        await eventually(lambda: projector.has_seen(low))
        assert await has_processed(projector.pool, "seen", high)

        assert await lag(projector.pool, "seen") == 0

    async def test_lag_counts_committed_events_not_yet_handled(self, fresh_database_url: str) -> None:
        pool = await create_pool(fresh_database_url)
        store = EventStore(pool)
        try:
            for _ in range(3):
                await append_one(store)
            await pool.execute("INSERT INTO checkpoints (name) VALUES ('idle')")

            assert await lag(pool, "idle") == 3
        finally:
            await store.stop()
            await pool.close()


@pytest.mark.parametrize("query", ["read_global", "outbox"])
async def test_reading_after_the_cursor_walks_the_index_instead_of_sorting_the_backlog(fresh_database_url: str, query: str) -> None:
    """Ordering by the selected `transaction_id::text::bigint` instead of the column once made every read
    fetch and sort the whole backlog after the cursor (50 ms per 1,000 events with 20,000 behind).
    With sorting priced out, the plan must still have no Sort node: the index gives the order."""
    from infrastructure.eventlog.eventstore import _READ_GLOBAL, HORIZON
    from infrastructure.stream.relay import READ_OUTBOX

    sql = {"read_global": _READ_GLOBAL, "outbox": READ_OUTBOX}[query]
    conn = await asyncpg.connect(fresh_database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_sort = off")
            horizon = await conn.fetchval(HORIZON)
            plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, "0", 0, 1000, horizon)
    finally:
        await conn.close()

    def nodes(node: dict) -> list[str]:
        return [node["Node Type"], *(n for child in node.get("Plans", []) for n in nodes(child))]

    found = nodes(json.loads(plan)[0]["Plan"])
    assert "Sort" not in found, found
    assert any("Index" in n for n in found), found


class TestWhoHoldsReadersBack:
    async def test_a_long_transaction_writing_elsewhere_holds_no_reader_back(
        self, projector: Projector, store: EventStore
    ) -> None:
        """Only transactions writing events matter: a read model or checkpoint update kept open (a slow
        projector, an admin's session) must not delay the other readers."""
        await warm_up(projector, store)
        other = await asyncpg.connect(projector.dsn)
        try:
            await other.execute("BEGIN")
            await other.execute("CREATE TEMP TABLE busy (n int)")
            await other.execute("INSERT INTO checkpoints (name) VALUES ('someone-else')")
            assert await other.fetchval("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")

            position = await append_one(store)
            await eventually(lambda: projector.has_seen(position), timeout=5)
            await other.execute("ROLLBACK")
        finally:
            await other.close()

    async def test_inserting_events_after_writing_elsewhere_is_refused(self, projector: Projector) -> None:
        conn = await asyncpg.connect(projector.dsn)
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO checkpoints (name) VALUES ('first')")
                with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError, match="insert into events before"):
                    await insert_raw(conn, f"test:late-{uuid4().hex}")
        finally:
            await conn.close()
        assert await projector.pool.fetchval("SELECT count(*) FROM checkpoints WHERE name = 'first'") == 0

    async def test_events_write_begin_lets_a_writer_write_elsewhere_first_and_holds_readers_at_its_id(
        self, projector: Projector, store: EventStore
    ) -> None:
        warm = await warm_up(projector, store)
        conn = await asyncpg.connect(projector.dsn)
        try:
            await conn.execute("BEGIN")
            await conn.execute("SELECT events_write_begin()")
            await conn.execute("INSERT INTO checkpoints (name) VALUES ('before-the-events')")
            high = await append_one(store)  # a younger transaction commits first
            assert await still_not(lambda: projector.has_seen(high), polls=4), "read past an open event writer"
            low, _ = await insert_raw(conn, f"test:begun-{uuid4().hex}")
            await conn.execute("COMMIT")
        finally:
            await conn.close()

        await eventually(lambda: projector.has_seen(high))
        assert_exactly_once(projector, await projector.seen(), [warm, low, high])
        order = [p for _, p in projector.projection.handled]
        assert order.index(low) < order.index(high)

    async def test_events_write_begin_after_another_write_is_refused(self, projector: Projector) -> None:
        conn = await asyncpg.connect(projector.dsn)
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO checkpoints (name) VALUES ('first')")
                with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError, match="must come before"):
                    await conn.execute("SELECT events_write_begin()")
        finally:
            await conn.close()
