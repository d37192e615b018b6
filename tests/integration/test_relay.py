"""The fan-out relay: every event of the log reaches JetStream exactly once, in the projectors' global order.

The relay tails `(transaction_id, position)` with the never-skip cursor, publishes with many acks in
flight (`Nats-Msg-Id` = event id, `Nats-Expected-Last-Msg-Id` = previous event id), moves its `relay`
checkpoint only after the PubAcks, resynchronises from the stream's last message on (re)start and
leads only while it holds an advisory lock. These tests look at the stream itself, message by message.

Streams: every test uses a stream and subject prefix of its own (`stream_settings`) on the run's NATS
server, or a NATS server of its own (outage tests). `max_bytes` is lowered to 64 MiB: JetStream
reserves a stream's `max_bytes` against the server's storage, and at the default 8 GiB the run's
server refuses new streams after a handful ("insufficient storage resources available", 10047).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import msgspec
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from application.ports import AppendRequest, NewEvent
from infrastructure.embedded.nats import EmbeddedNats
from infrastructure.embedded.process import find_free_port
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from infrastructure.eventlog.projector import lag
from infrastructure.stream.relay import RELAY, Relay, StreamSettings
from tests.waiting import eventually

POLL = 0.05
SMALL_STREAM = 64 * 1024**2


# -- helpers ----------------------------------------------------------------------------------------



def traceparent() -> str:
    return f"00-{uuid4().hex}-{uuid4().hex[:16]}-01"


def new_event(stream_id: str, version: int, *, stream_type: str = "test", site_id: str | None = None, **meta: Any) -> NewEvent:
    return NewEvent(
        event_id=uuid4(),
        stream_id=stream_id,
        stream_type=stream_type,
        stream_version=version,
        event_type="Thing.Happened",
        payload={"n": version, "stream": stream_id},
        metadata=meta,
        recorded_at=datetime.now(timezone.utc),
        site_id=site_id,
    )


class Writer:
    """Appends to one stream of its own, one to three events per command, some with trace context."""

    def __init__(self, store: EventStore, label: str, *, site_id: str | None = None) -> None:
        self.store = store
        self.stream_id = f"test:relay-{label}-{uuid4().hex[:10]}"
        self.site_id = site_id
        self.version = 0
        self.prev_hash = GENESIS
        self.appended = 0

    async def append(self, count: int) -> None:
        events = []
        for i in range(1, count + 1):
            version = self.version + i
            meta: dict[str, Any] = {"correlation_id": f"corr-{self.stream_id}-{version}"}
            if version % 2:
                meta["traceparent"] = traceparent()
            events.append(new_event(self.stream_id, version, site_id=self.site_id, **meta))
        request = AppendRequest(self.stream_id, self.version, events, self.prev_hash)
        await self.store.append(request)
        self.prev_hash = request.hashes[-1]
        self.version += count
        self.appended += count

    async def write(self, total: int, *, pause: float = 0.0) -> None:
        while self.appended < total:
            await self.append(min(random.randint(1, 3), total - self.appended))
            if pause:
                await asyncio.sleep(pause)


async def write_concurrently(store: EventStore, writers: int, per_writer: int, label: str) -> list[Writer]:
    crew = [Writer(store, f"{label}{i}", site_id="site-a" if i == 0 else None) for i in range(writers)]
    await asyncio.gather(*(w.write(per_writer) for w in crew))
    return crew


async def global_order(pool: asyncpg.Pool) -> list[str]:
    """Event ids in the projectors' order."""
    rows = await pool.fetch("SELECT event_id FROM events ORDER BY transaction_id, position")
    return [str(r["event_id"]) for r in rows]


async def last_event(pool: asyncpg.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT transaction_id::text::bigint AS tx, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1"
    )
    return (row["tx"], row["position"])


async def relay_checkpoint(pool: asyncpg.Pool) -> tuple[int, int] | None:
    row = await pool.fetchrow(
        "SELECT transaction_id::text::bigint AS tx, position FROM checkpoints WHERE name = $1", RELAY
    )
    return (row["tx"], row["position"]) if row else None


async def caught_up(pool: asyncpg.Pool, relay: Relay) -> bool:
    """The relay's checkpoint (and in-memory cursor) stand on the last event of the log."""
    last = await last_event(pool)
    return await relay_checkpoint(pool) == last and relay.state.cursor == last


