"""The hub's per-client writer (infrastructure.stream.hub.Subscriber), against an in-memory connection whose
writes can be made to stall like a full socket buffer. No network, no NATS."""

from __future__ import annotations

import asyncio

from infrastructure.stream.hub import Delivered, Subscriber, chunked, delivered_from


class Connection:
    """Collects what is written; while `stalled`, a write waits (as uvicorn's send does when the
    transport's buffer is above its high-water mark) before it writes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.open = asyncio.Event()
        self.open.set()

    async def write(self, data: bytes) -> None:
        if not self.open.is_set():
            await self.open.wait()
        self.written.append(data)

    def stall(self) -> None:
        self.open.clear()

    def resume(self) -> None:
        self.open.set()


def event(seq: int) -> Delivered:
    return delivered_from(seq, b'{"stream_id":"s","stream_type":"plugin","event_type":"Plugin.Restarted","site_id":null,"position":%d}' % seq)


def batch(*seqs: int) -> tuple[list[Delivered], bytes]:
    items = [event(s) for s in seqs]
    return items, b"".join(d.frame for d in items)


def ids(written: list[bytes]) -> list[int]:
    return [int(line[4:]) for chunk in written for line in chunk.split(b"\n") if line.startswith(b"id: ")]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_attached_subscriber_is_written_to_within_the_offer_call() -> None:
    conn = Connection()
    sub = Subscriber(filter=None, limit=10)
    sub.attach(conn.write)

    assert sub.offer(*batch(1, 2))
    assert ids(conn.written) == [1, 2]  # no task, no loop turn in between


async def test_events_offered_before_attach_are_written_first_and_in_order() -> None:
    conn = Connection()
    sub = Subscriber(filter=None, limit=10)
    sub.offer(*batch(1, 2))
    sub.attach(conn.write)
    sub.offer(*batch(3))
    await settle()

    assert ids(conn.written) == [1, 2, 3]


async def test_a_stalled_write_goes_on_in_a_task_and_later_events_queue_behind_it() -> None:
    conn = Connection()
    sub = Subscriber(filter=None, limit=10)
    sub.attach(conn.write)
    conn.stall()

    assert sub.offer(*batch(1))
    assert sub.offer(*batch(2, 3))
    assert conn.written == [] and sub.pending == 2
    conn.resume()
    await settle()
    assert ids(conn.written) == [1, 2, 3] and sub.pending == 0

    sub.offer(*batch(4))  # caught up: direct writes again
    assert ids(conn.written) == [1, 2, 3, 4]


async def test_a_subscriber_more_than_its_limit_behind_is_dropped_with_a_retry_hint_after_what_was_in_flight() -> None:
    conn = Connection()
    sub = Subscriber(filter=None, limit=3)
    ended = sub.attach(conn.write)
    conn.stall()

    assert sub.offer(*batch(1))  # in flight
    assert sub.offer(*batch(2, 3))  # queued: 2 of 3
    assert not sub.offer(*batch(4, 5))  # 4 > 3: dropped
    assert sub.dropped and sub.pending == 0
    assert not sub.offer(*batch(6))

    conn.resume()
    await asyncio.wait_for(ended, 1)
    assert ids(conn.written) == [1]
    assert conn.written[-1].startswith(b"retry: 5000\n")


async def test_end_writes_its_last_words_after_everything_queued_then_takes_nothing_more() -> None:
    conn = Connection()
    sub = Subscriber(filter=None, limit=10)
    ended = sub.attach(conn.write)
    conn.stall()
    sub.offer(*batch(1))
    sub.offer(*batch(2))
    sub.end(b": bye\n\n")
    sub.offer(*batch(3))

    conn.resume()
    await asyncio.wait_for(ended, 1)
    assert ids(conn.written) == [1, 2]
    assert conn.written[-1] == b": bye\n\n"


async def test_heartbeats_keep_their_place_among_queued_events() -> None:
    conn = Connection()
    sub = Subscriber(filter=None, limit=10)
    sub.attach(conn.write)
    conn.stall()
    sub.offer(*batch(1))
    sub.send(b": heartbeat\n\n")
    sub.offer(*batch(2))
    conn.resume()
    await settle()

    assert conn.written[1] == b": heartbeat\n\n" and ids(conn.written) == [1, 2]


async def test_a_filtered_subscriber_gets_only_its_events_and_nothing_twice() -> None:
    conn = Connection()
    sub = Subscriber(filter=lambda d: d.seq % 2 == 0, limit=10, last_seq=2)
    sub.attach(conn.write)
    sub.offer(*batch(1, 2, 3, 4))
    sub.offer(*batch(4, 5, 6))

    assert ids(conn.written) == [4, 6]


async def test_close_stops_a_stalled_write_and_forgets_the_queue() -> None:
    conn = Connection()
    sub = Subscriber(filter=None, limit=10)
    ended = sub.attach(conn.write)
    conn.stall()
    sub.offer(*batch(1))
    sub.offer(*batch(2))

    sub.close()
    await settle()
    assert ended.done() and not sub.queue
    conn.resume()
    await settle()
    assert conn.written == []


async def test_a_write_that_fails_marks_the_subscriber_broken() -> None:
    async def broken(data: bytes) -> None:
        raise ConnectionResetError("gone")

    sub = Subscriber(filter=None, limit=10)
    ended = sub.attach(broken)

    assert not sub.offer(*batch(1))
    assert sub.broken and ended.done()


async def test_a_send_that_returns_another_awaitable_is_awaited_in_order() -> None:
    written: list[bytes] = []
    loop = asyncio.get_running_loop()

    def write(data: bytes) -> asyncio.Future[None]:  # as a server whose send hands back a future might
        done = loop.create_future()
        loop.call_soon(lambda: (written.append(data), done.set_result(None)))
        return done

    sub = Subscriber(filter=None, limit=10)
    sub.attach(write)
    sub.offer(*batch(1))
    sub.offer(*batch(2, 3))
    await settle()

    assert ids(written) == [1, 2, 3] and not sub.broken


class Transport:
    """The connection's transport as the direct path sees it: takes framed bytes until `full` (its buffer
    over the high-water mark), then refuses them and the write goes through the server's send."""

    def __init__(self) -> None:
        self.wire: list[bytes] = []
        self.full = False

    def write(self, wire: bytes) -> bool:
        if self.full:
            return False
        self.wire.append(wire)
        return True


