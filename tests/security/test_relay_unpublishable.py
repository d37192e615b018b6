"""An event JetStream will never take never stops fan-out silently, and never vanishes silently.

Each test runs a throw-away nats-server whose max_payload (32 KiB) is smaller than an event written
through a store with a raised limit, as happens when an external NATS is configured smaller than
Charter's event limit. The relay holds at such an event (recorded, logged, counted, /ready 503 naming it)
until `charter relay skip` or a NATS that takes it; with CHARTER_RELAY_SKIP_UNPUBLISHABLE it skips at
once. Later events reach JetStream in order either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import nats
import pytest
from litestar.testing import AsyncTestClient

from application.ports import AppendRequest, NewEvent
from infrastructure.telemetry import metrics
from infrastructure.embedded.nats import EmbeddedNats
from infrastructure.embedded.process import find_free_port
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from infrastructure.stream.relay import Relay, StreamSettings
from interfaces.app import create_app
from interfaces.cli import main as charter
from tests.e2e.conftest import admin_token, make_settings
from tests.waiting import eventually

MAX_PAYLOAD = 32 * 1024
POLL = 0.05



@pytest.fixture
async def small_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", port=find_free_port(), max_payload=MAX_PAYLOAD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[EventStore]:
    store = EventStore(pool, writers=1, max_event_bytes=1024 * 1024)  # raised: lets the oversized event in
    yield store
    await store.stop()


async def write(store: EventStore, *sizes: int) -> list[str]:
    """One event per size, each in its own command, in this order; their ids."""
    ids = []
    for size in sizes:
        stream = f"test:unpub-{uuid4().hex[:10]}"
        event = NewEvent(uuid4(), stream, "test", 1, "Thing.Happened", {"blob": "x" * size}, {}, datetime.now(timezone.utc))
        await store.append(AppendRequest(stream, 0, [event], GENESIS))
        ids.append(str(event.event_id))
    return ids


async def stream_ids(url: str, stream: StreamSettings) -> list[str]:
    """Nats-Msg-Id of every message the JetStream stream holds, in order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream.name)
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
            message = await js.get_msg(stream.name, seq)
            ids.append(message.headers["Nats-Msg-Id"])
        return ids
    except nats.js.errors.NotFoundError:
        return []
    finally:
        await nc.close()