@dataclasses.dataclass
class Received:
    seq: int
    subject: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def msg_id(self) -> str:
        return self.headers["Nats-Msg-Id"]


async def stream_messages(js: nats.js.JetStreamContext, settings: StreamSettings) -> list[Received]:
    """Everything the stream holds, in stream sequence order (an ordered consumer from the start)."""
    info = await js.stream_info(settings.name)
    if info.state.messages == 0:
        return []
    sub = await js.subscribe(
        f"{settings.prefix}.>",
        stream=settings.name,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        pending_msgs_limit=1_000_000,
    )
    received: list[Received] = []
    try:
        while not received or received[-1].seq < info.state.last_seq:
            msg = await sub.next_msg(timeout=5)
            received.append(
                Received(msg.metadata.sequence.stream, msg.subject, dict(msg.headers or {}), msgspec.json.decode(msg.data))
            )
    finally:
        await sub.unsubscribe()
    return received


async def assert_server_holds_log_once_in_order(url: str, stream: StreamSettings, pool: asyncpg.Pool) -> None:
    """`assert_stream_holds_log_once_in_order` against the NATS server at `url` (one the test runs itself)."""
    client = await nats.connect(url, connect_timeout=2)
    try:
        await assert_stream_holds_log_once_in_order(client.jetstream(timeout=5), stream, pool)
    finally:
        await client.close()


async def assert_stream_holds_log_once_in_order(
    js: nats.js.JetStreamContext, settings: StreamSettings, pool: asyncpg.Pool
) -> list[Received]:
    expected = await global_order(pool)
    received = await stream_messages(js, settings)
    ids = [m.msg_id for m in received]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(ids) != len(set(ids)) else []
    assert not duplicates, f"{len(duplicates)} events published more than once, e.g. {duplicates[:3]}"
    assert len(ids) == len(expected), f"stream holds {len(ids)} messages, the log {len(expected)} events"
    assert set(ids) == set(expected), (
        f"missing from the stream: {sorted(set(expected) - set(ids))[:3]}; foreign: {sorted(set(ids) - set(expected))[:3]}"
    )
    first_wrong = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), None)
    assert ids == expected, f"stream order departs from (transaction_id, position) order at index {first_wrong}"
    seqs = [m.seq for m in received]
    assert seqs == list(range(1, len(seqs) + 1)), "stream sequences are not 1..N"
    return received


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(fresh_database_url, max_size=30)
    yield p
    await p.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[EventStore]:
    s = EventStore(pool, writers=8)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_url, connect_timeout=2)
    yield client
    await client.close()


@pytest.fixture
def js(nc: nats.NATS) -> nats.js.JetStreamContext:
    return nc.jetstream(timeout=5)


async def _delete_stream(js: nats.js.JetStreamContext, name: str) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(name)


@pytest.fixture
async def relay_stream(stream_settings: StreamSettings, js: nats.js.JetStreamContext) -> AsyncIterator[StreamSettings]:
    """This test's own stream on the run's server, deleted right after the test (frees its reservation)."""
    settings = dataclasses.replace(stream_settings, max_bytes=SMALL_STREAM)
    yield settings
    await _delete_stream(js, settings.name)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel until the task ends: on Python 3.11 `asyncio.wait_for` can swallow one cancellation (see
    test_a_relay_cancelled_as_it_is_woken_stops), and a hung teardown would hang the whole run."""
    for _ in range(20):
        task.cancel()
        await asyncio.wait({task}, timeout=1)
        if task.done():
            break
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Relays:
    """Starts relays as tasks; whatever is still running at the end of a test is cancelled and closed."""

    def __init__(self) -> None:
        self.running: dict[Relay, asyncio.Task[None]] = {}

    def start(self, relay: Relay) -> Relay:
        self.running[relay] = asyncio.create_task(relay.run(), name=f"relay-{id(relay)}")
        return relay

    async def stop(self, relay: Relay) -> None:
        task = self.running.pop(relay)
        await cancel_and_wait(task)
        await relay.close()

    async def stop_all(self) -> None:
        for relay in list(self.running):
            await self.stop(relay)


@pytest.fixture
async def relays() -> AsyncIterator[Relays]:
    r = Relays()
    yield r
    await r.stop_all()


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A NATS server of this test's own (stopped and restarted by the test), never the run's."""
    server = EmbeddedNats(tmp_path / "nats", port=find_free_port())
    yield server
    await asyncio.to_thread(server.stop)