def unchunked(wire: list[bytes]) -> list[bytes]:
    bodies = []
    for chunk in wire:
        size, _, rest = chunk.partition(b"\r\n")
        assert rest.endswith(b"\r\n") and len(rest) == int(size, 16) + 2
        bodies.append(rest[:-2])
    return bodies


async def test_a_direct_subscriber_writes_the_flush_framed_once_for_every_client() -> None:
    items, joined = batch(1, 2)
    wire = chunked(joined)
    transports = [Transport() for _ in range(3)]
    for transport in transports:
        sub = Subscriber(filter=None, limit=10)
        sub.attach(Connection().write, transport.write)
        assert sub.offer(items, joined, wire)
    assert all(t.wire[0] is wire for t in transports)  # the same bytes object: no copy per client
    assert ids(unchunked(transports[0].wire)) == [1, 2]


async def test_a_filtered_direct_subscriber_frames_its_own_events() -> None:
    transport = Transport()
    sub = Subscriber(filter=lambda d: d.seq != 2, limit=10)
    sub.attach(Connection().write, transport.write)
    items, joined = batch(1, 2, 3)
    sub.offer(items, joined, chunked(joined))
    sub.send(b": heartbeat\n\n")

    bodies = unchunked(transport.wire)
    assert ids(bodies) == [1, 3] and bodies[-1] == b": heartbeat\n\n"


async def test_a_full_transport_falls_back_to_the_send_and_keeps_order_and_the_drop_policy() -> None:
    conn, transport = Connection(), Transport()
    sub = Subscriber(filter=None, limit=3)
    ended = sub.attach(conn.write, transport.write)
    sub.offer(*batch(1))
    transport.full = True
    conn.stall()  # the send waits for the buffer to drain, as uvicorn's does
    assert sub.offer(*batch(2))  # through the send, waiting
    assert sub.offer(*batch(3, 4))  # queued behind it, not written directly
    transport.full = False
    assert sub.offer(*batch(5))  # still behind the queue: 3 of 3
    assert not sub.offer(*batch(6))  # 4 > 3: dropped
    conn.resume()
    await settle()

    assert ids(unchunked(transport.wire)) == [1] and ids(conn.written) == [2]
    assert ended.done() and b"retry:" in conn.written[-1]


async def test_a_caught_up_subscriber_goes_back_to_the_transport() -> None:
    conn, transport = Connection(), Transport()
    sub = Subscriber(filter=None, limit=10)
    sub.attach(conn.write, transport.write)
    transport.full = True
    conn.stall()
    sub.offer(*batch(1))
    sub.offer(*batch(2))
    transport.full = False
    conn.resume()
    await settle()
    sub.offer(*batch(3))

    assert ids(conn.written) == [1, 2] and ids(unchunked(transport.wire)) == [3]
