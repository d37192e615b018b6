"""The sealer: every `interval` seconds, a signed checkpoint over the events committed since the last one.

A checkpoint is an event `Audit.CheckpointSealed` of the stream `audit:checkpoints`. It covers the
events after the previous checkpoint's cursor in the never-skip global order `(transaction_id,
position)`, read below the horizon (global_order.py) so that no event can later commit inside a range
already sealed, at most `max_events` of them. Its payload: `sequence`, the range (`from_*` / `to_*`
transaction id and position), `count`, `root` (the Merkle root of the leaves `(position, hash)` in that
order, hex), `positions` (the sealed positions as `[first, last]` runs; null when there are more than
`MAX_RUNS`), `key_fingerprint`, `algorithm` and `signature` (Ed25519, base64, over `chain.signed_bytes`).

Every replica may run a sealer: the checkpoint is appended at the stream's expected version, so when two
seal at once one wins and the other seals the rest at its next turn. A range holding only checkpoints is
not sealed again (an idle log gets no new checkpoints).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import structlog

from application.errors import ConcurrencyError
from application.ports import AppendRequest, NewEvent
from infrastructure.audit import chain
from infrastructure.audit.signing import Signer
from infrastructure.eventlog.availability import DATABASE, is_unavailable
from infrastructure.eventlog.eventstore import EventStore
from infrastructure.eventlog.global_order import HORIZON
from infrastructure.telemetry import metrics, tracing

log = structlog.get_logger(__name__)

MAX_RUNS = 2_000
_LAST = f"""
SELECT stream_version, hash, payload FROM events WHERE stream_id = '{chain.CHECKPOINT_STREAM}'
ORDER BY stream_version DESC LIMIT 1
"""
_LEAVES = """
SELECT transaction_id::text::bigint, position, hash, stream_id FROM events
WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2::bigint) AND events.transaction_id < $4::text::xid8
ORDER BY events.transaction_id, events.position
LIMIT $3
"""


def checkpoint_payload(
    signer: Signer, sequence: int, start: tuple[int, int], rows: list[Any]
) -> dict[str, Any]:
    """The signed checkpoint over `rows` (transaction id, position, hash), which follow `start`."""
    positions = [r[1] for r in rows]
    runs = chain.position_runs(positions)
    payload: dict[str, Any] = {
        "sequence": sequence,
        "from_transaction_id": start[0],
        "from_position": start[1],
        "to_transaction_id": rows[-1][0],
        "to_position": rows[-1][1],
        "count": len(rows),
        "root": chain.merkle_root([chain.leaf(r[1], bytes(r[2])) for r in rows]).hex(),
        "positions": runs if len(runs) <= MAX_RUNS else None,
        "algorithm": "ed25519",
        "key_fingerprint": signer.fingerprint,
    }
    payload["signature"] = signer.sign(chain.signed_bytes(payload))
    return payload


class Sealer:
    def __init__(self, pool: asyncpg.Pool, store: EventStore, signer: Signer, *, interval: float, max_events: int) -> None:
        self.pool, self.store, self.signer = pool, store, signer
        self.interval, self.max_events = interval, max(1, max_events)

    async def run(self) -> None:
        """Seal every `interval` seconds (the first time one interval after start)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                while await self.seal_once():
                    pass  # catch up in ranges of max_events
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    DATABASE.failed(exc, "sealer")
                else:
                    log.warning("sealing failed", error=type(exc).__name__)

    async def seal_once(self) -> int | None:
        """Append one checkpoint over what is committed since the last; its sequence, or None when there
        was nothing to seal (or another sealer won the race). Traced as `audit seal`."""
        with tracing.operation_span("audit seal") as span:
            return await self._seal(span)

    async def _seal(self, span: Any) -> int | None:
        async with self.pool.acquire() as conn:
            last = await conn.fetchrow(_LAST)
            version, prev_hash = (last[0], bytes(last[1])) if last else (0, chain.GENESIS)
            start = (int(last[2]["to_transaction_id"]), int(last[2]["to_position"])) if last else (0, 0)
            sequence = int(last[2]["sequence"]) + 1 if last else 1
            async with conn.transaction(isolation="read_committed"):
                horizon = await conn.fetchval(HORIZON)
                rows = await conn.fetch(_LEAVES, str(start[0]), start[1], self.max_events, horizon)
        if not rows or all(r[3] == chain.CHECKPOINT_STREAM for r in rows):
            tracing.set_attributes(span, {"charter.outcome": "nothing", "charter.audit.events": 0})
            return None
        payload = checkpoint_payload(self.signer, sequence, start, rows)
        tracing.set_attributes(span, {
            "charter.audit.sequence": sequence, "charter.audit.events": len(rows),
            "charter.audit.from_position": rows[0][1], "charter.audit.to_position": payload["to_position"],
        })  # fmt: skip
        traceparent = tracing.current_traceparent()
        event = NewEvent(
            event_id=uuid.uuid4(), stream_id=chain.CHECKPOINT_STREAM, stream_type="audit", stream_version=version + 1,
            event_type=chain.CHECKPOINT_TYPE, payload=payload,
            metadata={"actor": "system:sealer", **({"traceparent": traceparent} if traceparent else {})},
            recorded_at=datetime.now(timezone.utc),
        )  # fmt: skip
        try:
            await self.store.append(AppendRequest(chain.CHECKPOINT_STREAM, version, [event], prev_hash))
        except ConcurrencyError:
            tracing.set_attributes(span, {"charter.outcome": "lost"})
            return None  # another replica sealed this range first
        tracing.set_attributes(span, {"charter.outcome": "sealed"})
        metrics.AUDIT_CHECKPOINTS.inc()
        metrics.AUDIT_SEALED_EVENTS.inc(len(rows))
        log.info("checkpoint sealed", sequence=sequence, events=len(rows), to_position=payload["to_position"])
        return sequence