def own_stream(label: str, **overrides: Any) -> StreamSettings:
    tag = uuid4().hex[:8]
    return StreamSettings(
        name=f"CHARTER_RELAY_{label}_{tag}".upper(),
        prefix=f"charter_relay_{label}_{tag}.events",
        max_age_days=1,
        max_bytes=SMALL_STREAM,
        **overrides,
    )


# -- 1. exactly once, in order, with headers ------------------------------------------------------


async def test_events_from_twenty_concurrent_writers_reach_jetstream_exactly_once_in_global_order(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    js: nats.js.JetStreamContext,
    relay_stream: StreamSettings,
    relays: Relays,
    nats_url: str,
) -> None:
    relay = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))

    crew = await write_concurrently(store, writers=20, per_writer=50, label="fanout")  # relay tails while they write
    assert sum(w.appended for w in crew) == 1000

    await eventually(lambda: caught_up(pool, relay), 30, "the relay checkpoint stands on the last event")
    received = await assert_stream_holds_log_once_in_order(js, relay_stream, pool)

    assert await lag(pool, RELAY) == 0
    assert relay.state.leading and relay.state.connected and relay.state.last_error is None
    assert relay.state.published == 1000

    site_stream = crew[0].stream_id
    rows = {
        str(r["event_id"]): r
        for r in await pool.fetch(
            "SELECT event_id, position, transaction_id::text::bigint AS tx, stream_id, stream_type, event_type,"
            " site_id, metadata FROM events"
        )
    }
    for message in received:
        row = rows[message.msg_id]
        site = "site-a" if row["stream_id"] == site_stream else "global"
        assert message.subject == f"{relay_stream.prefix}.{site}.test.Happened"
        assert message.headers["Charter-Position"] == str(row["position"])
        assert message.headers["Charter-Transaction-Id"] == str(row["tx"])
        assert message.headers["Charter-Event-Type"] == "Thing.Happened"
        assert message.headers["Charter-Stream-Id"] == row["stream_id"]
        assert message.headers["Charter-Correlation-Id"] == row["metadata"]["correlation_id"]
        if "traceparent" in row["metadata"]:
            assert message.headers["traceparent"] == row["metadata"]["traceparent"]
        else:
            assert "traceparent" not in message.headers
        if row["site_id"]:
            assert message.headers["Charter-Site-Id"] == row["site_id"]
        assert message.body["event_id"] == message.msg_id
        assert message.body["position"] == row["position"]
        assert message.body["transaction_id"] == row["tx"]
        assert message.body["stream_id"] == row["stream_id"]
        assert message.body["event_type"] == "Thing.Happened"
        assert message.body["payload"]["stream"] == row["stream_id"]
        assert message.body["metadata"] == row["metadata"]
    # The expected-last chain: each message names the one before it in the stream.
    assert "Nats-Expected-Last-Msg-Id" not in received[0].headers
    assert all(b.headers["Nats-Expected-Last-Msg-Id"] == a.msg_id for a, b in zip(received, received[1:]))


# -- 2. NATS outage under load --------------------------------------------------------------------


class Load:
    """Writers appending until stopped; records every failure (there must be none)."""

    def __init__(self, store: EventStore, writers: int, label: str, pause: float = 0.01) -> None:
        self.crew = [Writer(store, f"{label}{i}") for i in range(writers)]
        self.failures: list[BaseException] = []
        self.stopping = asyncio.Event()
        self.pause = pause
        self.tasks = [asyncio.create_task(self._run(w)) for w in self.crew]

    @property
    def appended(self) -> int:
        return sum(w.appended for w in self.crew)

    async def _run(self, writer: Writer) -> None:
        while not self.stopping.is_set():
            try:
                await writer.append(random.randint(1, 3))
            except Exception as exc:  # noqa: BLE001 - the test asserts there are none
                self.failures.append(exc)
            await asyncio.sleep(self.pause)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self.tasks)


