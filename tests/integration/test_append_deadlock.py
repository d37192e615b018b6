"""Two writers taking rows of the same streams in opposite orders (two activations at different sites,
each appending the plugin's activation registry too) deadlock inside PostgreSQL, which rolls one back.
The event store commits that batch again: its command ends appended or refused as a conflict (which
the bus decides again), never with the deadlock as an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from application.errors import ConcurrencyError
from infrastructure.eventlog.eventstore import EventStore, create_pool
from tests.integration.test_event_store import new_stream, request


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(database_url)
    store = EventStore(pool, writers=1)
    await store.start()
    yield store
    await store.stop()
    await pool.close()


async def prepared(store: EventStore, *requests):
    """Requests hashed and encoded as append_all prepares them (for a transaction the test holds)."""
    for r in requests:
        r.encoded = [(payload, metadata) for payload, metadata, _ in [await store._encode(e) for e in r.events]]
        r.hashes = [bytes(32)]  # never committed: the other writer's copy of the row
    return list(requests)


async def test_a_batch_the_deadlock_detector_rolled_back_is_committed_again(store: EventStore) -> None:
    x, y = new_stream("registry-x"), new_stream("registry-y")
    async with store.pool.acquire() as conn:
        await conn.execute("SET deadlock_timeout = '20s'")  # the store's session (1 s) finds the cycle first
        other = conn.transaction()
        await other.start()
        await store._insert(conn, await prepared(store, request(y, 0)))  # the other writer holds y's first row

        # This command takes x's first row, then waits for y's.
        command = asyncio.create_task(store.append_all([request(x, 0), request(y, 0)]))
        await asyncio.sleep(0.3)
        # The other writer now waits for x's: a cycle; PostgreSQL rolls the command's batch back.
        await store._insert(conn, await prepared(store, request(x, 0)))
        await other.commit()

    with pytest.raises(ConcurrencyError):  # the other writer went first: a conflict, to be decided again
        await asyncio.wait_for(command, 10)
    assert await store.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = any($1::text[])", [x, y]) == 2
