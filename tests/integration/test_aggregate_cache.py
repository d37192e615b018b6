"""The aggregate cache against the real event store: a load through the cache is exactly a full read of
the stream, whoever appended to it since (another replica, another repository), a decision taken from a
cached aggregate that lost its race is refused by the append, an aggregate changed but not saved leaves
the cache as it was, and a cache entry that does not match the stored stream is dropped, never served."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from application.errors import ConcurrencyError
from domain.sites.site import STREAM_TYPE, Site, site_uuid
from infrastructure.eventlog.aggregate_cache import MIN_EVENTS, AggregateCache, CachingRepository, Entry
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.repository import AggregateRepository


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(database_url)
    store = EventStore(pool)
    await store.start()
    yield store
    await store.stop()
    await pool.close()


async def long_site(repository: AggregateRepository, renames: int = MIN_EVENTS) -> str:
    """A site whose stream is long enough to be cached (created, then renamed `renames` times)."""
    site_id = f"plant-{uuid.uuid4().hex[:10]}"
    fresh = repository.new(STREAM_TYPE, site_id)
    fresh.aggregate = Site.create(site_id, "Plant 0")
    for n in range(1, renames + 1):
        fresh.aggregate.rename(f"Plant {n}")
    await repository.save(fresh, {}, site_id=site_id)
    return site_id


async def load(repository: AggregateRepository, site_id: str):
    return await repository.load(Site, STREAM_TYPE, site_id, site_uuid(site_id))


async def rename(repository: AggregateRepository, site_id: str, name: str) -> None:
    loaded = await load(repository, site_id)
    loaded.aggregate.rename(name)
    await repository.save(loaded, {}, site_id=site_id)


def same(cached, full) -> None:
    assert (cached.version, cached.last_hash, cached.stream_id) == (full.version, full.last_hash, full.stream_id)
    assert cached.aggregate.__dict__ == full.aggregate.__dict__


async def test_a_cached_load_is_exactly_a_full_read(store: EventStore) -> None:
    cache = AggregateCache(8)
    cached, plain = CachingRepository(store, cache), AggregateRepository(store)
    site_id = await long_site(plain)

    first = await load(cached, site_id)  # a miss: read whole, then cached
    second = await load(cached, site_id)  # a hit: nothing after the cached version

    assert (cache.misses, cache.hits, len(cache)) == (1, 1, 1)
    full = await load(plain, site_id)
    same(first, full)
    same(second, full)
    assert second.aggregate is not first.aggregate


async def test_events_another_replica_appended_are_seen_at_the_next_load(store: EventStore) -> None:
    cached, other_replica = CachingRepository(store, AggregateCache(8)), AggregateRepository(store)
    site_id = await long_site(other_replica)
    await load(cached, site_id)

    await rename(other_replica, site_id, "Renamed elsewhere")
    await rename(other_replica, site_id, "Renamed again")

    found = await load(cached, site_id)
    assert found.aggregate.name == "Renamed again"
    same(found, await load(other_replica, site_id))
    await rename(cached, site_id, "Renamed here")  # its version and hash are the stream's: the append goes in
    assert (await load(other_replica, site_id)).aggregate.name == "Renamed here"


async def test_a_decision_from_a_cached_aggregate_that_lost_its_race_is_refused(store: EventStore) -> None:
    cached = CachingRepository(store, AggregateCache(8))
    site_id = await long_site(cached)
    await load(cached, site_id)
    one, two = await load(cached, site_id), await load(cached, site_id)

    one.aggregate.rename("First")
    await cached.save(one, {}, site_id=site_id)
    two.aggregate.rename("Second")
    with pytest.raises(ConcurrencyError):
        await cached.save(two, {}, site_id=site_id)

    assert (await load(cached, site_id)).aggregate.name == "First"


async def test_an_aggregate_changed_but_not_saved_leaves_the_cache_as_it_was(store: EventStore) -> None:
    cached = CachingRepository(store, AggregateCache(8))
    site_id = await long_site(cached)
    before = await load(cached, site_id)

    before.aggregate.rename("Never saved")
    before.aggregate.metadata["note"] = "changed in place"

    again = await load(cached, site_id)
    assert again.aggregate.name == f"Plant {MIN_EVENTS}" and "note" not in again.aggregate.metadata
    assert again.version == before.version and not again.aggregate.pending_events


async def test_an_entry_that_does_not_match_the_stream_is_dropped_not_served(store: EventStore) -> None:
    cache = AggregateCache(8)
    cached, plain = CachingRepository(store, cache), AggregateRepository(store)
    site_id = await long_site(plain)
    stream_id = f"{STREAM_TYPE}:{site_id}"
    impostor = Site.create(site_id, "From another database")
    impostor.collect_events()

    cache.put(stream_id, Entry(3, b"\x00" * 32, impostor))  # the version exists, its hash is not the stream's
    same(await load(cached, site_id), await load(plain, site_id))
    cache.drop(stream_id)
    cache.put(stream_id, Entry(MIN_EVENTS + 50, b"\x00" * 32, impostor))  # a version the stream never reached
    same(await load(cached, site_id), await load(plain, site_id))
    assert cache.get(stream_id).version == MIN_EVENTS + 1


async def test_short_streams_are_not_kept(store: EventStore) -> None:
    cache = AggregateCache(8)
    cached = CachingRepository(store, cache)
    site_id = await long_site(cached, renames=1)
    assert (await load(cached, site_id)).aggregate.name == "Plant 1"
    assert len(cache) == 0
