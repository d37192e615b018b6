"""The PostgreSQL event store: group-committed appends, stream reads and the never-skip global order.

Every event has a size limit (`max_event_bytes`, setting CHARTER_EVENT_MAX_BYTES): its payload and
metadata as JSON. It is checked in `append()`, before the command joins a group commit, so a command with
one event too large writes none of its events and costs the other commands of the batch nothing. PostgreSQL
keeps numbers as `numeric` and prints them in full (`1e300` comes back as 301 digits), so an event whose
JSON has an exponent is also measured as PostgreSQL will store and publish it. The size is that of
compact JSON; the stored text (jsonb adds a space after `,` and `:`) is at most 1.5 times as long, which
the embedded nats-server's max_payload allows for (`infrastructure.embedded.nats.nats_max_payload`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import structlog

from application.errors import ConcurrencyError, EventNotStorable, EventTooLarge, IdempotencyKeyReused
from application.ports import AppendRequest, AppendResult, Idempotency, NewEvent, StoredEvent
from domain.identity.user import WITHHELD_FIELDS
from infrastructure.audit import chain
from infrastructure.telemetry import metrics, tracing
from infrastructure.eventlog.availability import DATABASE, is_unavailable
from infrastructure.eventlog.stored_form import may_be_rewritten
from infrastructure.eventlog.upcasting import current
# The global order lives in global_order.py; its names are still importable from here.
from infrastructure.eventlog.global_order import (  # noqa: F401
    _READ_GLOBAL, EVENT_COLUMNS, HORIZON, NEVER_SKIP, READ_GLOBAL_ISOLATION, read_global, record,
)

log = structlog.get_logger(__name__)

GENESIS = chain.GENESIS
# Keys recorded before fingerprints were keyed lost their plain digests (migration 0005): they replay.
UNVERIFIED_FINGERPRINT = "unverified"
NOTIFY_CHANNEL = "charter_events"
MAX_EVENT_BYTES = 256 * 1024  # the default of CHARTER_EVENT_MAX_BYTES
# An event's size as PostgreSQL stores it, its largest payload field, and the payload and metadata as
# stored (what the hash covers, so that it verifies against the rows as read back).
_STORED_SIZE = """
SELECT octet_length(p::text) + octet_length(m::text),
       (SELECT key FROM jsonb_each(p) ORDER BY octet_length(value::text) DESC LIMIT 1), p::text, m::text
FROM (SELECT $1::text::jsonb AS p, $2::text::jsonb AS m) AS s
"""

_INSERT_EVENTS = f"""
INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type, schema_version,
                    payload, metadata, site_id, recorded_at, hash, chain_version)
SELECT e.event_id, e.stream_id, e.stream_type, e.stream_version, e.event_type, e.schema_version,
       e.payload::jsonb, e.metadata::jsonb, e.site_id, e.recorded_at, e.hash, {chain.CHAIN_VERSION}
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::int[],
            $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[])
     WITH ORDINALITY AS e(event_id, stream_id, stream_type, stream_version, event_type, schema_version,
                          payload, metadata, site_id, recorded_at, hash, n)
ORDER BY e.n
ON CONFLICT DO NOTHING
RETURNING event_id, position
"""

_INSERT_KEYS = """
INSERT INTO idempotency_keys (key, fingerprint, stream_id, version, position)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[])
ON CONFLICT DO NOTHING
RETURNING key
"""

# The payload as it may leave the database (published, listed): credentials withheld.
PUBLIC_PAYLOAD = "(events.payload - '{%s}'::text[])" % ",".join(WITHHELD_FIELDS)


def event_hash(prev: bytes, event: NewEvent | StoredEvent, payload: Any = None, metadata: Any = None) -> bytes:
    """Chain an event to the previous event of its stream, by the current chain version (the whole event:
    infrastructure/audit/chain.py). `payload`/`metadata`: the JSON as stored, when given."""
    return chain.hash_v2(prev, event, payload, metadata)


def largest_field(payload: dict[str, Any]) -> str | None:
    """The payload field taking most of an event's size (what a refusal names)."""
    sizes = {k: len(msgspec.json.encode(v)) for k, v in payload.items()}
    return max(sizes, key=sizes.__getitem__) if sizes else None


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb with msgspec on every pooled connection."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: msgspec.json.encode(v).decode(),
            decoder=msgspec.json.decode,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pooled connections hold no session state (LISTEN, SET and session locks use their own
    connections), so releasing one skips the default RESET ALL round trip. asyncpg still rolls back
    a transaction left open."""


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 20, connect_timeout: float = 5.0, **kwargs: Any
) -> asyncpg.Pool:
    """The shared pool. `connect_timeout` bounds each new connection (asyncpg waits 60 s by default), so
    a request meeting a server that accepts but does not answer fails fast with a 503."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_keep_session,
        timeout=connect_timeout,
        **kwargs,
    )



