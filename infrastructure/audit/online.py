"""Online verification (`charter audit verify`, `GET /api/v1/audit/verify`) and the export an auditor
takes away (`--export FILE`): the events read from PostgreSQL in the global order, in one read-only
snapshot, fed to the pure `Verifier`.

A bounded run (`from_checkpoint`, `max_events`) starts just after a checkpoint's range, with each
stream's chain anchored at its stored event before the range, and stops once it has checked at least
`max_events` events: the answer names the last checkpoint verified, where the next run starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import IO, Any

import asyncpg
import msgspec

from infrastructure.audit import chain
from infrastructure.audit.verify import FORMAT, ExportedEvent, ExportHeader, ExportTrailer, Report, Verifier, for_export
from infrastructure.telemetry import metrics, tracing

PAGE = 5_000
_COLUMNS = (
    "position, transaction_id::text::bigint, event_id, stream_id, stream_type, stream_version, event_type,"
    " schema_version, site_id, recorded_at, chain_version, payload, metadata, hash"
)
_PAGE = f"""
SELECT {_COLUMNS} FROM events
WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2::bigint)
ORDER BY events.transaction_id, events.position
LIMIT $3
"""
_ANCHORS = """
SELECT e.stream_id, e.stream_version, e.hash, e.position, e.chain_version
FROM events e JOIN unnest($1::text[], $2::int[]) AS x(stream_id, stream_version) USING (stream_id, stream_version)
"""
_CHECKPOINT = f"SELECT payload, position FROM events WHERE stream_id = '{chain.CHECKPOINT_STREAM}' AND stream_version = $1"


class RangeNotFound(Exception):
    """The checkpoint a bounded verification was asked to start after does not exist."""


class Progress(msgspec.Struct, kw_only=True):
    """Where a bounded run stopped: `complete` when it reached the end of the log."""

    complete: bool
    from_checkpoint: int
    last_checkpoint: int | None  # the sequence of the last checkpoint verified (start the next run after it)
    last_position: int | None


def exported(row: asyncpg.Record) -> ExportedEvent:
    return ExportedEvent(
        position=row[0], transaction_id=row[1], event_id=str(row[2]), stream_id=row[3], stream_type=row[4],
        stream_version=row[5], event_type=row[6], schema_version=row[7], site_id=row[8],
        recorded_at=chain.utc_instant(row[9]), chain_version=row[10], payload=row[11], metadata=row[12],
        hash=row[13].hex(),
    )  # fmt: skip


async def _start_after(conn: asyncpg.Connection, verifier: Verifier, sequence: int) -> tuple[int, int]:
    if sequence <= 0:
        return (0, 0)
    row = await conn.fetchrow(_CHECKPOINT, sequence)
    if row is None:
        raise RangeNotFound(f"there is no checkpoint {sequence}")
    cp, verifier.checked_before = row["payload"], row["position"]
    verifier.last_checkpoint = {
        "sequence": int(cp["sequence"]), "to_transaction_id": int(cp["to_transaction_id"]), "to_position": int(cp["to_position"]),
    }  # fmt: skip
    return (int(cp["to_transaction_id"]), int(cp["to_position"]))


async def _anchor(conn: asyncpg.Connection, verifier: Verifier, events: list[ExportedEvent]) -> None:
    """Each stream first met in the page past its version 1 starts from its stored previous event."""
    first: dict[str, int] = {}
    for e in events:
        if e.stream_id not in verifier.streams:
            first[e.stream_id] = min(first.get(e.stream_id, e.stream_version), e.stream_version)
    wanted = {stream: version for stream, version in first.items() if version > 1}
    if not wanted:
        return
    rows = await conn.fetch(_ANCHORS, list(wanted), [v - 1 for v in wanted.values()])
    for r in rows:
        verifier.anchor(r["stream_id"], r["stream_version"], r["hash"].hex(), r["position"], r["chain_version"])


async def verify_log(
    conn: asyncpg.Connection,
    public_key: Any,
    *,
    progress: Callable[[int, int], None] | None = None,
    export: IO[bytes] | None = None,
    from_checkpoint: int = 0,
    max_events: int | None = None,
    exported_at: str = "",
) -> tuple[Report, Progress]:
    """Verify the log (or the bounded range) in one read-only snapshot; write the export when given.
    Traced as `audit verify` (events checked, findings) and counted by outcome."""
    started = time.perf_counter()
    attributes = {"charter.audit.from_checkpoint": from_checkpoint, "charter.audit.export": export is not None}
    if max_events is not None:
        attributes["charter.audit.max_events"] = max_events
    with tracing.operation_span("audit verify", attributes) as span:
        try:
            report, progress_ = await _verify(conn, public_key, progress, export, from_checkpoint, max_events, exported_at)
        except BaseException:
            metrics.AUDIT_VERIFICATIONS.labels("error").inc()
            raise
        finally:
            metrics.AUDIT_VERIFY_SECONDS.observe(time.perf_counter() - started)
        metrics.AUDIT_VERIFICATIONS.labels("ok" if report.ok else "findings").inc()
        metrics.AUDIT_VERIFIED_EVENTS.inc(report.events)
        tracing.set_attributes(span, {
            "charter.outcome": "ok" if report.ok else "findings", "charter.audit.events": report.events,
            "charter.audit.streams": report.streams, "charter.audit.checkpoints": report.checkpoints,
            "charter.audit.findings": report.findings_total, "charter.audit.unsealed": report.unsealed,
            "charter.audit.complete": progress_.complete,
        })  # fmt: skip
        return report, progress_


async def _verify(
    conn: asyncpg.Connection, public_key: Any, progress: Callable[[int, int], None] | None, export: IO[bytes] | None,
    from_checkpoint: int, max_events: int | None, exported_at: str,
) -> tuple[Report, Progress]:
    verifier = Verifier(public_key)
    encode = msgspec.json.Encoder().encode
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events") if progress else 0  # about
        cursor = await _start_after(conn, verifier, from_checkpoint)
        if export is not None:
            fingerprint = verifier.fingerprint
            export.write(encode(ExportHeader(format=FORMAT, exported_at=exported_at, key_fingerprint=fingerprint)) + b"\n")
        bounded = from_checkpoint > 0 or max_events is not None
        complete = True
        rows = await conn.fetch(_PAGE, str(cursor[0]), cursor[1], PAGE)
        while rows:
            cursor = (rows[-1][1], rows[-1][0])
            # Unbounded: the next page is asked for now, so PostgreSQL reads it while this one is checked
            # (a bounded run queries anchors on the connection in between, so it asks page by page).
            ahead = None if bounded else asyncio.ensure_future(conn.fetch(_PAGE, str(cursor[0]), cursor[1], PAGE))
            if ahead is not None:
                await asyncio.sleep(0)
            events = [exported(r) for r in rows]
            if bounded:
                await _anchor(conn, verifier, events)
            for e, row in zip(events, rows):
                verifier.add(e, row[13])
            if export is not None:
                export.write(b"\n".join(encode(for_export(e)) for e in events) + b"\n")
            if progress:
                progress(verifier.events, max(total, verifier.events))
            if max_events is not None and verifier.events >= max_events:
                complete = len(rows) < PAGE and not await conn.fetchval(_PAGE.replace("LIMIT $3", "LIMIT 1"), str(cursor[0]), cursor[1])
                break
            rows = await ahead if ahead is not None else await conn.fetch(_PAGE, str(cursor[0]), cursor[1], PAGE)
        if export is not None:
            export.write(encode(ExportTrailer(end=True, events=verifier.events)) + b"\n")
    last = verifier.last_checkpoint
    report = verifier.finish()
    return report, Progress(
        complete=complete,
        from_checkpoint=from_checkpoint,
        last_checkpoint=last["sequence"] if last else None,
        last_position=cursor[1] if verifier.events else None,
    )
