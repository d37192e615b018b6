"""The phases of `charter bench audit`, each over the whole log of the same database: the raw scan (the
floor, shared with `charter bench rebuild`), then the online verification `charter audit verify` runs
(chains, checkpoints, signatures), optionally writing the export."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from infrastructure.audit.online import verify_log
from infrastructure.audit.sealer import Sealer
from infrastructure.audit.signing import Signer
from infrastructure.eventlog.eventstore import EventStore, create_pool, init_connection
from ops.bench.rebuild.replay import Replay


async def seal_all(dsn: str, signer: Signer, per_checkpoint: int) -> int:
    """Seal the whole log in checkpoints of `per_checkpoint` events; how many were made."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    store = EventStore(pool, writers=1)
    sealer = Sealer(pool, store, signer, interval=0, max_events=per_checkpoint)
    made = 0
    try:
        while await sealer.seal_once() is not None:
            made += 1
    finally:
        await store.stop()
        await pool.close()
    return made


async def verify_phase(dsn: str, public: Any, tick: Callable[[int], None], export: bool = False) -> tuple[Replay, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    sink = io.BytesIO() if export else None
    try:
        started = time.perf_counter()
        report, _ = await verify_log(conn, public, progress=lambda done, total: tick(done), export=sink)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    key = "verify_export" if export else "verify"
    name = "charter audit verify --export" if export else "charter audit verify"
    replay = Replay(key, name, "one snapshot, keyset pages, chains + Merkle roots + Ed25519 signatures", report.events, seconds)
    outcome = {"ok": report.ok, "findings": report.findings_total, "checkpoints": report.checkpoints,
               "export_bytes": sink.tell() if sink else None}  # fmt: skip
    return replay, outcome
