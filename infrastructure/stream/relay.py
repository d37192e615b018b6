"""The relay: the event table is the outbox; every event goes to JetStream exactly once, in global order.

The relay tails the global order with the projectors' never-skip cursor and publishes with many acks
in flight: it reads and publishes the next batches while earlier ones wait for their PubAcks, and the
checkpoint follows the acknowledged batches in order. Payload and metadata go out as stored (the JSON
text PostgreSQL returns is never decoded and re-encoded). Each message carries `Nats-Msg-Id` (the event id) and `Nats-Expected-Last-Msg-Id` (the
previous event's id), so JetStream itself refuses a gap, a reordering or a second copy; the cursor
advances only after the PubAcks. After any failure the relay resynchronises from the last message
the stream holds. At most one relay leads across processes (advisory lock); others stand by.

An event JetStream will never take (larger than the NATS server's max_payload, or refused for a
permanent reason such as the stream's max_msg_size) must neither stop the relay silently nor vanish
silently. After any failure the relay publishes the next event alone and waits for its PubAck, which
tells such an event from a passing outage. It then *holds* at that event: it is recorded in the table
relay_unpublishable, logged with its position and id at every retry, counted
(`charter_relay_unpublishable_events_total`, `charter_relay_holding`), and `/ready` answers 503 naming
it. The relay retries it every CHARTER_RELAY_RETRY_INTERVAL seconds, so fixing NATS (a larger
max_payload) resumes fan-out with nothing lost; `charter relay skip <event_id>` moves on without it.
Holding is the default because the usual cause is a NATS server configured smaller than Charter's event
limit, which holds back every large event: skipping would drop them from the stream for good, while a
hold loses nothing and is undone by fixing the server. Where live fan-out matters more than
completeness, CHARTER_RELAY_SKIP_UNPUBLISHABLE=true skips at once, recording each skip (listed by
`charter relay status`, counted by `charter_relay_skipped_events_total`). The event itself always stays
in the log, its read models and audit trails unaffected; only its copy in JetStream is missing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import nats
import structlog
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from application.envelope import passed_through
from infrastructure.telemetry import metrics, tracing
from infrastructure.stream import unpublishable
from infrastructure.eventlog.availability import DATABASE, is_unavailable
from infrastructure.eventlog.eventstore import HORIZON, NEVER_SKIP, PUBLIC_PAYLOAD, init_connection
from infrastructure.eventlog.projector import cancel_requested, lock_key, move_checkpoint, wait_or_timeout
from infrastructure.eventlog.upcasting import current_json

log = structlog.get_logger(__name__)

RELAY = "relay"
WRONG_LAST_MSG_ID = 10070
# JetStream refusals that retrying the same message can never cure.
MESSAGE_TOO_LARGE = 10054  # larger than the stream's max_msg_size
HEADERS_TOO_LARGE = 10097
PERMANENT_REFUSALS = {MESSAGE_TOO_LARGE, HEADERS_TOO_LARGE}
# The most the headers of a message are taken to need when its body alone is checked against
# max_payload (the exact size is computed for bodies this close to the limit, and after any failure).
HEADER_ALLOWANCE = 4096


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


def _subject(prefix: str, site_id: str | None, stream_type: str, event_type: str) -> str:
    """`<prefix>.<site|global>.<stream_type>.<event name>`, e.g. charter.events.global.plugin.Installed."""
    name = event_type.split(".", 1)[-1]
    return f"{prefix}.{token(site_id, 'global')}.{token(stream_type, 'stream')}.{token(name, 'event')}"


# The outbox read: the never-skip global order, with payload (credentials withheld) and metadata as
# stored JSON text (passed through, never decoded), the two metadata fields that become headers and the
# actor (a field of the envelope).
READ_OUTBOX = f"""
SELECT position, transaction_id::text::bigint, event_id::text, stream_id, stream_type, stream_version,
       event_type, schema_version, site_id, recorded_at, {PUBLIC_PAYLOAD}::text, metadata::text,
       metadata->>'traceparent', metadata->>'correlation_id', metadata->>'actor'
