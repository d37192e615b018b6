"""(4) Relay vs raw publish in `charter bench fanout`: events appended in big batches, published by the
Relay and by raw nats-py publish_async loops to fresh streams of the same server."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
from rich.progress import Progress


def _synthetic_events(count: int, per_stream: int) -> list[Any]:
    """Requests for `count` Plugin.Restarted-like events (with trace metadata), `per_stream` per stream."""
    from application.ports import AppendRequest, NewEvent
    from infrastructure.eventlog.eventstore import GENESIS

    now = datetime.now(timezone.utc)
    requests = []
    run = uuid.uuid4().hex[:8]
    for s in range(math.ceil(count / per_stream)):
        n = min(per_stream, count - s * per_stream)
        stream_id = f"plugin:relay-{run}-{s:05d}"
        events = []
        for v in range(1, n + 1):
            request_id = uuid.uuid4().hex
            events.append(
                NewEvent(
                    event_id=uuid.uuid4(),
                    stream_id=stream_id,
                    stream_type="plugin",
                    stream_version=v,
                    event_type="Plugin.Restarted",
                    payload={"reason": "bench"},
                    metadata={
                        "actor": "bench-relay",
                        "command": "RestartPlugin",
                        "request_id": request_id,
                        "correlation_id": request_id,
                        "causation_id": request_id,
                        "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
                    },
                    recorded_at=now,
                )
            )
        requests.append(AppendRequest(stream_id=stream_id, expected_version=0, events=events, prev_hash=GENESIS))
    return requests


async def _append_events(dsn: str, count: int) -> tuple[tuple[int, int], float]:
    """Append `count` events in big group-committed batches; returns the cursor before them and seconds."""
    from infrastructure.eventlog.eventstore import EventStore, create_pool

    pool = await create_pool(dsn, min_size=2, max_size=4)
    try:
        row = await pool.fetchrow(
            "SELECT transaction_id::text::bigint AS tx, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1"
        )
        cursor = (row["tx"], row["position"]) if row else (0, 0)
        requests = _synthetic_events(count, 100)
        store = EventStore(pool, writers=2, max_batch=50)
        await store.start()
        started = time.perf_counter()
        try:
            await asyncio.gather(*(store.append(r) for r in requests))
        finally:
            await store.stop()
        return cursor, time.perf_counter() - started
    finally:
        await pool.close()


async def _read_events(dsn: str, cursor: tuple[int, int], count: int) -> tuple[list[Any], float]:
    """The outbox rows after `cursor`, read as the relay reads them; returns them and the seconds taken."""
    from infrastructure.eventlog.eventstore import init_connection
    from infrastructure.stream.relay import outbox_rows

    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    await init_connection(conn)
    try:
        rows: list[Any] = []
        started = time.perf_counter()
        while len(rows) < count:
            batch = await outbox_rows(conn, cursor, 1000)
            if not batch:
                break
            rows.extend(batch)
            cursor = (batch[-1][1], batch[-1][0])
        return rows, time.perf_counter() - started
    finally:
        await conn.close()


async def delete_streams(nats_url: str, names: list[str]) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def _raw_publish(
    nats_url: str, stream: Any, rows: list[Any], wait_stall: float | None, batch: int | None, on_progress: Any,
) -> dict[str, Any]:
    """publish_async of every message, awaiting the acks (all at the end, or every `batch` messages). The
    messages (subjects, bodies, headers) are the relay's own, built before the clock starts."""
    import nats

    from infrastructure.stream.relay import Outbox, ensure_stream

    messages = Outbox(stream.prefix).messages(rows, None)
    subjects = [m.subject for m in messages]
    payloads = [m.data for m in messages]
    headers = [m.headers for m in messages]
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=5.0)
        await ensure_stream(js, stream)
        started = time.perf_counter()
        futures: list[Any] = []
        step = batch or len(subjects)
        for first in range(0, len(subjects), step):
            chunk = []
            for i in range(first, min(first + step, len(subjects))):
                chunk.append(await js.publish_async(subjects[i], payloads[i], headers=headers[i], wait_stall=wait_stall))
            if batch:
                await asyncio.gather(*chunk)
                on_progress(first + len(chunk))
            futures.extend(chunk)
        acks = await asyncio.gather(*futures, return_exceptions=True)
        elapsed = time.perf_counter() - started
        failures = [a for a in acks if isinstance(a, BaseException)]
        on_progress(len(subjects))
        info = await js.stream_info(stream.name)
        return {
            "events": len(subjects),
            "seconds": elapsed,
            "events_per_s": len(subjects) / elapsed,
            "errors": len(failures),
            "first_error": repr(failures[0]) if failures else None,
            "stream_messages": info.state.messages,
        }
    finally:
        await nc.close()