async def test_appends_succeed_while_nats_is_down_and_the_relay_catches_up_exactly_once_after_restart(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    own_nats: EmbeddedNats,
    relays: Relays,
) -> None:
    url = await asyncio.to_thread(own_nats.start)
    settings = own_stream("outage")
    relay = relays.start(Relay(fresh_database_url, url, settings, poll_interval=POLL, ack_timeout=1.0))
    load = Load(store, writers=5, label="outage")
    try:
        await eventually(lambda: _true(relay.state.published >= 100), 15, "the relay published under load")

        await asyncio.to_thread(own_nats.stop)
        stopped_at = load.appended
        await eventually(
            lambda: _true(not relay.state.connected and relay.state.last_error is not None),
            10,
            "relay.state reports the outage (disconnected, last_error)",
        )
        await eventually(lambda: _true(load.appended >= stopped_at + 300), 15, "300 more events appended with NATS down")
        behind = await lag(pool, RELAY)
        assert behind >= 300, f"relay lag during the outage is {behind}"
        published_during_outage = relay.state.published
        await eventually(lambda: _gt(lag(pool, RELAY), behind), 10, "the relay lag grows during the outage")
        assert relay.state.published == published_during_outage
        assert not load.failures, f"appends failed because NATS was down: {load.failures[:3]!r}"

        await asyncio.to_thread(own_nats.start)
        assert own_nats.url == url  # same port, same store
    finally:
        await load.stop()
    assert not load.failures, f"appends failed: {load.failures[:3]!r}"

    await eventually(lambda: caught_up(pool, relay), 30, "the relay caught up after NATS came back")
    assert await lag(pool, RELAY) == 0
    assert relay.state.connected and relay.state.last_error is None

    await assert_server_holds_log_once_in_order(url, settings, pool)


async def test_a_relay_started_while_nats_is_down_waits_and_then_publishes_everything(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    own_nats: EmbeddedNats,
    relays: Relays,
) -> None:
    settings = own_stream("late")
    relay = relays.start(Relay(fresh_database_url, own_nats.url, settings, poll_interval=POLL, ack_timeout=1.0))
    await write_concurrently(store, writers=4, per_writer=25, label="late")
    # nats.connect keeps retrying (max_reconnect_attempts=-1), so the relay leads but is not connected.
    await eventually(lambda: _true(relay.state.leading), 10, "the relay leads")
    assert relay.state.published == 0 and not relay.state.connected
    assert await lag(pool, RELAY) == 100

    url = await asyncio.to_thread(own_nats.start)
    await eventually(lambda: caught_up(pool, relay), 20, "the relay published the backlog once NATS is up")
    assert relay.state.published == 100 and relay.state.last_error is None
    await assert_server_holds_log_once_in_order(url, settings, pool)


async def test_relay_continues_after_nats_restart_when_its_last_message_is_older_than_the_duplicate_window(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    own_nats: EmbeddedNats,
    relays: Relays,
) -> None:
    """After a restart the server must still know the stream's last Nats-Msg-Id for the expected-last
    chain, even when that message left the duplicate window; otherwise the relay is refused forever."""
    url = await asyncio.to_thread(own_nats.start)
    settings = own_stream("window", duplicate_window_s=1.0)
    relay = relays.start(Relay(fresh_database_url, url, settings, poll_interval=POLL, ack_timeout=1.0))
    await write_concurrently(store, writers=2, per_writer=10, label="window")
    await eventually(lambda: caught_up(pool, relay), 10, "the first events are published")

    await asyncio.sleep(1.3)  # let the last message age out of the 1 s duplicate window
    await asyncio.to_thread(own_nats.restart)
    await write_concurrently(store, writers=2, per_writer=10, label="window-after")

    await eventually(lambda: caught_up(pool, relay), 15, f"the relay publishes after the restart (last_error={relay.state.last_error})")
    await assert_server_holds_log_once_in_order(url, settings, pool)


async def _true(value: bool) -> bool:
    return value


async def _gt(value: Awaitable[int], than: int) -> bool:
    return await value > than


# -- 3. killed between publish and cursor update ---------------------------------------------------


