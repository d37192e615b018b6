"""The relay: the event table is the outbox; every event goes to JetStream exactly once, in global order.

The relay tails the global order with the projectors' never-skip cursor and publishes with many acks
in flight. Each message carries `Nats-Msg-Id` (the event id) and `Nats-Expected-Last-Msg-Id` (the
previous event's id), so JetStream itself refuses a gap, a reordering or a second copy; the cursor
advances only after the PubAcks. After any failure the relay resynchronises from the last message
the stream holds. At most one relay leads across processes (advisory lock); others stand by.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import msgspec
import nats
import structlog
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from application.ports import StoredEvent
from infrastructure import metrics
from infrastructure.eventstore import init_connection, read_global
from infrastructure.projector import cancel_requested, lock_key, wait_or_timeout

log = structlog.get_logger(__name__)

RELAY = "relay"
WRONG_LAST_MSG_ID = 10070


@dataclass(frozen=True)
class StreamSettings:
    """Where and how events are kept in JetStream."""

    name: str = "CHARTER_EVENTS"
    prefix: str = "charter.events"
    max_age_days: float = 30.0
    max_bytes: int = -1  # JetStream reserves max_bytes up front; age is the limit that matters
    duplicate_window_s: float = 120.0
    replicas: int = 1

    @property
    def subjects(self) -> list[str]:
        return [f"{self.prefix}.>"]


def token(text: str | None, default: str) -> str:
    """A NATS subject token: no dots, spaces or wildcards."""
    if not text:
        return default
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def subject_of(event: StoredEvent, prefix: str) -> str:
    """`<prefix>.<site|global>.<stream_type>.<event name>`, e.g. charter.events.global.plugin.Installed."""
    name = event.event_type.split(".", 1)[-1]
    return f"{prefix}.{token(event.site_id, 'global')}.{token(event.stream_type, 'stream')}.{token(name, 'event')}"


def envelope(event: StoredEvent) -> bytes:
    return msgspec.json.encode(
        {
            "event_id": str(event.event_id),
            "position": event.position,
            "transaction_id": event.transaction_id,
            "stream_id": event.stream_id,
            "stream_type": event.stream_type,
            "stream_version": event.stream_version,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "site_id": event.site_id,
            "recorded_at": event.recorded_at,
            "payload": event.payload,
            "metadata": event.metadata,
        }
    )


def headers_of(event: StoredEvent, previous_id: str | None) -> dict[str, str]:
    headers = {
        "Nats-Msg-Id": str(event.event_id),
        "Charter-Position": str(event.position),
        "Charter-Transaction-Id": str(event.transaction_id),
        "Charter-Event-Type": event.event_type,
        "Charter-Stream-Id": event.stream_id,
    }
    if previous_id is not None:
        headers["Nats-Expected-Last-Msg-Id"] = previous_id
    meta = event.metadata
    if meta.get("traceparent"):
        headers["traceparent"] = meta["traceparent"]
    if meta.get("correlation_id"):
        headers["Charter-Correlation-Id"] = meta["correlation_id"]
    if event.site_id:
        headers["Charter-Site-Id"] = event.site_id
    return headers


async def ensure_stream(js: nats.js.JetStreamContext, settings: StreamSettings) -> None:
    """Create the stream, or bring its limits up to date."""
    config = StreamConfig(
        name=settings.name,
        subjects=settings.subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.max_age_days * 86400,
        max_bytes=settings.max_bytes,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.replicas,
        allow_direct=True,
    )
    try:
        await js.stream_info(settings.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("jetstream stream created", stream=settings.name)
    else:
        await js.update_stream(config)


@dataclass
class RelayState:
    leading: bool = False
    connected: bool = False
    published: int = 0
    last_error: str | None = None
    cursor: tuple[int, int] = (0, 0)
    listeners: list[Callable[[int], Awaitable[None] | None]] = field(default_factory=list)


class Relay:
    """Publishes the log to JetStream; run() until cancelled."""

    def __init__(
        self,
        dsn: str,
        nats_url: str,
        stream: StreamSettings,
        wakeup: asyncio.Event | None = None,
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
        ack_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.nats_url = nats_url
        self.stream = stream
        self.wakeup = wakeup or asyncio.Event()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.ack_timeout = ack_timeout
        self.state = RelayState()
        self._nc: nats.NATS | None = None

    async def run(self) -> None:
        while True:
            if cancel_requested():
                raise asyncio.CancelledError
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if cancel_requested():  # a library turned our cancellation into its own error
                    raise asyncio.CancelledError from exc
                self.state.last_error = repr(exc)
                log.warning("relay interrupted; retrying", error=repr(exc))
                await asyncio.sleep(self.poll_interval)
            finally:
                self.state.leading = False

    async def _connect_nats(self) -> nats.js.JetStreamContext:
        if self._nc is None or self._nc.is_closed:

            async def disconnected() -> None:
                self.state.connected = False

            async def reconnected() -> None:
                self.state.connected = True

            async def failed(exc: Exception) -> None:
                if self.state.last_error != repr(exc):
                    log.warning("relay cannot reach NATS", error=repr(exc))
                self.state.last_error = repr(exc)

            self.state.last_error = f"connecting to NATS at {self.nats_url}"
            self._nc = await nats.connect(
                self.nats_url,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=failed,
            )
            self.state.last_error = None
        self.state.connected = self._nc.is_connected
        js = self._nc.jetstream(timeout=self.ack_timeout)
        await ensure_stream(js, self.stream)
        return js

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        self._nc = None

    async def _lead(self) -> None:
        conn = await asyncpg.connect(self.dsn, statement_cache_size=0)
        await init_connection(conn)
        try:
            await conn.execute(
                "INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", RELAY
            )
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key("leader", RELAY)):
                await asyncio.sleep(self.poll_interval)  # another process relays; stand by
            self.state.leading = True
            log.info("relay leading", stream=self.stream.name)
            js = await self._connect_nats()
            cursor, previous_id = await self._resync(conn, js)
            while True:
                if cancel_requested():  # swallowed by a library call above
                    raise asyncio.CancelledError
                self.wakeup.clear()
                events = await read_global(conn, cursor, self.batch_size)
                if events:
                    previous_id = await self._publish(js, events, previous_id)
                    cursor = (events[-1].transaction_id, events[-1].position)
                    await conn.execute(
                        "UPDATE checkpoints SET transaction_id = $2::text::xid8, position = $3, updated_at = now()"
                        " WHERE name = $1",
                        RELAY,
                        str(cursor[0]),
                        cursor[1],
                    )
                    self.state.cursor = cursor
                    self.state.last_error = None
                if len(events) < self.batch_size:
                    await wait_or_timeout(self.wakeup, self.poll_interval)
        finally:
            await conn.close(timeout=2)

    async def _resync(self, conn: asyncpg.Connection, js: nats.js.JetStreamContext) -> tuple[tuple[int, int], str | None]:
        """Start after whichever is further: the stored cursor or the last event the stream holds."""
        row = await conn.fetchrow(
            "SELECT transaction_id::text::bigint AS tx, position FROM checkpoints WHERE name = $1", RELAY
        )
        cursor = (row["tx"], row["position"])
        previous_id = None
        try:
            info = await js.stream_info(self.stream.name)
            if info.state.messages:
                last = await js.get_msg(self.stream.name, seq=info.state.last_seq, direct=False)
                headers = last.headers or {}
                previous_id = headers.get("Nats-Msg-Id")
                held = (int(headers.get("Charter-Transaction-Id", 0)), int(headers.get("Charter-Position", 0)))
                if held > cursor:
                    cursor = held
                    await conn.execute(
                        "UPDATE checkpoints SET transaction_id = $2::text::xid8, position = $3, updated_at = now()"
                        " WHERE name = $1",
                        RELAY,
                        str(cursor[0]),
                        cursor[1],
                    )
        except NotFoundError:
            pass
        self.state.cursor = cursor
        return cursor, previous_id

    async def _publish(self, js: nats.js.JetStreamContext, events: list[StoredEvent], previous_id: str | None) -> str | None:
        futures = []
        for event in events:
            futures.append(
                await js.publish_async(
                    subject_of(event, self.stream.prefix),
                    envelope(event),
                    headers=headers_of(event, previous_id),
                )
            )
            previous_id = str(event.event_id)
        done, pending = await asyncio.wait(futures, timeout=self.ack_timeout)
        for future in pending:
            future.cancel()
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(futures)} publishes not acknowledged")
        for future in futures:
            exc = future.exception()
            if exc is not None:
                if isinstance(exc, APIError) and exc.err_code == WRONG_LAST_MSG_ID:
                    raise RuntimeError("stream moved on (another publisher?); resynchronising") from exc
                raise exc
        self.state.published += len(events)
        metrics.RELAY_PUBLISHED.inc(len(events))
        return previous_id