async def _relay_publish(dsn: str, nats_url: str, stream: Any, cursor: tuple[int, int], count: int, on_progress: Any) -> dict[str, Any]:
    """Run a Relay from `cursor` until it has published `count` events; time it, and split the time."""
    from infrastructure.stream.relay import RELAY, Relay

    class TimedRelay(Relay):
        """The production relay, with timestamps around its own steps (bench-side instrumentation only)."""

        ready_at: float | None = None
        publishing = 0.0

        async def _resync(self, conn: Any, js: Any) -> Any:
            found = await super()._resync(conn, js)
            self.ready_at = time.perf_counter()
            return found

        async def _publish(self, js: Any, messages: list[Any]) -> list[Any]:
            started = time.perf_counter()
            try:
                return await super()._publish(js, messages)
            finally:
                self.publishing += time.perf_counter() - started

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", RELAY)
        await conn.execute(
            "UPDATE checkpoints SET transaction_id = $2::text::xid8, position = $3 WHERE name = $1", RELAY, str(cursor[0]), cursor[1]
        )
    finally:
        await conn.close()
    relay = TimedRelay(dsn, nats_url, stream, asyncio.Event(), batch_size=1000, poll_interval=0.5)
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    try:
        deadline = started + 300
        while relay.state.published < count:
            if task.done():
                task.result()
                raise RuntimeError("the relay stopped")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the relay published {relay.state.published} of {count} events in 300 s")
            on_progress(relay.state.published)
            await asyncio.sleep(0.001)
        finished = time.perf_counter()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await relay.close()
    on_progress(count)
    steady = finished - (relay.ready_at or started)
    return {
        "events": relay.state.published,
        "seconds": steady,
        "events_per_s": relay.state.published / steady,
        "seconds_with_startup": finished - started,
        "startup_seconds": (relay.ready_at or started) - started,
        "publish_seconds": relay.publishing,
        "read_and_checkpoint_seconds": steady - relay.publishing,
        "last_error": relay.state.last_error,
    }


async def relay_phases(dsn: str, nats_url: str, token: str, count: int, rounds: int, progress: Progress) -> dict[str, Any]:
    from infrastructure.stream.relay import Outbox, StreamSettings

    appending = progress.add_task("(4) append events", total=count, status="")
    cursor, append_seconds = await _append_events(dsn, count)
    progress.update(appending, completed=count, status=f"{count:,} events in {append_seconds:.2f}s ({count / append_seconds:,.0f}/s)")
    rows, read_seconds = await _read_events(dsn, cursor, count)
    if len(rows) != count:
        raise RuntimeError(f"read back {len(rows)} of the {count} appended events")
    started = time.perf_counter()
    messages = Outbox("charter.events").messages(rows, None)
    encode_seconds = time.perf_counter() - started
    variants = {
        "raw": ("raw publish_async loop", None, None),
        "raw_stall": ("raw, wait_stall=5 as the relay", 5.0, None),
        "raw_barrier": ("raw, acks awaited every 1,000", None, 1000),
        "raw_batched": ("raw, wait_stall=5, acks awaited every 1,000", 5.0, 1000),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (*variants, "relay")}
    names: list[str] = []
    upper = token.upper()
    try:
        for round_ in range(1, rounds + 1):
            for key, (title, stall, batch) in variants.items():
                stream = StreamSettings(name=f"CHARTER_BENCH_{upper}_{key.upper()}_{round_}", prefix=f"charter_bench_{token}_{key}{round_}.events", max_age_days=1)
                names.append(stream.name)
                task = progress.add_task(f"(4) {key} #{round_}", total=count, status="")
                found = await _raw_publish(nats_url, stream, rows, stall, batch, lambda n, t=task: progress.update(t, completed=n))
                found["title"] = title
                runs[key].append(found)
                progress.update(task, status=f"{found['events_per_s']:,.0f} events/s")
                await delete_streams(nats_url, [stream.name])
            stream = StreamSettings(name=f"CHARTER_BENCH_{upper}_RELAY_{round_}", prefix=f"charter_bench_{token}_relay{round_}.events", max_age_days=1)
            names.append(stream.name)
            task = progress.add_task(f"(4) relay #{round_}", total=count, status="")
            found = await _relay_publish(dsn, nats_url, stream, cursor, count, lambda n, t=task: progress.update(t, completed=n))
            runs["relay"].append(found)
            progress.update(task, status=f"{found['events_per_s']:,.0f} events/s")
            await delete_streams(nats_url, [stream.name])
    finally:
        with contextlib.suppress(Exception):
            await delete_streams(nats_url, names)
    best = {k: max(v, key=lambda r: r["events_per_s"]) for k, v in runs.items() if v}
    ratio = best["relay"]["events_per_s"] / best["raw"]["events_per_s"] if best["raw"]["events_per_s"] else None
    return {
        "events": count,
        "append_seconds": round(append_seconds, 3),
        "append_events_per_s": round(count / append_seconds, 1),
        "read_global_seconds": round(read_seconds, 3),
        "read_global_events_per_s": round(count / read_seconds, 1),
        "encode_seconds": round(encode_seconds, 3),
        "encode_events_per_s": round(count / encode_seconds, 1),
        "payload_bytes_avg": round(sum(len(m.data) for m in messages) / len(messages), 1),
        "header_bytes_avg": round(sum(sum(len(k) + len(v) + 4 for k, v in m.headers.items()) for m in messages) / len(messages), 1),
        "rounds": rounds,
        "runs": runs,
        "best": {k: round(v["events_per_s"], 1) for k, v in best.items()},
        "relay_vs_raw": ratio,
    }
