"""Appends to several streams at once (a user's stream with the admin registry or an e-mail reservation):
all or none, also when the group committer batches them with other commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from application.errors import ConcurrencyError
from infrastructure.eventlog.eventstore import EventStore, create_pool
from tests.integration.test_event_store import new_stream, request, rows_of


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(database_url)
    event_store = EventStore(pool)
    await event_store.start()
    yield event_store
    await event_store.stop()
    await pool.close()


async def test_appends_to_every_stream_in_one_transaction(store: EventStore) -> None:
    user, registry = new_stream("user"), new_stream("registry")

    results = await store.append_all([request(user, 0, 2), request(registry, 0)])

    assert [(r.stream_id, r.version) for r in results] == [(user, 2), (registry, 1)]
    rows = await rows_of(store.pool, user, registry)
    assert len(rows) == 3 and len({r["tx"] for r in rows}) == 1


async def test_a_clash_on_a_linked_stream_writes_nothing_and_names_that_stream(store: EventStore) -> None:
    user, registry = new_stream("user"), new_stream("registry")
    await store.append(request(registry, 0))

    with pytest.raises(ConcurrencyError) as raised:
        await store.append_all([request(user, 0), request(registry, 0)])

    assert raised.value.details["stream_id"] == registry
    assert raised.value.details["current_version"] == 1
    assert [r["stream_id"] for r in await rows_of(store.pool, user, registry)] == [registry]


async def test_two_commands_reading_one_registry_version_cannot_both_commit(store: EventStore) -> None:
    registry = new_stream("registry")
    await store.append(request(registry, 0))
    users = [new_stream("user") for _ in range(8)]

    outcomes = await asyncio.gather(
        *(store.append_all([request(u, 0), request(registry, 1)]) for u in users), return_exceptions=True
    )

    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, ConcurrencyError) for o in outcomes if isinstance(o, BaseException))
    written = {r["stream_id"] for r in await rows_of(store.pool, *users)}
    assert len(written) == 1  # only the winner's user stream: the losers wrote nothing at all
