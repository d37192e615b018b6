"""The PostgreSQL event store: optimistic concurrency, group commit, idempotency, append-only, hash chain."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import pytest
from cryptography.fernet import Fernet

from application.commands import InstallPlugin, RestartPlugin
from application.context import CommandContext
from application.errors import ConcurrencyError, IdempotencyKeyReused
from application.ports import AppendRequest, AppendResult, Idempotency, NewEvent
from infrastructure.eventlog.eventstore import GENESIS, NOTIFY_CHANNEL, EventStore, create_pool, event_hash
from infrastructure.settings import Settings
from interfaces.runtime import start_runtime, stop_runtime
from tests.conftest import DatabaseFactory


def new_stream(label: str = "thing") -> str:
    return f"test:{label}-{uuid4().hex[:12]}"


def new_event(stream_id: str, version: int, payload: dict[str, Any] | None = None, **meta: Any) -> NewEvent:
    return NewEvent(
        event_id=uuid4(),
        stream_id=stream_id,
        stream_type="test",
        stream_version=version,
        event_type="Thing.Happened",
        payload=payload if payload is not None else {"n": version},
        metadata=meta,
        recorded_at=datetime.now(timezone.utc),
    )


def request(
    stream_id: str,
    expected: int,
    count: int = 1,
    prev_hash: bytes = GENESIS,
    idempotency: Idempotency | None = None,
    **meta: Any,
) -> AppendRequest:
    events = [new_event(stream_id, expected + i, **meta) for i in range(1, count + 1)]
    return AppendRequest(stream_id, expected, events, prev_hash, idempotency)


async def rows_of(pool: asyncpg.Pool, *stream_ids: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT position, transaction_id::text::bigint AS tx, event_id, stream_id, stream_version"
        " FROM events WHERE stream_id = any($1::text[]) ORDER BY position",
        list(stream_ids),
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(database_url)
    event_store = EventStore(pool)
    await event_store.start()
    yield event_store
    await event_store.stop()
    await pool.close()


@pytest.fixture
async def own_store(fresh_database_url: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(fresh_database_url)
    event_store = EventStore(pool)
    await event_store.start()
    yield event_store
    await event_store.stop()
    await pool.close()


@pytest.fixture(scope="module")
async def append_only_database(databases: DatabaseFactory) -> str:
    """A database of this module's own: if the trigger were missing, the shared log would be wiped."""
    return await databases.create("append_only")


@pytest.fixture
async def append_only_store(append_only_database: str) -> AsyncIterator[EventStore]:
    pool = await create_pool(append_only_database)
    event_store = EventStore(pool)
    await event_store.start()
    yield event_store
    await event_store.stop()
    await pool.close()


class TestOptimisticConcurrency:
    async def test_exactly_one_of_twenty_racing_writers_wins(self, store: EventStore) -> None:
        stream = new_stream("race")
        racers = [request(stream, expected=0, count=2) for _ in range(20)]

        outcomes = await asyncio.gather(*(store.append(r) for r in racers), return_exceptions=True)

        winners = [(r, o) for r, o in zip(racers, outcomes) if isinstance(o, AppendResult)]
        losers = [(r, o) for r, o in zip(racers, outcomes) if not isinstance(o, AppendResult)]
        assert len(winners) == 1
        assert len(losers) == 19
        assert all(isinstance(o, ConcurrencyError) for _, o in losers), [repr(o) for _, o in losers]
        winner, result = winners[0]
        stored = await store.read_stream(stream)
        assert [e.event_id for e in stored] == [e.event_id for e in winner.events]
        assert result.version == 2 and result.position == stored[-1].position
        loser_ids = [e.event_id for r, _ in losers for e in r.events]
        assert await store.pool.fetchval("SELECT count(*) FROM events WHERE event_id = any($1::uuid[])", loser_ids) == 0

    async def test_losers_are_told_the_current_version(self, store: EventStore) -> None:
        stream = new_stream("race")
        racers = [request(stream, expected=0) for _ in range(20)]

        outcomes = await asyncio.gather(*(store.append(r) for r in racers), return_exceptions=True)

        errors = [o for o in outcomes if isinstance(o, ConcurrencyError)]
        assert len(errors) == 19
        assert {(e.details["expected_version"], e.details["current_version"]) for e in errors} == {(0, 1)}

    async def test_a_stale_writer_is_refused_with_the_current_version(self, store: EventStore) -> None:
        stream = new_stream()
        first = await store.append(request(stream, expected=0, count=3))

        with pytest.raises(ConcurrencyError) as refused:
            await store.append(request(stream, expected=1, prev_hash=GENESIS))

        assert refused.value.code == "VERSION_CONFLICT"
        assert refused.value.details == {"stream_id": stream, "expected_version": 1, "current_version": 3}
        assert [e.stream_version for e in await store.read_stream(stream)] == [1, 2, 3]
        assert first.version == 3

    async def test_an_expected_version_ahead_of_the_stream_is_refused(self, store: EventStore) -> None:
        stream = new_stream()
        await store.append(request(stream, expected=0))

        with pytest.raises(ConcurrencyError) as refused:
            await store.append(request(stream, expected=4))

        assert refused.value.details["current_version"] == 1
        assert [e.stream_version for e in await store.read_stream(stream)] == [1]

    async def test_a_conflict_inside_a_batch_fails_only_that_command(self, store: EventStore) -> None:
        stale = new_stream("stale")
        await store.append(request(stale, expected=0))
        fresh = [new_stream("batch") for _ in range(50)]
        requests = [request(s, expected=0, count=2) for s in fresh]
        requests.insert(25, request(stale, expected=0))

        outcomes = await asyncio.gather(*(store.append(r) for r in requests), return_exceptions=True)

        conflict = outcomes.pop(25)
        assert isinstance(conflict, ConcurrencyError)
        assert conflict.details["current_version"] == 1
        assert all(isinstance(o, AppendResult) and not o.duplicate for o in outcomes), outcomes
        rows = await rows_of(store.pool, *fresh)
        assert len(rows) == 100
        assert {r["position"] for r in rows} >= {o.position for o in outcomes}
        assert len({r["tx"] for r in rows}) < 50, "the commands were not group-committed, the test proves nothing"
        assert [e.stream_version for e in await store.read_stream(stale)] == [1]