FROM events {NEVER_SKIP}"""


async def outbox_rows(conn: asyncpg.Connection, after: tuple[int, int], limit: int) -> list[asyncpg.Record]:
    """Up to `limit` rows of the outbox read after the cursor `(transaction_id, position)`."""
    horizon = await conn.fetchval(HORIZON)
    return await conn.fetch(READ_OUTBOX, str(after[0]), after[1], limit, horizon)


@dataclass(slots=True)
class Outgoing:
    """One event as the relay publishes it."""

    cursor: tuple[int, int]  # (transaction_id, position)
    event_id: str
    subject: str
    data: bytes
    headers: dict[str, str]

    def wire_size(self) -> int:
        """Bytes the NATS server counts against max_payload: the body and the encoded headers."""
        return len(self.data) + 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in self.headers.items())


class Outbox:
    """Reads the log in global order and turns each row into the message JetStream gets."""

    def __init__(self, prefix: str, skipped: set[str] | None = None) -> None:
        self.prefix = prefix
        self.skipped = skipped if skipped is not None else set()  # event ids an operator chose not to publish
        self._subjects: dict[tuple[str | None, str, str], str] = {}
        self._encode = msgspec.json.Encoder().encode

    async def read(self, conn: asyncpg.Connection, after: tuple[int, int], limit: int, previous_id: str | None) -> list[Outgoing]:
        """Up to `limit` events after the cursor; `previous_id` is the event id published just before them."""
        return self.messages(await outbox_rows(conn, after, limit), previous_id)

    def messages(self, rows: list[Any], previous_id: str | None) -> list[Outgoing]:
        out = []
        subjects, encode, skipped = self._subjects, self._encode, self.skipped
        for (position, tx, event_id, stream_id, stream_type, version, event_type, schema, site_id, recorded_at,
             payload, metadata, traceparent, correlation_id, actor) in rows:
            if skipped and event_id in skipped:
                continue
            key = (site_id, stream_type, event_type)
            subject = subjects.get(key)
            if subject is None:
                if len(subjects) > 10_000:
                    subjects.clear()
                subject = subjects[key] = _subject(self.prefix, site_id, stream_type, event_type)
            schema, payload = current_json(event_type, schema, payload, stream_id, version, position)
            data = encode(
                passed_through(event_id, position, tx, stream_id, stream_type, version, event_type, schema, site_id,
                               actor, recorded_at, payload, metadata)
            )
            headers = {
                "Nats-Msg-Id": event_id,
                "Charter-Position": str(position),
                "Charter-Transaction-Id": str(tx),
                "Charter-Event-Type": event_type,
                "Charter-Stream-Id": stream_id,
            }
            if previous_id is not None:
                headers["Nats-Expected-Last-Msg-Id"] = previous_id
            if traceparent:
                headers["traceparent"] = traceparent
            if correlation_id:
                headers["Charter-Correlation-Id"] = correlation_id
            if site_id:
                headers["Charter-Site-Id"] = site_id
            out.append(Outgoing((tx, position), event_id, subject, data, headers))
            previous_id = event_id
        return out


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


@dataclass(slots=True)
class Batch:
    """Published messages waiting for their PubAcks; `cursor` is the last one's place in the log."""

    cursor: tuple[int, int]
    acks: list[asyncio.Future[Any]]
    size: int


class Interrupted(Exception):
    """The relay stopped publishing on purpose (an event it cannot send); it restarts carefully."""


