"""The hub's batching and sliced flushes (infrastructure.stream.hub.EventHub), fed with JetStream-like
messages in memory: every subscriber gets every event once, in order, also when it joins while a flush
is still going out. No NATS, no network."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from infrastructure.stream import hub as fanout
from infrastructure.stream.hub import EventHub
from infrastructure.stream.relay import StreamSettings

from tests.unit.test_fanout_subscriber import Connection, ids


def message(seq: int) -> SimpleNamespace:
    data = b'{"stream_id":"plugin:p%d","stream_type":"plugin","event_type":"Plugin.Restarted","site_id":null,"position":%d}' % (seq, seq)
    return SimpleNamespace(metadata=SimpleNamespace(sequence=SimpleNamespace(stream=seq)), data=data, subject="charter.events.x")


async def publish(hub: EventHub, seqs: range) -> None:
    for seq in seqs:
        await hub._on_message(message(seq))


def connect(hub: EventHub, after: int | None = None) -> Connection:
    """A client: subscribe, write what memory holds for it, then attach (as the SSE endpoint does)."""
    conn = Connection()
    sub, held, missing = hub.subscribe(None, after)
    assert missing is None
    if held:
        conn.written.append(b"".join(d.frame for d in held))
    sub.attach(conn.write)
    return conn


async def mid_flush(clients: list[Connection], seq: int, timeout: float = 2.0) -> None:
    """Until some clients have `seq` and others do not yet: a flush is going out slice by slice."""
    async with asyncio.timeout(timeout):
        while True:
            await asyncio.sleep(0)
            have = [bool(c.written) and ids(c.written)[-1] >= seq for c in clients]
            if any(have) and not all(have):
                return


async def drained(hub: EventHub, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while hub._flush_scheduled or hub._pending:
            await asyncio.sleep(0.001)


def hub() -> EventHub:
    return EventHub("nats://unused", StreamSettings())


async def test_every_subscriber_gets_every_event_once_and_in_order_across_sliced_flushes() -> None:
    events = hub()
    clients = [connect(events) for _ in range(3 * fanout.FLUSH_SLICE + 5)]
    for start in range(1, 61, 6):  # each burst arrives while the previous one is still going out
        await publish(events, range(start, start + 6))
        await mid_flush(clients, start + 5)
    await drained(events)

    assert all(ids(c.written) == list(range(1, 61)) for c in clients)
    assert events.delivered == 60 and events.flushes == 10


async def test_a_client_resuming_while_a_flush_is_going_out_gets_that_batch_from_memory_exactly_once() -> None:
    events = hub()
    clients = [connect(events) for _ in range(3 * fanout.FLUSH_SLICE)]
    await publish(events, range(1, 11))
    await drained(events)
    await publish(events, range(11, 21))
    await mid_flush(clients, 20)

    resumed = connect(events, after=5)
    live = connect(events)
    await drained(events)
    await publish(events, range(21, 26))
    await drained(events)

    assert ids(resumed.written) == list(range(6, 26))
    assert ids(live.written) == list(range(21, 26))
    assert all(ids(c.written) == list(range(1, 26)) for c in clients)


async def test_events_still_waiting_for_a_flush_reach_a_new_client_through_its_own_queue() -> None:
    events = hub()
    await publish(events, range(1, 4))
    await drained(events)
    await publish(events, range(4, 7))  # scheduled, not flushed yet

    resumed = connect(events, after=1)
    await drained(events)

    assert ids(resumed.written) == [2, 3, 4, 5, 6]


async def test_a_slow_client_is_dropped_without_holding_up_the_others() -> None:
    events = hub()
    events.backlog = 5
    fast = connect(events)
    slow = connect(events)
    slow.stall()
    for seq in range(1, 21):
        await publish(events, range(seq, seq + 1))
        await drained(events)

    assert ids(fast.written) == list(range(1, 21))
    assert events.dropped == 1 and len(events.subscribers) == 1
    slow.resume()
    await asyncio.sleep(0.01)
    assert slow.written[-1].startswith(b"retry: 5000\n")