class TestGroupCommit:
    async def test_concurrent_appends_share_transactions(self, store: EventStore) -> None:
        streams = [new_stream("group") for _ in range(200)]

        results = await asyncio.gather(*(store.append(request(s, expected=0)) for s in streams))

        rows = await rows_of(store.pool, *streams)
        assert len(rows) == 200
        assert sorted(r.position for r in results) == [r["position"] for r in rows]
        assert len({r["tx"] for r in rows}) < 200

    async def test_a_lone_append_on_an_idle_store_commits_at_once_in_its_own_transaction(self, store: EventStore) -> None:
        stream = new_stream("lone")

        result = await asyncio.wait_for(store.append(request(stream, expected=0)), timeout=5)

        (row,) = await rows_of(store.pool, stream)
        assert result.position == row["position"]
        same_tx = await store.pool.fetchval(
            "SELECT count(*) FROM events WHERE transaction_id = $1::text::xid8", str(row["tx"])
        )
        assert same_tx == 1

    async def test_all_events_of_one_command_are_written_in_one_transaction(self, store: EventStore) -> None:
        stream = new_stream()

        result = await store.append(request(stream, expected=0, count=5))

        rows = await rows_of(store.pool, stream)
        assert [r["stream_version"] for r in rows] == [1, 2, 3, 4, 5]
        assert len({r["tx"] for r in rows}) == 1
        assert result.version == 5 and result.position == rows[-1]["position"]