class DiesAfterPublish(Relay):
    """Publishes a batch (all PubAcks in), then fails once before the checkpoint moves. A CancelledError
    failure kills the whole relay task where it stands, as a dying process would."""

    def __init__(self, *args: Any, failure: BaseException, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failure: BaseException | None = failure
        self.batches: list[int] = []
        self.task: asyncio.Task[None] | None = None

    async def _acknowledged(self, conn, batch):  # type: ignore[no-untyped-def]
        self.batches.append(batch.size)
        if self.failure is not None:
            failure, self.failure = self.failure, None
            if isinstance(failure, asyncio.CancelledError) and self.task is not None:
                self.task.cancel()
            raise failure
        await super()._acknowledged(conn, batch)


async def test_a_relay_killed_after_publishing_but_before_moving_its_checkpoint_is_resumed_without_duplicates(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    js: nats.js.JetStreamContext,
    relay_stream: StreamSettings,
    relays: Relays,
    nats_url: str,
) -> None:
    await write_concurrently(store, writers=10, per_writer=30, label="killed")  # 300 events, batches of 100
    doomed = DiesAfterPublish(
        fresh_database_url, nats_url, relay_stream, poll_interval=POLL, batch_size=100, failure=asyncio.CancelledError()
    )
    task = doomed.task = asyncio.create_task(doomed.run())
    await asyncio.wait({task}, timeout=15)  # the process "dies": the task ends cancelled
    assert task.cancelled(), "the relay should have died after its first batch was acknowledged"
    await doomed.close()

    assert doomed.batches == [100]
    held = (await js.stream_info(relay_stream.name)).state.messages
    assert 100 <= held <= 300  # later batches may have been published while the first one's acks came in
    assert await relay_checkpoint(pool) == (0, 0), "the checkpoint must not move before it is safe to"

    fresh = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL, batch_size=100))
    await eventually(lambda: caught_up(pool, fresh), 15, "the fresh relay caught up")
    assert fresh.state.published == 300 - held, "the fresh relay republished what the stream already held"

    await write_concurrently(store, writers=5, per_writer=10, label="killed-after")
    await eventually(lambda: caught_up(pool, fresh), 15, "the fresh relay publishes new events")
    assert fresh.state.published == 300 - held + 50
    await assert_stream_holds_log_once_in_order(js, relay_stream, pool)
    assert await lag(pool, RELAY) == 0


async def test_a_relay_failing_after_publishing_resyncs_and_publishes_nothing_twice(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    js: nats.js.JetStreamContext,
    relay_stream: StreamSettings,
    relays: Relays,
    nats_url: str,
) -> None:
    await write_concurrently(store, writers=10, per_writer=30, label="fails")
    relay = relays.start(
        DiesAfterPublish(
            fresh_database_url, nats_url, relay_stream, poll_interval=POLL, batch_size=100,
            failure=ConnectionResetError("database connection lost after the PubAcks"),
        )
    )
    await eventually(lambda: caught_up(pool, relay), 15, "the relay recovered and caught up")
    assert relay.batches[0] == 100
    # what was published while the first batch's acks came in is found in the stream by the resync
    assert relay.state.published == sum(relay.batches[1:]) <= 200
    await assert_stream_holds_log_once_in_order(js, relay_stream, pool)


# -- 4. two relays racing -------------------------------------------------------------------------


async def test_of_two_racing_relays_only_one_leads_and_the_other_takes_over_without_gap_or_duplicate(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    js: nats.js.JetStreamContext,
    relay_stream: StreamSettings,
    relays: Relays,
    nats_url: str,
) -> None:
    a = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    b = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    both_led: list[bool] = []

    async def one_leads() -> bool:
        both_led.append(a.state.leading and b.state.leading)
        return a.state.leading or b.state.leading

    await eventually(one_leads, 10, "one relay leads")
    leader, standby = (a, b) if a.state.leading else (b, a)

    await write_concurrently(store, writers=10, per_writer=30, label="race")

    async def leader_caught_up() -> bool:
        both_led.append(a.state.leading and b.state.leading)
        return await caught_up(pool, leader)

    await eventually(leader_caught_up, 20, "the leader caught up")
    assert not any(both_led), "both relays led at once"
    assert leader.state.leading and not standby.state.leading
    assert leader.state.published == 300
    assert standby.state.published == 0

    # Hand over in the middle of a load: the leader dies while writers keep appending.
    load = Load(store, writers=4, label="handover")
    await eventually(lambda: _true(leader.state.published >= 350), 10, "the leader publishes some of the new load")
    await relays.stop(leader)
    await eventually(lambda: _true(standby.state.leading), 10, "the standby takes over")
    await eventually(lambda: _true(standby.state.published >= 100), 15, "the new leader publishes under load")
    await load.stop()
    assert not load.failures

    await eventually(lambda: caught_up(pool, standby), 20, "the new leader caught up")
    await assert_stream_holds_log_once_in_order(js, relay_stream, pool)
    assert await lag(pool, RELAY) == 0


