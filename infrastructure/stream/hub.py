"""The per-process event hub: one JetStream consumer feeding in-process subscribers (SSE clients).

Messages arriving in the same few milliseconds are handed to subscribers as one batch, each event's
SSE frame encoded once for all of them, the batch framed for the wire once, and written straight to
every client's transport in one loop turn (through the server's send only when a transport cannot take
it at once). Flushes are spaced by what the last one cost, so under load batches grow instead of the loop
falling behind. The hub never waits for a subscriber: one that cannot take its writes at once has the
rest queued, and is dropped (told to come back with its Last-Event-ID) once more than its backlog
limit is queued. A subscriber resuming from a JetStream sequence gets the missed events from the
in-memory replay buffer, or from JetStream when they are older, with no gap and no duplicate against
the live feed.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import nats.errors
import structlog
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from application.envelope import envelope_view
from infrastructure.telemetry import metrics, tracing
from infrastructure.eventlog.projector import cancel_requested
from infrastructure.stream.relay import StreamSettings, ensure_stream

log = structlog.get_logger(__name__)

FLUSH_DELAY = 0.004  # seconds: messages arriving within this window go out as one batch
FLUSH_GAP = 0.5  # after a flush, the next waits at least this many times as long as it took
FLUSH_SLICE = 64  # subscribers written to per loop turn


@dataclass(frozen=True)
class Delivered:
    """One event as the hub hands it out: JetStream sequence, routing fields and the SSE frame."""

    seq: int
    site_id: str | None
    stream_type: str
    stream_id: str
    event_type: str
    frame: bytes
    traceparent: str | None = None  # the command's span, from the message's header (read while tracing)


# The routing fields of the event envelope (the message body), read without decoding the rest.
_decode_routing = msgspec.json.Decoder(envelope_view("Routing", "site_id", "stream_type", "stream_id", "event_type")).decode


def delivered_from(seq: int, data: bytes, traceparent: str | None = None) -> Delivered:
    """The message body is the envelope: the SSE frame's `data:` is that body as it came."""
    head: Any = _decode_routing(data)
    frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, head.event_type.encode(), data)
    return Delivered(seq, head.site_id, head.stream_type, head.stream_id, head.event_type, frame, traceparent)


Filter = Callable[[Delivered], bool]


@dataclass(frozen=True)
class Chunk:
    """What one subscriber gets from one flush: the SSE bytes, how many events, the last sequence."""

    frames: bytes
    count: int
    last_seq: int


Write = Callable[[bytes], Awaitable[None]]  # the connection's send of body bytes (a coroutine, normally)
# Bytes already framed for the wire written straight to the connection's transport; False when it cannot
# take them now (its buffer is full, or it is closing): the write then goes through `Write`, which waits.
Direct = Callable[[bytes], bool]


def chunked(body: bytes) -> bytes:
    """`body` as one chunk of an HTTP/1.1 chunked response (what the server's send would write)."""
    return b"%x\r\n%s\r\n" % (len(body), body)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Go on with a coroutine that was started by hand and suspended, yielding `waiting_on` (what
    `yield from` does for a coroutine it starts itself)."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown into the coroutine, as `yield from` would
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as done:
                return done.value