class TestIdempotency:
    async def test_a_retry_with_the_same_key_appends_once_and_answers_the_first_result(self, store: EventStore) -> None:
        stream = new_stream()
        key = Idempotency(f"key-{uuid4()}", "fingerprint-a")
        req = request(stream, expected=0, idempotency=key)

        first = await store.append(req)
        again = await store.append(req)

        assert first.duplicate is False
        assert again.duplicate is True
        assert (again.stream_id, again.version, again.position) == (first.stream_id, first.version, first.position)
        assert len(await store.read_stream(stream)) == 1
        assert await store.idempotent_result(key) == AppendResult(stream, 1, first.position, duplicate=True)

    async def test_concurrent_identical_commands_with_one_key_append_once(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A client retrying while its first request is still in flight gets the first result, not a 409."""
        runtime = await start_runtime(
            Settings(database_url=database_url, run_projectors=False, data_dir=tmp_path,
                     secret_key=Fernet.generate_key().decode())
        )
        try:
            plugin_id = f"idem-{uuid4().hex[:10]}"
            manifest = {"id": plugin_id, "name": "Idempotent", "version": "1.0.0"}
            await runtime.application.execute(InstallPlugin(manifest=manifest, source={}), CommandContext())
            ctx = CommandContext(idempotency_key=f"key-{uuid4()}")
            command = RestartPlugin(plugin_id=plugin_id, reason="retry")

            outcomes = await asyncio.gather(
                *(runtime.application.execute(command, ctx) for _ in range(2)), return_exceptions=True
            )

            assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
            assert sorted(o.duplicate for o in outcomes) == [False, True]
            assert outcomes[0].position == outcomes[1].position
            events = await runtime.store.read_stream(f"plugin:{plugin_id}")
            assert [e.event_type for e in events] == ["Plugin.Installed", "Plugin.Restarted"]
        finally:
            await stop_runtime(runtime)

    async def test_reusing_a_key_for_another_request_is_refused(self, store: EventStore) -> None:
        key = f"key-{uuid4()}"
        await store.append(request(new_stream(), expected=0, idempotency=Idempotency(key, "fingerprint-a")))
        other = new_stream()

        with pytest.raises(IdempotencyKeyReused) as refused:
            await store.append(request(other, expected=0, idempotency=Idempotency(key, "fingerprint-b")))

        assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
        assert await store.read_stream(other) == []
        with pytest.raises(IdempotencyKeyReused):
            await store.idempotent_result(Idempotency(key, "fingerprint-b"))

    async def test_a_reused_key_inside_a_batch_fails_only_that_command(self, store: EventStore) -> None:
        key = f"key-{uuid4()}"
        await store.append(request(new_stream(), expected=0, idempotency=Idempotency(key, "fingerprint-a")))
        streams = [new_stream("batch") for _ in range(30)]
        requests = [request(s, expected=0) for s in streams]
        requests[10].idempotency = Idempotency(key, "fingerprint-b")

        outcomes = await asyncio.gather(*(store.append(r) for r in requests), return_exceptions=True)

        assert isinstance(outcomes[10], IdempotencyKeyReused)
        others = outcomes[:10] + outcomes[11:]
        assert all(isinstance(o, AppendResult) for o in others), [repr(o) for o in others]
        assert len(await rows_of(store.pool, *streams)) == 29

    async def test_each_reused_key_in_a_batch_is_refused_naming_its_own_key(self, store: EventStore) -> None:
        keys = [f"key-{uuid4()}" for _ in range(2)]
        for key in keys:
            await store.append(request(new_stream(), expected=0, idempotency=Idempotency(key, "fingerprint-a")))
        requests = [request(new_stream(), expected=0, idempotency=Idempotency(k, "fingerprint-b")) for k in keys]
        requests += [request(new_stream(), expected=0) for _ in range(10)]

        outcomes = await asyncio.gather(*(store.append(r) for r in requests), return_exceptions=True)

        assert [type(o) for o in outcomes[:2]] == [IdempotencyKeyReused, IdempotencyKeyReused]
        assert [o.details["key"] for o in outcomes[:2]] == keys
        assert all(isinstance(o, AppendResult) for o in outcomes[2:]), outcomes[2:]

    async def test_one_key_used_by_two_different_commands_at_once_does_not_drop_one_silently(
        self, store: EventStore
    ) -> None:
        key = f"key-{uuid4()}"
        a, b = new_stream(), new_stream()
        requests = [
            request(a, expected=0, idempotency=Idempotency(key, "fingerprint-a")),
            request(b, expected=0, idempotency=Idempotency(key, "fingerprint-b")),
        ]

        outcomes = await asyncio.gather(*(store.append(r) for r in requests), return_exceptions=True)

        written = [o for o in outcomes if isinstance(o, AppendResult) and not o.duplicate]
        refused = [o for o in outcomes if isinstance(o, IdempotencyKeyReused)]
        assert (len(written), len(refused)) == (1, 1), outcomes

    async def test_re_appending_the_very_same_events_is_a_duplicate_without_new_rows(self, store: EventStore) -> None:
        stream = new_stream()
        first_request = request(stream, expected=0, count=3)
        first = await store.append(first_request)

        again = await store.append(
            AppendRequest(stream, 0, list(first_request.events), GENESIS)
        )

        assert again.duplicate is True
        assert (again.version, again.position) == (3, first.position)
        assert len(await rows_of(store.pool, stream)) == 3


class TestAppendOnly:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE events SET payload = '{\"n\": 666}'",
            "UPDATE events SET event_type = 'Thing.Forged' WHERE stream_version = 1",
            "DELETE FROM events",
            "DELETE FROM events WHERE stream_version = 2",
            "TRUNCATE events",
            "TRUNCATE events CASCADE",
        ],
    )
    async def test_the_database_refuses_to_change_the_log(self, append_only_store: EventStore, statement: str) -> None:
        store = append_only_store
        stream = new_stream()
        await store.append(request(stream, expected=0, count=3))
        before = await store.pool.fetch("SELECT * FROM events ORDER BY position")

        with pytest.raises(asyncpg.PostgresError) as refused:
            await store.pool.execute(statement)

        assert "append-only" in str(refused.value)
        assert await store.pool.fetch("SELECT * FROM events ORDER BY position") == before
        assert [e.stream_version for e in await store.read_stream(stream)] == [1, 2, 3]


class TestHashChain:
    async def append_three(self, store: EventStore, stream: str) -> None:
        prev, version = GENESIS, 0
        for count in (1, 2, 1):
            await store.append(request(stream, expected=version, count=count, prev_hash=prev))
            stored = await store.read_stream(stream)
            prev, version = stored[-1].hash, stored[-1].stream_version

    async def test_each_event_chains_to_the_previous_event_of_its_stream(self, store: EventStore) -> None:
        stream = new_stream("chain")
        await self.append_three(store, stream)

        stored = await store.read_stream(stream)

        assert await store.verify_stream(stream) is True
        prev = GENESIS
        for event in stored:
            assert event.hash == event_hash(prev, event)
            prev = event.hash
        assert len(stored) == 4 and len({e.hash for e in stored}) == 4

    @pytest.mark.parametrize(
        "tamper",
        [
            {"payload": {"n": 666}},
            {"event_type": "Thing.Forged"},
            {"stream_version": 7},
            {"event_id": UUID(int=1)},
        ],
        ids=["payload", "event_type", "stream_version", "event_id"],
    )
    async def test_an_altered_event_breaks_the_chain(self, store: EventStore, tamper: dict[str, Any]) -> None:
        stream = new_stream("chain")
        await self.append_three(store, stream)
        stored = await store.read_stream(stream)

        forged = msgspec.structs.replace(stored[1], **tamper)

        assert event_hash(stored[0].hash, forged) != stored[1].hash

    async def test_verify_stream_detects_a_row_altered_behind_the_trigger(self, own_store: EventStore) -> None:
        stream = new_stream("chain")
        await self.append_three(own_store, stream)
        async with own_store.pool.acquire() as conn:
            if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
                pytest.skip("altering a row behind the trigger needs a superuser")
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")  # triggers do not fire
                await conn.execute(
                    "UPDATE events SET payload = '{\"n\": 666}' WHERE stream_id = $1 AND stream_version = 2", stream
                )

        assert await own_store.verify_stream(stream) is False


class TestMetadata:
    async def test_actor_correlation_and_request_ids_are_stored_with_the_event(self, store: EventStore) -> None:
        stream = new_stream()
        ctx = CommandContext(actor="alice", request_id="req-1", correlation_id="corr-1", site_id="site-9")
        req = request(stream, expected=0)
        req.events[0] = dataclasses.replace(req.events[0], metadata=ctx.metadata("RestartPlugin"), site_id="site-9")

        await store.append(req)

        (event,) = await store.read_stream(stream)
        assert event.metadata == {
            "actor": "alice",
            "command": "RestartPlugin",
            "request_id": "req-1",
            "correlation_id": "corr-1",
            "causation_id": "req-1",
            "site_id": "site-9",
        }
        assert event.site_id == "site-9"
        row = await store.pool.fetchrow(
            "SELECT metadata->>'actor' AS actor, metadata->>'request_id' AS request_id FROM events WHERE stream_id = $1",
            stream,
        )
        assert dict(row) == {"actor": "alice", "request_id": "req-1"}

    async def test_payload_is_readable_by_sql(self, store: EventStore) -> None:
        stream = new_stream()
        req = request(stream, expected=0)
        req.events[0] = dataclasses.replace(req.events[0], payload={"plugin": {"version": "1.2.3"}})

        await store.append(req)

        assert await store.pool.fetchval(
            "SELECT payload #>> '{plugin,version}' FROM events WHERE stream_id = $1", stream
        ) == "1.2.3"


class TestNotify:
    async def test_a_listener_is_notified_of_an_append(self, database_url: str, store: EventStore) -> None:
        received: asyncio.Queue[str] = asyncio.Queue()
        listener = await asyncpg.connect(database_url)
        try:
            await listener.add_listener(NOTIFY_CHANNEL, lambda *args: received.put_nowait(args[3]))

            result = await store.append(request(new_stream(), expected=0))

            async def notified_of(position: int) -> None:
                while int(await received.get()) < position:
                    pass

            await asyncio.wait_for(notified_of(result.position), timeout=5)
        finally:
            await listener.close()

    async def test_nothing_is_notified_for_a_refused_append(self, database_url: str, store: EventStore) -> None:
        stream = new_stream()
        await store.append(request(stream, expected=0))
        received: asyncio.Queue[str] = asyncio.Queue()
        listener = await asyncpg.connect(database_url)
        try:
            await listener.add_listener(NOTIFY_CHANNEL, lambda *args: received.put_nowait(args[3]))

            with pytest.raises(ConcurrencyError):
                await store.append(request(stream, expected=0))
            await listener.execute("SELECT 1")  # a round trip delivers anything already sent

            assert received.empty()
        finally:
            await listener.close()