# -- 5. stream limits -------------------------------------------------------------------------------


async def _stream_config(js: nats.js.JetStreamContext, name: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(name)).config
    except NotFoundError:
        return None


def assert_config_matches(config: StreamConfig, settings: StreamSettings) -> None:
    assert config.subjects == [f"{settings.prefix}.>"]
    assert config.storage == StorageType.FILE
    assert config.retention == RetentionPolicy.LIMITS
    assert config.max_age == pytest.approx(settings.max_age_days * 86400)
    assert config.duplicate_window == pytest.approx(settings.duplicate_window_s)
    assert config.max_bytes == settings.max_bytes
    assert config.num_replicas == settings.replicas
    assert 0 < config.duplicate_window <= config.max_age


async def test_the_relay_creates_its_stream_with_sensible_limits(
    fresh_database_url: str, js: nats.js.JetStreamContext, relay_stream: StreamSettings, relays: Relays, nats_url: str
) -> None:
    assert await _stream_config(js, relay_stream.name) is None
    relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    await eventually(lambda: _is_not_none(_stream_config(js, relay_stream.name)), 10, "the relay created the stream")
    config = await _stream_config(js, relay_stream.name)
    assert config is not None
    assert_config_matches(config, relay_stream)
    assert config.max_age == pytest.approx(86400)  # the fixture's one day
    assert config.duplicate_window == pytest.approx(120)
    assert config.allow_direct is True


async def test_the_relay_brings_an_existing_streams_limits_up_to_date(
    fresh_database_url: str, js: nats.js.JetStreamContext, relay_stream: StreamSettings, relays: Relays, nats_url: str
) -> None:
    await js.add_stream(
        StreamConfig(
            name=relay_stream.name,
            subjects=[f"{relay_stream.prefix}.>"],
            storage=StorageType.FILE,
            max_age=600,
            duplicate_window=5,
            max_bytes=1024**2,
        )
    )
    relay = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))

    async def updated() -> bool:
        config = await _stream_config(js, relay_stream.name)
        return config is not None and config.max_age == pytest.approx(86400)

    await eventually(updated, 10, f"the relay updated the stream (last_error={relay.state.last_error})")
    config = await _stream_config(js, relay_stream.name)
    assert config is not None
    assert_config_matches(config, relay_stream)


async def _is_not_none(value: Awaitable[Any]) -> bool:
    return await value is not None


# -- 6. resync from the stream ------------------------------------------------------------------------


async def test_a_relay_whose_checkpoint_was_reset_resyncs_from_the_stream_and_publishes_nothing_twice(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    js: nats.js.JetStreamContext,
    relay_stream: StreamSettings,
    relays: Relays,
    nats_url: str,
) -> None:
    first = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    await write_concurrently(store, writers=10, per_writer=20, label="resync")
    await eventually(lambda: caught_up(pool, first), 15, "the first relay published everything")
    await relays.stop(first)
    last = await last_event(pool)

    await write_concurrently(store, writers=5, per_writer=10, label="resync-more")  # 50 the stream lacks
    await pool.execute("UPDATE checkpoints SET transaction_id = '0', position = 0 WHERE name = $1", RELAY)
    assert await lag(pool, RELAY) == 250

    second = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    await eventually(lambda: caught_up(pool, second), 15, "the second relay caught up")
    assert second.state.published == 50, "events the stream already held were published again"
    assert (await js.stream_info(relay_stream.name)).state.messages == 250
    await assert_stream_holds_log_once_in_order(js, relay_stream, pool)
    assert await last_event(pool) > last