@dataclass(eq=False)
class Subscriber:
    """One client of the hub. Until `attach`, its events wait in `queue`. Once attached, the hub writes
    each flush straight to the connection (`write`, the server's send of body bytes) in its own loop
    turn: no task wakes up per client and event. A write that cannot finish at once (the connection's
    buffer is full: the client reads slowly) goes on in a task, and later events queue behind it; more
    than `limit` events queued and the client is dropped, told with `retry:` to come back with its
    Last-Event-ID."""

    filter: Filter | None  # None: every event (the batch's frames are then shared, not rebuilt)
    limit: int
    queue: deque[Chunk] = field(default_factory=deque)
    pending: int = 0  # events queued, not yet written
    dropped: bool = False
    last_seq: int = 0
    write: Write | None = None
    direct: Direct | None = None  # the transport itself, once the response has started (see `attach`)
    closing: bool = False  # a last message (drop or end) is queued; nothing more is taken
    broken: bool = False  # the connection failed under a write
    _draining: asyncio.Task[None] | None = None
    _ended: asyncio.Future[None] | None = None

    def offer(self, batch: list[Delivered], joined: bytes, wire: bytes | None = None) -> bool:
        """Hand over the matching events; False when this subscriber is too far behind and was dropped.
        `wire` is `joined` framed for the transport once per flush (`chunked`), shared by every
        subscriber taking the whole batch."""
        if self.dropped or self.closing:
            return not self.dropped
        if self.filter is None and batch[0].seq > self.last_seq:
            frames, count, last = joined, len(batch), batch[-1].seq
        else:
            wire = None
            mine = [d for d in batch if d.seq > self.last_seq and (self.filter is None or self.filter(d))]
            if not mine:
                return True
            frames, count, last = b"".join(d.frame for d in mine), len(mine), mine[-1].seq
        if self.write is not None and self._draining is None:
            self.last_seq = last
            self._write_now(frames, wire)
            return not self.broken
        if self.pending + count > self.limit:
            self.drop()
            return False
        self.pending += count
        self.last_seq = last
        self.queue.append(Chunk(frames, count, last))
        return True

    def attach(self, write: Write, direct: Direct | None = None) -> asyncio.Future[None]:
        """Start writing to the connection; returns a future done once the subscriber has said its last
        word (dropped, or `end` called) and it was written. With `direct`, writes that need no waiting
        skip the server's send and go to the transport as pre-framed (`chunked`) bytes."""
        self.write = write
        self.direct = direct
        if self.queue and self._draining is None:
            self._draining = asyncio.ensure_future(self._drain(None, None))
        return self.ended

    @property
    def ended(self) -> asyncio.Future[None]:
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        return self._ended

    def send(self, data: bytes) -> None:
        """Write bytes that are no event (a heartbeat) in order with the events."""
        if self.closing or self.dropped:
            return
        if self.write is not None and self._draining is None:
            self._write_now(data)
        else:
            self.queue.append(Chunk(data, 0, self.last_seq))

    def end(self, last_words: bytes) -> None:
        """Write `last_words` after everything queued, take nothing more, then resolve `ended`."""
        if self.closing:
            return
        self.closing = True
        self.queue.append(Chunk(last_words, 0, self.last_seq))
        if self.write is not None and self._draining is None:
            self._draining = asyncio.ensure_future(self._drain(None, None))

    def drop(self) -> None:
        """Too far behind: forget what is queued and end with a hint to resume with Last-Event-ID."""
        if self.dropped:
            return
        self.dropped = True
        self.queue.clear()
        self.pending = 0
        self.closing = False
        self.end(b"retry: 5000\n: too far behind; reconnect with Last-Event-ID to resume\n\n")

    def close(self) -> None:
        """The connection is gone: stop writing at once."""
        self.closing = True
        self.queue.clear()
        if self._draining is not None and self._draining is not asyncio.current_task():
            self._draining.cancel()
        if not self.ended.done():
            self.ended.set_result(None)

    def _write_now(self, data: bytes, wire: bytes | None = None) -> None:
        if self.direct is not None and self.direct(chunked(data) if wire is None else wire):
            return
        assert self.write is not None
        coro = self.write(data)
        if not isinstance(coro, types.CoroutineType):  # a server whose send is some other awaitable
            self._draining = asyncio.ensure_future(self._drain(coro, None))
            return
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the connection failed; the request's own task sees it too
            self._fail(exc)
            return
        self._draining = asyncio.ensure_future(self._drain(coro, waiting_on))

    async def _drain(self, started: Awaitable[None] | None, waiting_on: Any) -> None:
        """Finish a write that could not complete at once (a coroutine suspended on `waiting_on`, or an
        awaitable not started yet), then write what queued up meanwhile; back to direct writes once the
        queue is empty."""
        try:
            if isinstance(started, types.CoroutineType) and waiting_on is not None:
                await _resume(started, waiting_on)
            elif started is not None:
                await started
            while self.queue:
                chunk = self.queue.popleft()
                self.pending -= chunk.count
                assert self.write is not None
                await self.write(chunk.frames)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the connection failed under the write
            self._fail(exc)
        finally:
            self._draining = None
        if self.closing and not self.ended.done():
            self.ended.set_result(None)

    def _fail(self, exc: Exception) -> None:
        log.info("SSE client write failed", error=repr(exc))
        self.broken = True
        self.close()