# What the database (or the encoding before it) refuses in one command's data, not in the batch: a NUL
# character in text or jsonb, a number out of range, text that is not UTF-8.
DEADLOCK_RETRIES = 5  # a batch rolled back by the deadlock detector is committed again, this many times
_UNSTORABLE = (asyncpg.DataError, msgspec.EncodeError, UnicodeEncodeError, OverflowError)


def _why(exc: BaseException) -> str:
    """The server's reason (it names no value); the client's own messages may quote the data."""
    if isinstance(exc, asyncpg.PostgresError) and getattr(exc, "severity", None):  # sent by the server
        return str(exc).splitlines()[0]
    return "its data is not storable (a NUL character, a number out of range or text that is not UTF-8)"


@dataclass
class _Pending:
    """One command's appends: `requests[0]` is its own stream, the rest are appended with it, all or none."""

    requests: list[AppendRequest]
    future: asyncio.Future[list[AppendResult]]
    link: Any = None  # the command's span (tracing on): the batch span links to it

    @property
    def request(self) -> AppendRequest:
        return self.requests[0]


class _Settled(Exception):
    """Some commands of a batch were settled (conflict or idempotent hit); commit the rest without them."""

    def __init__(self, settled: dict[int, AppendResult | BaseException]) -> None:
        super().__init__(f"{len(settled)} commands settled")
        self.settled = settled


def _by_owner(
    pending: list[_Pending], owners: list[int], settled: dict[int, AppendResult | BaseException]
) -> dict[int, AppendResult | BaseException]:
    """Outcomes per command from outcomes per request: a command's own stream speaks for it; a clash on a
    stream appended with it fails it too (it is then retried as a whole by its caller, or refused)."""
    firsts = {i: sum(len(p.requests) for p in pending[:i]) for i in range(len(pending))}
    out: dict[int, AppendResult | BaseException] = {}
    for index, outcome in sorted(settled.items()):
        owner = owners[index]
        if index == firsts[owner]:
            out[owner] = outcome
        elif owner not in out:
            request = pending[owner].requests[index - firsts[owner]]
            out[owner] = (
                outcome
                if isinstance(outcome, BaseException)
                else ConcurrencyError(request.stream_id, request.expected_version, None)
            )
    return out