async def unpublishable(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT event_id::text, position, outcome, decided_by, reason FROM relay_unpublishable")
    return [dict(r) for r in rows]


@contextlib.asynccontextmanager
async def run_relay(relay: Relay) -> AsyncIterator[Relay]:
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await relay.close()


async def cli(*argv: str) -> tuple[int, str]:
    """Run `charter <argv>` (in a thread: it runs its own event loop); its exit code and output."""

    def run() -> tuple[int, str]:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            return charter(list(argv)), out.getvalue()

    return await asyncio.to_thread(run)


def stream_settings(label: str) -> StreamSettings:
    token = uuid4().hex[:8]
    return StreamSettings(name=f"UNPUB_{label}_{token}".upper(), prefix=f"unpub_{label}_{token}.events", max_age_days=1)


async def test_the_embedded_server_takes_the_max_payload_it_is_given(small_nats: EmbeddedNats) -> None:
    nc = await nats.connect(small_nats.url)
    try:
        assert nc.max_payload == MAX_PAYLOAD
    finally:
        await nc.close()


async def test_a_relay_holds_at_an_event_too_large_says_so_on_ready_and_goes_on_once_skipped(
    small_nats: EmbeddedNats, fresh_database_url: str, pool: asyncpg.Pool, store: EventStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = stream_settings("hold")
    settings = make_settings(
        fresh_database_url, tmp_path / "charter", nats_url=small_nats.url, nats_stream=stream.name,
        nats_subject_prefix=stream.prefix,
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        before, big, after = await write(store, 10, 2 * MAX_PAYLOAD, 10)

        async def held() -> bool:
            return any(r["event_id"] == big and r["outcome"] is None for r in await unpublishable(pool))

        await eventually(held, 15, "the relay records the event it cannot publish")
        held_back = await stream_ids(small_nats.url, stream)  # the app's own bootstrap events come first
        assert held_back[-1] == before and big not in held_back
        position = await pool.fetchval("SELECT position FROM events WHERE event_id = $1::uuid", big)

        ready = await client.get("/ready")
        assert ready.status_code == 503, ready.text
        holding = ready.json()["checks"]["relay"]["holding"]
        assert holding["event_id"] == big and holding["position"] == position
        assert f"charter relay skip {big}" == holding["skip_with"] and "max_payload" in holding["reason"]
        assert metrics.RELAY_HOLDING._value.get() == 1
        assert "charter_relay_holding 1.0" in (await client.get("/metrics")).text

        monkeypatch.setenv("CHARTER_DATABASE_URL", fresh_database_url)
        code, status = await cli("relay", "status")
        assert code == 1, status
        assert f"HELD      {big} position {position}" in status and f"charter relay skip {big}" in status

        assert (await cli("relay", "skip", big, "--by", "on-call"))[0] == 0

        async def published() -> bool:
            return await stream_ids(small_nats.url, stream) == [*held_back, after]

        await eventually(published, 15, "the events after the skipped one reach JetStream")
        assert (await client.get("/ready")).status_code == 200
        assert metrics.RELAY_HOLDING._value.get() == 0
        [row] = await unpublishable(pool)
        assert row["outcome"] == "skipped" and row["decided_by"] == "on-call"

        code, status = await cli("relay", "status")
        assert code == 0 and f"SKIPPED   {big}" in status
        assert (await cli("relay", "skip", big))[0] == 1  # nothing held any more


async def test_a_held_event_is_published_once_nats_takes_it_with_nothing_lost(
    small_nats: EmbeddedNats, fresh_database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    stream = stream_settings("retry")
    relay = Relay(fresh_database_url, small_nats.url, stream, poll_interval=POLL, retry_interval=0.2)
    async with run_relay(relay):
        ids = await write(store, 10, 2 * MAX_PAYLOAD, 10)
        await eventually(lambda: _true(relay.state.holding is not None), 15, f"the relay holds at the large event ({relay.state})")
        assert relay.state.holding["event_id"] == ids[1]

        small_nats.max_payload = 4 * MAX_PAYLOAD  # the operator fixes NATS
        await asyncio.to_thread(small_nats.restart)

        async def everything() -> bool:
            return await stream_ids(small_nats.url, stream) == ids

        await eventually(everything, 20, "all three events reach JetStream, in order")
        [row] = await unpublishable(pool)
        assert row["outcome"] == "published" and relay.state.holding is None


async def test_a_relay_started_after_nats_is_fixed_publishes_the_event_another_relay_held(
    small_nats: EmbeddedNats, fresh_database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    stream = stream_settings("handover")
    first = Relay(fresh_database_url, small_nats.url, stream, poll_interval=POLL)
    async with run_relay(first):
        ids = await write(store, 10, 2 * MAX_PAYLOAD, 10)
        await eventually(lambda: _true(first.state.holding is not None), 15, "the first relay holds at the large event")

    small_nats.max_payload = 4 * MAX_PAYLOAD
    await asyncio.to_thread(small_nats.restart)
    async with run_relay(Relay(fresh_database_url, small_nats.url, stream, poll_interval=POLL)):

        async def everything() -> bool:
            return await stream_ids(small_nats.url, stream) == ids

        await eventually(everything, 20, "the new relay publishes all three events, in order")
        [row] = await unpublishable(pool)
        assert row["outcome"] == "published"


async def test_with_skip_unpublishable_the_relay_records_the_skip_and_goes_on_at_once(
    small_nats: EmbeddedNats, fresh_database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    stream = stream_settings("skip")
    relay = Relay(fresh_database_url, small_nats.url, stream, poll_interval=POLL, skip_unpublishable=True)
    async with run_relay(relay):
        ids = await write(store, 10, 2 * MAX_PAYLOAD, 10, 3 * MAX_PAYLOAD, 10)

        async def published() -> bool:
            return await stream_ids(small_nats.url, stream) == [ids[0], ids[2], ids[4]]

        await eventually(published, 15, "every event JetStream can take is published, in order")
        rows = {r["event_id"]: r for r in await unpublishable(pool)}
        assert set(rows) == {ids[1], ids[3]}
        assert all(r["outcome"] == "skipped" and "SKIP_UNPUBLISHABLE" in r["decided_by"] for r in rows.values())
        assert relay.state.skipped == 2


class RefusingStream(Relay):
    """A relay whose stream takes no message over 4 KiB (max_msg_size), which JetStream refuses for good."""

    async def _connect_nats(self):  # type: ignore[no-untyped-def]
        js = await super()._connect_nats()
        config = (await js.stream_info(self.stream.name)).config
        config.max_msg_size = 4096
        await js.update_stream(config)
        return js


async def test_an_event_jetstream_refuses_for_good_is_found_among_pipelined_publishes_and_skipped(
    small_nats: EmbeddedNats, fresh_database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    stream = stream_settings("refused")
    relay = RefusingStream(
        fresh_database_url, small_nats.url, stream, poll_interval=POLL, ack_timeout=1.0, skip_unpublishable=True
    )
    ids = await write(store, 10, 10, 8000, 10, 10)  # published in one pipelined batch
    async with run_relay(relay):

        async def published() -> bool:
            return await stream_ids(small_nats.url, stream) == [ids[0], ids[1], ids[3], ids[4]]

        await eventually(published, 20, "the events around the refused one are published, in order")
        [row] = await unpublishable(pool)
        assert row["event_id"] == ids[2] and "10054" in row["reason"]


async def _true(value: bool) -> bool:
    return value