@dataclass
class RelayState:
    leading: bool = False
    connected: bool = False
    published: int = 0
    last_error: str | None = None
    cursor: tuple[int, int] = (0, 0)
    holding: dict[str, Any] | None = None  # the event the relay waits at, and why
    skipped: int = 0


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
        batches_in_flight: int = 4,
        skip_unpublishable: bool = False,
        retry_interval: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.nats_url = nats_url
        self.stream = stream
        self.wakeup = wakeup or asyncio.Event()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.ack_timeout = ack_timeout
        self.batches_in_flight = batches_in_flight
        self.skip_unpublishable = skip_unpublishable
        self.retry_interval = retry_interval
        self.state = RelayState()
        self.skipped: set[str] = set()
        self._careful = False  # after a failure, publish the next event alone first
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
                self._careful = True
                metrics.RELAY_ERRORS.inc()
                if is_unavailable(exc) or DATABASE.down:
                    DATABASE.failed(exc, "relay")
                else:
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
                # Another process relays; stand by. The database answered, so an error this process saw
                # before (the outage that cost it its connection) is over: /ready must not go on showing it.
                self.state.last_error = None
                await asyncio.sleep(self.poll_interval)
            self.state.leading = True
            log.info("relay leading", stream=self.stream.name)
            js = await self._connect_nats()
            cursor, previous_id = await self._resync(conn, js)
            self.skipped.clear()
            self.skipped.update(await unpublishable.skipped_ids(conn))
            if await unpublishable.settle_passed(conn, cursor):  # held by a relay before; in the stream now
                self._release()
            if self._careful or await unpublishable.listed(conn, held_only=True):
                cursor, previous_id = await self._publish_alone(conn, js, cursor, previous_id)
                self._careful = False
            checkpoints = await asyncpg.connect(self.dsn, statement_cache_size=0)
            try:
                # Reading and publishing go on while earlier batches wait for their PubAcks; the
                # checkpoint follows the acknowledged batches, in order. Either side failing stops both.
                in_flight: asyncio.Queue[Batch] = asyncio.Queue(maxsize=self.batches_in_flight)
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._confirm(checkpoints, in_flight), name="relay-confirm")
                        await self._feed(conn, js, cursor, previous_id, in_flight)
                except BaseExceptionGroup as failed:
                    raise failed.exceptions[0] from None  # the first failure says what went wrong
            finally:
                await checkpoints.close(timeout=2)
        finally:
            await conn.close(timeout=2)

    async def _feed(
        self, conn: asyncpg.Connection, js: nats.js.JetStreamContext, cursor: tuple[int, int], previous_id: str | None,
        in_flight: asyncio.Queue[Batch],
    ) -> None:
        """Read the log after `cursor` and publish it, handing each batch's PubAck futures to `_confirm`."""
        outbox = Outbox(self.stream.prefix, self.skipped)
        while True:
            if cancel_requested():  # swallowed by a library call above
                raise asyncio.CancelledError
            self.wakeup.clear()
            rows = await outbox_rows(conn, cursor, self.batch_size)
            messages = outbox.messages(rows, previous_id)
            too_large = self._first_too_large(messages)
            if too_large is not None:  # publish what comes before it, then let _publish_alone deal with it
                messages = messages[:too_large]
            if messages:
                acks = await self._publish(js, messages)
                previous_id = messages[-1].event_id
            else:
                acks = []
            if too_large is not None:
                if messages:
                    await in_flight.put(Batch(messages[-1].cursor, acks, len(messages)))
                await in_flight.join()  # everything before it acknowledged and checkpointed
                raise Interrupted("an event is larger than the NATS server's max_payload")
            if rows:
                cursor = (rows[-1][1], rows[-1][0])  # past events skipped by an operator too
                await in_flight.put(Batch(cursor, acks, len(messages)))
            if len(rows) < self.batch_size:
                await wait_or_timeout(self.wakeup, self.poll_interval)

    def _first_too_large(self, messages: list[Outgoing]) -> int | None:
        """Index of the first message the NATS server would refuse as larger than its max_payload (sending
        it would make the server close the connection)."""
        limit = self._nc.max_payload if self._nc is not None else 1 << 62
        near = limit - HEADER_ALLOWANCE
        for index, m in enumerate(messages):
            if len(m.data) > near and m.wire_size() > limit:
                return index
        return None

    async def _publish(self, js: nats.js.JetStreamContext, messages: list[Outgoing]) -> list[asyncio.Future[Any]]:
        """Send a batch (traced as continuing its events' traces); returns the PubAck futures."""
        with tracing.publish_span(self.stream.name, len(messages), (m.headers.get("traceparent") for m in messages)):
            return [await js.publish_async(m.subject, m.data, headers=m.headers) for m in messages]

    async def _confirm(self, conn: asyncpg.Connection, in_flight: asyncio.Queue[Batch]) -> None:
        """Await each batch's PubAcks in order, then move the checkpoint past it."""
        while True:
            batch = await in_flight.get()
            # nats-py leaves the future of a refused publish unresolved: a refusal shows as a timeout here,
            # and _publish_alone then finds out what JetStream says.
            done, pending = await asyncio.wait(batch.acks, timeout=self.ack_timeout) if batch.acks else ((), ())
            for future in pending:
                future.cancel()
            if pending:
                raise TimeoutError(f"{len(pending)} of {len(batch.acks)} publishes not acknowledged in {self.ack_timeout}s")
            for future in batch.acks:
                exc = future.exception()
                if exc is not None:
                    if isinstance(exc, APIError) and exc.err_code == WRONG_LAST_MSG_ID:
                        raise RuntimeError("stream moved on (another publisher?); resynchronising") from exc
                    raise exc
            await self._acknowledged(conn, batch)
            in_flight.task_done()

    async def _acknowledged(self, conn: asyncpg.Connection, batch: Batch) -> None:
        """Every message of `batch` is in the stream: record how far the relay got."""
        await move_checkpoint(conn, RELAY, batch.cursor)
        self.state.cursor = batch.cursor
        self.state.published += batch.size
        self.state.last_error = None
        metrics.RELAY_PUBLISHED.inc(batch.size)

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
                    await move_checkpoint(conn, RELAY, cursor)
        except NotFoundError:
            pass
        self.state.cursor = cursor
        return cursor, previous_id

    # -- events JetStream will not take ------------------------------------------------------------

    async def _publish_alone(
        self, conn: asyncpg.Connection, js: nats.js.JetStreamContext, cursor: tuple[int, int], previous_id: str | None
    ) -> tuple[tuple[int, int], str | None]:
        """Publish the next event by itself and wait for JetStream's answer, so that an event it will never
        take is found, recorded and held (or skipped) rather than failing every batch that carries it."""
        outbox = Outbox(self.stream.prefix, self.skipped)
        while True:
            rows = await outbox_rows(conn, cursor, 1)
            if not rows:
                return cursor, previous_id
            cursor = (rows[0][1], rows[0][0])
            messages = outbox.messages(rows, previous_id)
            if not messages:  # skipped earlier
                await self._acknowledged(conn, Batch(cursor, [], 0))
                continue
            message = messages[0]
            while (problem := await self._try_publish(js, message)) is not None:
                if await self._hold(conn, message, *problem):
                    break
            else:
                if await unpublishable.decide(conn, message.event_id, unpublishable.PUBLISHED, "relay (a retry went through)"):
                    log.warning("relay published the event it held", event_id=message.event_id, position=cursor[1])
                    self._release()
                await self._acknowledged(conn, Batch(cursor, [], 1))
                return cursor, message.event_id
            self._release()
            await self._acknowledged(conn, Batch(cursor, [], 0))  # skipped: the chain goes on from previous_id

    async def _try_publish(self, js: nats.js.JetStreamContext, message: Outgoing) -> tuple[int, str] | None:
        """Publish one message and wait for its PubAck: None when it is in the stream, (size, reason) when
        JetStream will never take it; any other failure is raised (the relay retries as usual)."""
        size = message.wire_size()
        limit = self._nc.max_payload if self._nc is not None else size
        if size > limit:
            return size, f"{size} bytes, more than the NATS server's max_payload of {limit} bytes"
        try:
            await js.publish(message.subject, message.data, headers=dict(message.headers), timeout=self.ack_timeout)
        except APIError as exc:
            if exc.err_code in PERMANENT_REFUSALS:
                return size, f"refused by JetStream: {exc.description} (err_code {exc.err_code})"
            raise
        return None

    async def _hold(self, conn: asyncpg.Connection, message: Outgoing, size: int, reason: str) -> bool:
        """Record that `message` cannot be published and wait for a decision: True once it is skipped (by
        an operator, or at once with skip_unpublishable), False when it is time to try it again."""
        event_type = message.headers.get("Charter-Event-Type", "?")
        attempts, decided = await unpublishable.record(conn, message.event_id, message.cursor, event_type, size, reason)
        where = {"event_id": message.event_id, "position": message.cursor[1], "transaction_id": message.cursor[0],
                 "event_type": event_type, "size": size, "reason": reason}
        if attempts == 1:
            metrics.RELAY_UNPUBLISHABLE.inc()
        if decided == unpublishable.SKIPPED:
            return self._skipped(where, "an operator")
        if self.skip_unpublishable:
            await unpublishable.decide(conn, message.event_id, unpublishable.SKIPPED, "relay (CHARTER_RELAY_SKIP_UNPUBLISHABLE)")
            return self._skipped(where, "the relay (CHARTER_RELAY_SKIP_UNPUBLISHABLE)")
        self.state.holding = {**where, "attempts": attempts, "skip_with": f"charter relay skip {message.event_id}"}
        self.state.last_error = f"holding at event {message.event_id} (position {message.cursor[1]}): {reason}"
        metrics.RELAY_HOLDING.set(1)
        log.error("relay cannot publish an event; holding at it until it is skipped or NATS takes it",
                  attempts=attempts, skip_with=f"charter relay skip {message.event_id}", **where)
        deadline = asyncio.get_running_loop().time() + self.retry_interval
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            if await unpublishable.outcome(conn, message.event_id) == unpublishable.SKIPPED:
                return self._skipped(where, "an operator")
            self.wakeup.clear()
            await wait_or_timeout(self.wakeup, min(self.poll_interval, left))
        return False

    def _skipped(self, where: dict[str, Any], by: str) -> bool:
        self.skipped.add(where["event_id"])
        self.state.skipped += 1
        metrics.RELAY_SKIPPED.inc()
        log.error("relay skipped an event it cannot publish; it is in the log but not in JetStream", skipped_by=by, **where)
        return True

    def _release(self) -> None:
        self.state.holding = None
        self.state.last_error = None
        metrics.RELAY_HOLDING.set(0)
