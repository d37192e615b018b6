"""The per-process event hub: one JetStream consumer feeding in-process subscriber queues (SSE clients).

Messages arriving in the same few milliseconds are handed to subscribers as one batch, each event's
SSE frame encoded once for all of them. The hub never waits for a subscriber: one whose queue holds
more than its backlog limit is dropped (and told to come back with its Last-Event-ID). A subscriber
resuming from a JetStream sequence gets the missed events from the in-memory replay buffer, or from
JetStream when they are older, with no gap and no duplicate against the live feed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec
import nats
import nats.errors
import structlog
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from infrastructure import metrics
from infrastructure.projector import cancel_requested
from infrastructure.relay import StreamSettings, ensure_stream

log = structlog.get_logger(__name__)

FLUSH_DELAY = 0.004  # seconds: messages arriving within this window go out as one batch


@dataclass(frozen=True)
class Delivered:
    """One event as the hub hands it out: JetStream sequence, routing fields and the SSE frame."""

    seq: int
    site_id: str | None
    stream_type: str
    stream_id: str
    event_type: str
    position: int
    recorded_at: str
    frame: bytes


class _Header(msgspec.Struct):
    stream_id: str
    stream_type: str
    event_type: str
    position: int
    site_id: str | None = None
    recorded_at: str = ""


_decode_header = msgspec.json.Decoder(_Header).decode


def delivered_from(seq: int, data: bytes) -> Delivered:
    head = _decode_header(data)
    frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, head.event_type.encode(), data)
    return Delivered(seq, head.site_id, head.stream_type, head.stream_id, head.event_type, head.position, head.recorded_at, frame)


Filter = Callable[[Delivered], bool]


@dataclass(frozen=True)
class Chunk:
    """What one subscriber gets from one flush: the SSE bytes, how many events, the last sequence."""

    frames: bytes
    count: int
    last_seq: int


@dataclass(eq=False)
class Subscriber:
    filter: Filter | None  # None: every event (the batch's frames are then shared, not rebuilt)
    limit: int
    queue: asyncio.Queue[Chunk | None] = field(default_factory=asyncio.Queue)
    pending: int = 0
    dropped: bool = False
    last_seq: int = 0

    def offer(self, batch: list[Delivered], joined: bytes) -> bool:
        """Queue the matching events; False when this subscriber is too far behind and was dropped."""
        if self.dropped:
            return False
        if self.filter is None and batch[0].seq > self.last_seq:
            chunk = Chunk(joined, len(batch), batch[-1].seq)
        else:
            mine = [d for d in batch if d.seq > self.last_seq and (self.filter is None or self.filter(d))]
            if not mine:
                return True
            chunk = Chunk(b"".join(d.frame for d in mine), len(mine), mine[-1].seq)
        if self.pending + chunk.count > self.limit:
            self.drop()
            return False
        self.pending += chunk.count
        self.queue.put_nowait(chunk)
        return True

    def drop(self) -> None:
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.pending = 0
        self.queue.put_nowait(None)

    async def next(self, timeout: float) -> bytes | None:
        """The next frames; b"" after `timeout` with nothing new; None once dropped."""
        try:
            async with asyncio.timeout(timeout):
                chunk = await self.queue.get()
        except TimeoutError:
            return b""
        if chunk is None:
            return None
        self.pending -= chunk.count
        self.last_seq = chunk.last_seq
        return chunk.frames


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
        self._nc: nats.NATS | None = None
        self._js: nats.js.JetStreamContext | None = None
        self._sub = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="event-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for sub in list(self.subscribers):
            sub.drop()
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
            item = delivered_from(seq, msg.data)
        except msgspec.DecodeError:
            log.warning("event hub skipped a message it cannot read", seq=seq, subject=msg.subject)
            return
        self.recent.append(item)
        self._pending.append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        joined = b"".join(d.frame for d in batch)
        for sub in list(self.subscribers):
            if not sub.offer(batch, joined):
                self.subscribers.discard(sub)
                self.dropped += 1
                metrics.SSE_DROPPED.inc()
        self.delivered += len(batch)

    # -- subscribers ------------------------------------------------------------------------------

    def subscribe(self, filter: Filter | None, after: int | None) -> tuple[Subscriber, list[Delivered], tuple[int, int] | None]:
        """Register a subscriber. Returns it, the missed events held in memory, and the sequence range
        `(first, last)` still to fetch from JetStream (None when memory covers everything)."""
        sub = Subscriber(filter=filter, limit=self.backlog)
        # Events still waiting for the flush go to the new subscriber through its queue.
        flushed_up_to = self._pending[0].seq - 1 if self._pending else self.last_seq
        sub.last_seq = flushed_up_to if after is None else after
        self.subscribers.add(sub)
        if after is None or after >= flushed_up_to:
            return sub, [], None
        oldest = self.recent[0].seq if self.recent else flushed_up_to + 1
        held = [d for d in self.recent if after < d.seq <= flushed_up_to and (filter is None or filter(d))]
        if after + 1 >= oldest:
            return sub, held, None
        return sub, held, (after + 1, min(oldest - 1, flushed_up_to))

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

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