class EventHub:
    """Subscribes once to the JetStream stream and fans events out to in-process subscribers."""

    def __init__(self, nats_url: str, stream: StreamSettings, *, replay_buffer: int = 10000, backlog: int = 2000) -> None:
        self.nats_url = nats_url
        self.stream = stream
        self.backlog = backlog
        self.recent: deque[Delivered] = deque(maxlen=replay_buffer)
        self.subscribers: set[Subscriber] = set()
        self.last_seq = 0
        self.delivered = 0
        self.dropped = 0
        self._pending: list[Delivered] = []
        self._flush_scheduled = False
        self._flushed_at = 0.0
        self.flush_cost = 0.0  # seconds the last flush took
        self.flushes = 0
        self._nc: nats.NATS | None = None
        self._js: nats.js.JetStreamContext | None = None
        self._sub = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the hub's NATS connection is up now (it reconnects by itself)."""
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="event-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for sub in list(self.subscribers):
            sub.end(b"retry: 2000\n: server stopping; reconnect with Last-Event-ID to resume\n\n")
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def _connect_forever(self) -> None:
        while True:
            try:
                await self._connect()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if cancel_requested():
                    raise asyncio.CancelledError from exc
                log.warning("event hub cannot reach NATS yet; retrying", error=repr(exc))
                await asyncio.sleep(1.0)

    async def _connect(self) -> None:
        self._nc = await nats.connect(
            self.nats_url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.5
        )
        self._js = self._nc.jetstream()
        await ensure_stream(self._js, self.stream)
        info = await self._js.stream_info(self.stream.name)
        self.last_seq = info.state.last_seq
        self._sub = await self._js.subscribe(
            f"{self.stream.prefix}.>",
            cb=self._on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.last_seq + 1),
        )
        self.ready.set()
        log.info("event hub subscribed", stream=self.stream.name, from_seq=self.last_seq + 1)

    # -- live feed --------------------------------------------------------------------------------

    async def _on_message(self, msg: nats.aio.msg.Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.last_seq:
            return  # an ordered consumer reset may redeliver
        self.last_seq = seq
        try:
            item = delivered_from(seq, msg.data, msg.headers.get("traceparent") if tracing.enabled() and msg.headers else None)
        except msgspec.DecodeError:
            log.warning("event hub skipped a message it cannot read", seq=seq, subject=msg.subject)
            return
        self.recent.append(item)
        self._pending.append(item)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Writing to every client takes the loop for a while (in slices, so the relay, requests and this
        consumer get turns in between); after a flush, leave the loop to everything else for at least
        FLUSH_GAP times as long before the next one."""
        self._flush_scheduled = True
        loop = asyncio.get_running_loop()
        loop.call_at(max(loop.time() + FLUSH_DELAY, self._flushed_at + FLUSH_GAP * self.flush_cost), self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._flush_scheduled = False
            return
        joined = b"".join(d.frame for d in batch)
        wire = chunked(joined)  # framed once here, not once per client
        # Subscribers joining while this batch goes out are not in this list; they get it from `recent`.
        span = self._delivery_span(batch) if tracing.enabled() else None
        self._flush_slice(batch, joined, wire, list(self.subscribers), 0, 0.0, span)

    def _delivery_span(self, batch: list[Delivered]) -> Any:
        """The span of one flush to every SSE client, continuing the traces of the events it carries."""
        attributes = {**tracing.messaging(self.stream.name, len(batch)), "charter.sse.clients": len(self.subscribers)}
        return tracing.start_linked_span("sse deliver", (tracing.span_context_of(d.traceparent) for d in batch), attributes)

    def _flush_slice(
        self, batch: list[Delivered], joined: bytes, wire: bytes, subscribers: list[Subscriber], start: int, cost: float,
        span: Any = None,
    ) -> None:
        started = time.perf_counter()
        written = subscribers[start : start + FLUSH_SLICE]
        metrics.SSE_WRITES.inc(len(written))
        for sub in written:
            if not sub.offer(batch, joined, wire):
                self.subscribers.discard(sub)
                metrics.SSE_CLIENTS.set(len(self.subscribers))
                if sub.dropped:
                    self.dropped += 1
                    metrics.SSE_DROPPED.inc()
        cost += time.perf_counter() - started
        loop = asyncio.get_running_loop()
        if start + FLUSH_SLICE < len(subscribers):
            loop.call_soon(self._flush_slice, batch, joined, wire, subscribers, start + FLUSH_SLICE, cost, span)
            return
        if span is not None:
            span.end()
        self.delivered += len(batch)
        self.flushes += 1
        self.flush_cost = cost
        metrics.SSE_FLUSH_SECONDS.observe(cost)
        metrics.SSE_FLUSH_EVENTS.observe(len(batch))
        self._flushed_at = loop.time()
        self._flush_scheduled = False
        if self._pending:  # arrived while this batch went out
            self._schedule_flush()

    # -- subscribers ------------------------------------------------------------------------------

    def subscribe(self, filter: Filter | None, after: int | None) -> tuple[Subscriber, list[Delivered], tuple[int, int] | None]:
        """Register a subscriber. Returns it, the missed events held in memory, and the sequence range
        `(first, last)` still to fetch from JetStream (None when memory covers everything)."""
        sub = Subscriber(filter=filter, limit=self.backlog)
        # Events still waiting for the flush go to the new subscriber through its queue.
        flushed_up_to = self._pending[0].seq - 1 if self._pending else self.last_seq
        sub.last_seq = flushed_up_to if after is None else after
        self.subscribers.add(sub)
        metrics.SSE_CLIENTS.set(len(self.subscribers))
        if after is None or after >= flushed_up_to:
            return sub, [], None
        oldest = self.recent[0].seq if self.recent else flushed_up_to + 1
        held = [d for d in self.recent if after < d.seq <= flushed_up_to and (filter is None or filter(d))]
        if after + 1 >= oldest:
            return sub, held, None
        return sub, held, (after + 1, min(oldest - 1, flushed_up_to))

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        metrics.SSE_CLIENTS.set(len(self.subscribers))
        sub.close()

    async def replay(self, first: int, last: int, filter: Filter | None) -> AsyncIterator[list[Delivered]]:
        """Events with sequences first..last read back from JetStream, in batches."""
        if self._js is None:
            raise RuntimeError("the event hub is not connected to NATS")
        try:
            info = await self._js.stream_info(self.stream.name)
        except NotFoundError:
            return
        first = max(first, info.state.first_seq)
        if first > last:
            return
        sub = await self._js.subscribe(
            f"{self.stream.prefix}.>",
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first),
        )
        try:
            batch: list[Delivered] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=5)
                except nats.errors.TimeoutError:
                    break  # the rest of the range was removed by the stream's limits
                seq = msg.metadata.sequence.stream
                if seq > last:
                    break
                item = delivered_from(seq, msg.data)
                if filter is None or filter(item):
                    batch.append(item)
                if len(batch) >= 500:
                    yield batch
                    batch = []
                if seq >= last:
                    break
            if batch:
                yield batch
        finally:
            await sub.unsubscribe()