class EventStore:
    """Appends through a group committer: concurrent commands share a transaction and one WAL flush.

    Each writer task takes whatever is queued the moment it becomes free (no fixed delay), so a lone
    command commits at once and a burst is committed in a few transactions. A version clash, an
    idempotency hit or data the database refuses settles only its own command; the rest of the batch
    is retried without it.
    """

    def __init__(
        self, pool: asyncpg.Pool, *, writers: int = 4, max_batch: int = 512, max_event_bytes: int = MAX_EVENT_BYTES
    ) -> None:
        self.pool = pool
        self.max_event_bytes = max_event_bytes
        self.writers = writers
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._writer(), name=f"charter-writer-{i}") for i in range(self.writers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("event store stopped"))

    # -- writing ----------------------------------------------------------------------------------

    async def append(self, request: AppendRequest) -> AppendResult:
        """Append all events of one stream atomically at `expected_version`, or none."""
        if not request.events:
            return AppendResult(request.stream_id, request.expected_version, None)
        return (await self.append_all([request]))[0]

    async def append_all(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append to several streams in one transaction, each at its expected version, or to none: a
        clash on any of them fails the whole command (so a registry stream written with a user's stream
        serialises commands that read it). Requests without events are answered without writing. Every
        event is measured against the size limit first: one too large refuses the whole command."""
        writing = [r for r in requests if r.events]
        for request in writing:
            versions = [e.stream_version for e in request.events]
            if versions != list(range(request.expected_version + 1, request.expected_version + 1 + len(versions))):
                raise ValueError(f"events of {request.stream_id} must be numbered from {request.expected_version + 1}: {versions}")
            try:
                stored = [await self._encode(event) for event in request.events]
            except _UNSTORABLE as exc:
                raise EventNotStorable(request.stream_id, _why(exc)) from None
            request.encoded = [(payload, metadata) for payload, metadata, _ in stored]
            request.hashes = self._chain(request.prev_hash, request.events, [as_stored for _, _, as_stored in stored])
        written: list[AppendResult] = []
        if writing:
            if not self._tasks:
                await self.start()
            future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
            with tracing.append_span(writing) as link:
                self._queue.put_nowait(_Pending(writing, future, link))
                written = await future
        by_stream = {r.stream_id: r for r in written}
        return [by_stream.get(r.stream_id, AppendResult(r.stream_id, r.expected_version, None)) for r in requests]

    @staticmethod
    def _chain(prev: bytes, events: list[NewEvent], stored: list[tuple[bytes, bytes]]) -> list[bytes]:
        """Each event's hash, chained from `prev`, over its payload and metadata as they will be read back."""
        hashes = []
        for event, (payload, metadata) in zip(events, stored):
            prev = event_hash(prev, event, msgspec.json.decode(payload), msgspec.json.decode(metadata))
            hashes.append(prev)
        return hashes

    async def _encode(self, event: NewEvent) -> tuple[str, str, tuple[bytes, bytes]]:
        """The event's payload and metadata as JSON, and as PostgreSQL will give them back (what the hash
        covers); EventTooLarge when together they exceed the limit."""
        payload, metadata = msgspec.json.encode(event.payload), msgspec.json.encode(event.metadata)
        size, field, as_stored = len(payload) + len(metadata), None, (payload, metadata)
        if size <= self.max_event_bytes and (may_be_rewritten(payload) or may_be_rewritten(metadata)):
            size, field, stored_payload, stored_metadata = await self.pool.fetchrow(
                _STORED_SIZE, payload.decode(), metadata.decode()
            )
            as_stored = (stored_payload.encode(), stored_metadata.encode())
        if size > self.max_event_bytes:
            raise EventTooLarge(event.event_type, size, self.max_event_bytes, field or largest_field(event.payload))
        return payload.decode(), metadata.decode(), as_stored

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.monotonic()
            try:
                with tracing.batch_span("eventstore commit", (), {"charter.commands": len(batch)}, links=[p.link for p in batch]):
                    await self._commit(batch)
                metrics.APPEND_COMMIT_SECONDS.observe(time.monotonic() - started)
                DATABASE.succeeded(started)
            except Exception as exc:  # connection lost, server gone: every command of the batch fails
                if is_unavailable(exc):
                    DATABASE.failed(exc, "append", started)
                else:
                    log.error("append batch failed", error=str(exc), commands=len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)

    async def _commit(self, batch: list[_Pending]) -> None:
        settled: list[tuple[_Pending, AppendResult | BaseException]] = []
        # Groups still to commit, each in a transaction of its own: the batch, then what is left of a
        # group after some of its commands were settled, or the halves of a group that held data the
        # database refused (a NUL character, ...), until the command holding it is settled alone.
        groups = [[p for p in batch if not p.future.cancelled()]]
        deadlocks = 0
        async with self.pool.acquire() as conn:
            while groups:
                pending = groups.pop()
                if not pending:
                    continue
                owners = [i for i, p in enumerate(pending) for _ in p.requests]
                try:
                    async with conn.transaction():
                        results = await self._insert(conn, [r for p in pending for r in p.requests])
                except _Settled as outcome:
                    by_owner = _by_owner(pending, owners, outcome.settled)
                    settled.extend((pending[i], o) for i, o in by_owner.items())
                    groups.append([p for i, p in enumerate(pending) if i not in by_owner])
                    continue
                except asyncpg.DeadlockDetectedError:
                    # Another writer's batch took rows of the same streams in the opposite order (two
                    # activations at different sites, each with the plugin's registry) and PostgreSQL
                    # rolled this one back. Committed again, clashes with the other settle as conflicts.
                    deadlocks += 1
                    if deadlocks > DEADLOCK_RETRIES:
                        raise
                    groups.append(pending)
                    continue
                except _UNSTORABLE as exc:
                    if len(pending) == 1:
                        stream_id = pending[0].requests[0].stream_id
                        settled.append((pending[0], EventNotStorable(stream_id, _why(exc))))
                    else:
                        half = len(pending) // 2
                        groups += [pending[half:], pending[:half]]
                    continue
                metrics.APPEND_BATCH.observe(len(pending))
                metrics.EVENTS_APPENDED.inc(sum(len(r.events) for p in pending for r in p.requests))
                metrics.count_plugin_events(e for p in pending for r in p.requests for e in r.events)
                for i, p in enumerate(pending):
                    if not p.future.done():
                        p.future.set_result([res for owner, res in zip(owners, results) if owner == i])
            # Settled only now, after the rest committed: a retry racing its first attempt in the same
            # batch finds that attempt's idempotency key.
            for p, outcome in settled:
                await self._settle(conn, p, outcome)

    async def _settle(self, conn: asyncpg.Connection, pending: _Pending, outcome: AppendResult | BaseException) -> None:
        request = pending.request
        if request.idempotency and (isinstance(outcome, ConcurrencyError) or getattr(outcome, "position", 0) is None):
            try:
                outcome = await self.idempotent_result(request.idempotency, conn) or outcome
            except IdempotencyKeyReused as exc:
                outcome = exc
        if isinstance(outcome, ConcurrencyError):
            clashed = next((r for r in pending.requests if r.stream_id == outcome.details["stream_id"]), request)
            current = await conn.fetchval("SELECT max(stream_version) FROM events WHERE stream_id = $1", clashed.stream_id)
            outcome = ConcurrencyError(clashed.stream_id, clashed.expected_version, current or 0)
        if pending.future.done():
            return
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result([outcome])

    async def _insert(self, conn: asyncpg.Connection, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        events = [(r, e, h) for r in requests for e, h in zip(r.events, r.hashes)]
        rows = await conn.fetch(
            _INSERT_EVENTS,
            [e.event_id for _, e, _ in events],
            [e.stream_id for _, e, _ in events],
            [e.stream_type for _, e, _ in events],
            [e.stream_version for _, e, _ in events],
            [e.event_type for _, e, _ in events],
            [e.schema_version for _, e, _ in events],
            [p for r in requests for p, _ in r.encoded],
            [m for r in requests for _, m in r.encoded],
            [e.site_id for _, e, _ in events],
            [e.recorded_at for _, e, _ in events],
            [h for _, _, h in events],
        )
        written = {r["event_id"]: r["position"] for r in rows}
        settled: dict[int, AppendResult | BaseException] = {}
        for index in await self._missing_predecessors(conn, requests):
            settled[index] = ConcurrencyError(requests[index].stream_id, requests[index].expected_version, None)
        missing = [e.event_id for _, e, _ in events if e.event_id not in written]
        existing = await self._existing(conn, missing) if missing else {}
        results = []
        for index, request in enumerate(requests):
            if index in settled:
                continue
            ids = [e.event_id for e in request.events]
            last = request.events[-1].stream_version
            if all(i in written for i in ids):
                results.append(AppendResult(request.stream_id, last, written[ids[-1]]))
            elif all(i in existing for i in ids):  # the very same events were appended before
                settled[index] = AppendResult(request.stream_id, last, existing[ids[-1]], duplicate=True)
            else:
                settled[index] = ConcurrencyError(request.stream_id, request.expected_version, None)
        if not settled:
            settled.update(await self._record_keys(conn, requests, results))
        if settled:
            raise _Settled(settled)
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(max(r.position or 0 for r in results)))
        return results

    async def _missing_predecessors(self, conn: asyncpg.Connection, requests: Sequence[AppendRequest]) -> list[int]:
        """Requests expecting a version the stream has not reached (the PK alone only catches clashes)."""
        expecting = [(i, r) for i, r in enumerate(requests) if r.expected_version > 0]
        if not expecting:
            return []
        rows = await conn.fetch(
            "SELECT e.stream_id, e.stream_version FROM events e"
            " JOIN unnest($1::text[], $2::int[]) AS x(stream_id, stream_version) USING (stream_id, stream_version)",
            [r.stream_id for _, r in expecting],
            [r.expected_version for _, r in expecting],
        )
        present = {(r["stream_id"], r["stream_version"]) for r in rows}
        return [i for i, r in expecting if (r.stream_id, r.expected_version) not in present]

    async def _existing(self, conn: asyncpg.Connection, event_ids: list[Any]) -> dict[Any, int]:
        rows = await conn.fetch("SELECT event_id, position FROM events WHERE event_id = any($1::uuid[])", event_ids)
        return {r["event_id"]: r["position"] for r in rows}

    async def _record_keys(
        self, conn: asyncpg.Connection, requests: Sequence[AppendRequest], results: list[AppendResult]
    ) -> dict[int, AppendResult | BaseException]:
        keyed = [(i, r, results[i]) for i, r in enumerate(requests) if r.idempotency]
        if not keyed:
            return {}
        rows = await conn.fetch(
            _INSERT_KEYS,
            [r.idempotency.key for _, r, _ in keyed],
            [r.idempotency.fingerprint for _, r, _ in keyed],
            [res.stream_id for _, _, res in keyed],
            [res.version for _, _, res in keyed],
            [res.position for _, _, res in keyed],
        )
        inserted = {r["key"] for r in rows}
        seen: set[str] = set()
        settled: dict[int, AppendResult | BaseException] = {}
        for index, request, result in keyed:
            key = request.idempotency.key
            if key not in inserted or key in seen:
                # Another command took this key first: answer with its result (looked up after rollback).
                settled[index] = AppendResult(result.stream_id, request.expected_version, None, duplicate=True)
            seen.add(key)
        return settled

    # -- reading ----------------------------------------------------------------------------------

    async def idempotent_result(
        self, idempotency: Idempotency, conn: asyncpg.Connection | None = None
    ) -> AppendResult | None:
        """The result first given for this Idempotency-Key, or None when the key is new."""
        query = "SELECT fingerprint, stream_id, version, position FROM idempotency_keys WHERE key = $1"
        if conn is None:
            row = await self.pool.fetchrow(query, idempotency.key)
        else:
            row = await conn.fetchrow(query, idempotency.key)
        if row is None:
            return None
        if row["fingerprint"] not in (idempotency.fingerprint, UNVERIFIED_FINGERPRINT):
            raise IdempotencyKeyReused(idempotency.key)
        return AppendResult(row["stream_id"], row["version"], row["position"], duplicate=True)

    async def read_stream(self, stream_id: str) -> list[StoredEvent]:
        """The events of a stream, each at the current schema version of its type (what aggregates replay)."""
        return [current(event) for event in await self.read_stream_as_stored(stream_id)]

    async def read_stream_as_stored(self, stream_id: str) -> list[StoredEvent]:
        """The events of a stream exactly as stored (what the hash chain covers)."""
        rows = await self.pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY stream_version", stream_id
        )
        return [record(r) for r in rows]

    async def read_stream_from(self, stream_id: str, version: int) -> list[StoredEvent]:
        """The events of a stream from `version` on (that one included), in order."""
        rows = await self.pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version",
            stream_id,
            version,
        )
        return [current(record(r)) for r in rows]

    async def verify_stream(self, stream_id: str) -> bool:
        """Recompute the hash chain of a stream, each event by its chain version; False when any stored event
        was altered (`charter audit verify` checks every stream and the checkpoints)."""
        versions = await self.pool.fetch(
            "SELECT chain_version FROM events WHERE stream_id = $1 ORDER BY stream_version", stream_id
        )
        prev = GENESIS
        for event, row in zip(await self.read_stream_as_stored(stream_id), versions):
            prev = chain.hash_v1(prev, event) if row["chain_version"] == 1 else event_hash(prev, event)
            if prev != event.hash:
                return False
        return True

    async def head(self) -> int:
        """The highest position committed and visible now (0 for an empty log)."""
        return await self.pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