async def test_a_relay_restarted_with_a_reset_checkpoint_and_nothing_new_publishes_nothing(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    js: nats.js.JetStreamContext,
    relay_stream: StreamSettings,
    relays: Relays,
    nats_url: str,
) -> None:
    first = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    await write_concurrently(store, writers=5, per_writer=20, label="idle")
    await eventually(lambda: caught_up(pool, first), 15, "the first relay published everything")
    await relays.stop(first)
    await pool.execute("UPDATE checkpoints SET transaction_id = '0', position = 0 WHERE name = $1", RELAY)

    second = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    await eventually(lambda: caught_up(pool, second), 10, "the second relay resynced its checkpoint from the stream")
    assert second.state.published == 0
    assert (await js.stream_info(relay_stream.name)).state.messages == 100
    await assert_stream_holds_log_once_in_order(js, relay_stream, pool)


# -- global order under interleaved transactions ------------------------------------------------------

INSERT_RAW = """
INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type, payload, hash)
VALUES ($1, $2, 'test', 1, 'Thing.Happened', '{}'::jsonb, $3)
RETURNING position, transaction_id::text::bigint AS tx
"""


async def test_an_event_whose_transaction_began_first_but_committed_last_is_published_first(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    js: nats.js.JetStreamContext,
    relay_stream: StreamSettings,
    relays: Relays,
    nats_url: str,
) -> None:
    """Positions are taken at insert time, so a later-committing transaction can hold a higher position
    than events already committed; the projectors' order is (transaction_id, position) and the stream
    must follow it (and must not publish past the open transaction meanwhile)."""
    relay = relays.start(Relay(fresh_database_url, nats_url, relay_stream, poll_interval=POLL))
    await eventually(lambda: _true(relay.state.leading and relay.state.connected), 10, "the relay leads")
    slow = await asyncpg.connect(fresh_database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute("SELECT events_write_begin()")  # an event writer taking its id early says so first
        slow_tx = await slow.fetchval("SELECT pg_current_xact_id()::text::bigint")  # takes the lower xid now

        await write_concurrently(store, writers=4, per_writer=10, label="overtaking")
        for _ in range(10):  # ten poll rounds: the relay must hold them back while the older transaction runs
            await asyncio.sleep(POLL)
        assert relay.state.published == 0, "published past a transaction that is still running"

        slow_id = uuid4()
        row = await slow.fetchrow(INSERT_RAW, slow_id, f"test:relay-slow-{uuid4().hex[:10]}", bytes(32))
        await transaction.commit()
    finally:
        await slow.close()
    assert row["tx"] == slow_tx
    assert row["position"] == await pool.fetchval("SELECT max(position) FROM events")

    await eventually(lambda: caught_up(pool, relay), 15, "the relay caught up")
    received = await assert_stream_holds_log_once_in_order(js, relay_stream, pool)
    assert received[0].msg_id == str(slow_id), "the event of the oldest transaction must come first"
    assert received[0].body["position"] > received[1].body["position"]


# -- shutdown ---------------------------------------------------------------------------------------


async def test_a_relay_cancelled_as_it_is_woken_stops(
    fresh_database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    relay_stream: StreamSettings,
    nats_url: str,
) -> None:
    """In `charter serve` the relay's wakeup is set by every NOTIFY of an append, and shutdown cancels
    the relay task and awaits it. A cancellation arriving together with a wakeup must still end the task."""
    relay = Relay(fresh_database_url, nats_url, relay_stream, poll_interval=5.0)
    task = asyncio.create_task(relay.run())
    try:
        await write_concurrently(store, writers=2, per_writer=5, label="shutdown")
        relay.wakeup.set()
        await eventually(lambda: caught_up(pool, relay), 10, "the relay published the events")
        await asyncio.sleep(0.2)  # parked in its wait for the next wakeup (poll_interval is 5 s)

        relay.wakeup.set()  # a NOTIFY arrives ...
        task.cancel()  # ... as the process shuts down
        await asyncio.wait({task}, timeout=3)

        assert task.done(), (
            "the relay swallowed its cancellation and kept running (stop_runtime would hang): "
            "asyncio.wait_for in Relay._lead returned the wakeup's result instead of raising CancelledError"
        )
        assert task.cancelled()
        assert not relay.state.leading
    finally:
        await cancel_and_wait(task)
        await relay.close()
