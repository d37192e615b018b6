"""Tamper evidence: a superuser edits, deletes, moves or forges rows behind the append-only trigger, and
both the online check (against the database) and the offline check (an export, in a process with no
database URL) report it at the right position and stream."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from application.ports import AppendRequest, NewEvent
from infrastructure.audit import chain
from infrastructure.audit.online import verify_log
from infrastructure.audit.sealer import Sealer, checkpoint_payload
from infrastructure.audit.signing import Signer
from infrastructure.audit.verify import Report
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool, init_connection
from infrastructure.eventlog.migrate import available

ROOT = Path(__file__).resolve().parents[2]


def event(stream_id: str, version: int, payload: dict[str, Any], site_id: str | None = None) -> NewEvent:
    return NewEvent(
        event_id=uuid4(), stream_id=stream_id, stream_type=stream_id.split(":")[0], stream_version=version,
        event_type="Thing.Happened", payload=payload, metadata={"actor": "alice", "correlation_id": "c-1"},
        recorded_at=datetime.now(timezone.utc), site_id=site_id,
    )  # fmt: skip


@dataclass
class Log:
    dsn: str
    pool: asyncpg.Pool
    store: EventStore
    signer: Signer
    sealer: Sealer
    key_path: Path
    heads: dict[str, tuple[int, bytes]]

    async def append(self, stream_id: str, count: int, **payload: Any) -> None:
        version, prev = self.heads.get(stream_id, (0, GENESIS))
        events = [event(stream_id, version + i, {"n": version + i, **payload}, "site-a") for i in range(1, count + 1)]
        request = AppendRequest(stream_id, version, events, prev)
        await self.store.append(request)
        self.heads[stream_id] = (version + count, request.hashes[-1])

    async def row(self, stream_id: str, version: int) -> asyncpg.Record:
        return await self.pool.fetchrow(
            "SELECT position, transaction_id::text::bigint AS tx FROM events WHERE stream_id = $1 AND stream_version = $2",
            stream_id, version,
        )  # fmt: skip

    async def tamper(self, *statements: tuple[str, ...]) -> None:
        """Run SQL as a superuser with the append-only triggers off."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
                pytest.skip("tampering behind the trigger needs a superuser")
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                for sql, *args in statements:
                    await conn.execute(sql, *args)

    async def online(self) -> Report:
        conn = await asyncpg.connect(self.dsn)
        await init_connection(conn)
        try:
            report, _ = await verify_log(conn, self.signer.public)
        finally:
            await conn.close()
        return report

    def offline(self, tmp: Path) -> tuple[int, str]:
        """`charter audit verify --export` then `charter audit check` in a process with no database URL."""
        export, public = tmp / "export.jsonl", tmp / "public.pem"
        public.write_text(self.signer.public_pem)
        env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
        run = subprocess.run(
            [sys.executable, "-m", "interfaces.cli", "audit", "verify", "--export", str(export)],
            cwd=ROOT, env={**env, "CHARTER_DATABASE_URL": self.dsn, "CHARTER_AUDIT_KEY_PATH": str(self.key_path)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert export.exists(), run.stderr
        check = subprocess.run(
            [sys.executable, "-m", "interfaces.cli", "audit", "check", str(export), "--public-key", str(public)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == check.returncode, (run.stdout, check.stdout)
        return check.returncode, check.stdout


@pytest.fixture
async def log(fresh_database_url: str, tmp_path: Path) -> AsyncIterator[Log]:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
    store = EventStore(pool, writers=1)
    key_path = tmp_path / "key.pem"
    signer = Signer.load_or_create(key_path)
    sealer = Sealer(pool, store, signer, interval=0, max_events=10_000)
    log = Log(fresh_database_url, pool, store, signer, sealer, key_path, {})
    for name in ("plugin:a", "plugin:b", "user:c"):
        await log.append(name, 2)
    await log.append("user:c", 1, password_hash="$argon2id$secret")
    await log.append("plugin:a", 2)
    assert await sealer.seal_once() == 1
    await log.append("plugin:b", 3)
    await log.append("plugin:d", 2)
    assert await sealer.seal_once() == 2
    await log.append("plugin:a", 1)  # after the last checkpoint
    try:
        yield log
    finally:
        await store.stop()
        await pool.close()


def kinds_at(report: Report) -> set[tuple[str, int | None, str | None]]:
    return {(f.kind, f.position, f.stream_id) for f in report.findings}


async def test_an_untouched_log_verifies_online_and_offline(log: Log, tmp_path: Path) -> None:
    report = await log.online()

    assert report.ok, report.findings
    assert (report.checkpoints, report.unsealed, report.streams) == (2, 2, 5)  # checkpoint 2 and plugin:a v5 unsealed
    code, out = log.offline(tmp_path)
    assert code == 0 and "no findings" in out
    assert "$argon2id$secret" not in (tmp_path / "export.jsonl").read_text()


async def test_an_edited_payload_is_found_at_its_position(log: Log, tmp_path: Path) -> None:
    target = await log.row("plugin:b", 2)
    await log.tamper(("UPDATE events SET payload = '{\"n\": 666}' WHERE stream_id = 'plugin:b' AND stream_version = 2",))

    report = await log.online()

    assert kinds_at(report) == {("edited", target["position"], "plugin:b")}  # the leaves seal stored hashes
    code, out = log.offline(tmp_path)
    assert code == 1 and f"EDITED: position {target['position']} stream plugin:b version 2" in out


@pytest.mark.parametrize("column", ["metadata", "recorded_at", "site_id"])
async def test_an_edit_of_what_chain_version_1_did_not_cover_is_found(log: Log, column: str) -> None:
    target = await log.row("plugin:d", 1)
    value = {"metadata": "'{\"actor\": \"mallory\"}'", "recorded_at": "recorded_at - interval '1 day'", "site_id": "'site-b'"}[column]
    await log.tamper((f"UPDATE events SET {column} = {value} WHERE stream_id = 'plugin:d' AND stream_version = 1",))

    assert ("edited", target["position"], "plugin:d") in kinds_at(await log.online())


async def test_a_deleted_row_is_found_by_position_and_stream(log: Log, tmp_path: Path) -> None:
    target = await log.row("plugin:a", 2)
    await log.tamper(("DELETE FROM events WHERE stream_id = 'plugin:a' AND stream_version = 2",))

    report = await log.online()

    found = kinds_at(report)
    assert ("deleted", target["position"], None) in found  # the position checkpoint 1 sealed
    assert any(f.kind == "deleted" and f.stream_id == "plugin:a" and "version 2" in f.detail for f in report.findings)
    code, out = log.offline(tmp_path)
    assert code == 1 and f"DELETED: position {target['position']}:" in out


async def test_two_swapped_positions_are_found(log: Log, tmp_path: Path) -> None:
    first, second = await log.row("plugin:b", 3), await log.row("plugin:b", 4)
    await log.tamper(
        ("ALTER TABLE events ALTER COLUMN position SET GENERATED BY DEFAULT",),
        ("UPDATE events SET position = -1 WHERE position = $1", first["position"]),
        ("UPDATE events SET position = $1 WHERE position = $2", first["position"], second["position"]),
        ("UPDATE events SET position = $1 WHERE position = -1", second["position"]),
        ("ALTER TABLE events ALTER COLUMN position SET GENERATED ALWAYS",),
    )

    report = await log.online()

    assert any(f.kind == "reordered" and f.stream_id == "plugin:b" and f.stream_version == 4 for f in report.findings)
    assert any(f.kind == "checkpoint" and "Merkle root" in f.detail for f in report.findings)
    code, out = log.offline(tmp_path)
    assert code == 1 and "REORDERED" in out and "stream plugin:b version 4" in out


async def test_a_forged_checkpoint_is_found(log: Log, tmp_path: Path) -> None:
    """The forger appends a checkpoint (hash chain computed correctly) signed with a key of their own."""
    await log.append("plugin:e", 1)
    rows = await log.pool.fetch(
        "SELECT transaction_id::text::bigint, position, hash FROM events WHERE position > (SELECT max(position) FROM events"
        " WHERE stream_id = 'audit:checkpoints') ORDER BY transaction_id, position"
    )
    last = await log.pool.fetchrow("SELECT stream_version, hash, payload FROM events WHERE stream_id = 'audit:checkpoints' ORDER BY stream_version DESC LIMIT 1")
    forger = Signer.load_or_create(tmp_path / "forger.pem")
    start = (last["payload"]["to_transaction_id"], last["payload"]["to_position"])
    forged = event(chain.CHECKPOINT_STREAM, last["stream_version"] + 1, checkpoint_payload(forger, 3, start, rows))
    await log.store.append(AppendRequest(chain.CHECKPOINT_STREAM, last["stream_version"], [forged], bytes(last["hash"])))
    position = await log.pool.fetchval("SELECT position FROM events WHERE event_id = $1", forged.event_id)

    report = await log.online()

    assert ("checkpoint", position, chain.CHECKPOINT_STREAM) in kinds_at(report)
    code, out = log.offline(tmp_path)
    assert code == 1 and f"CHECKPOINT: position {position}" in out


async def test_an_altered_checkpoint_root_fails_its_signature(log: Log) -> None:
    position = await log.pool.fetchval("SELECT position FROM events WHERE stream_id = 'audit:checkpoints' AND stream_version = 1")
    await log.tamper(
        ("UPDATE events SET payload = jsonb_set(payload, '{root}', to_jsonb(repeat('0', 64))) WHERE position = $1", position),
    )

    report = await log.online()

    assert any(f.kind == "checkpoint" and f.position == position and "signature" in f.detail for f in report.findings)
    assert ("edited", position, chain.CHECKPOINT_STREAM) in kinds_at(report)


async def test_an_inserted_row_in_a_sealed_range_is_found(log: Log) -> None:
    """A superuser inserts an event with a correct chain hash, but inside checkpoint 1's range."""
    first = await log.row("plugin:a", 1)
    version, prev = log.heads["plugin:a"]
    extra = event("plugin:a", version + 1, {"n": "forged"}, "site-a")
    await log.tamper((
        "INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type, payload, metadata, site_id,"
        " recorded_at, hash, chain_version, transaction_id, position) OVERRIDING SYSTEM VALUE"
        " VALUES ($1, 'plugin:a', 'plugin', $2, 'Thing.Happened', $3, $4, 'site-a', $5, $6, 2, $7::text::xid8, 0)",
        extra.event_id, extra.stream_version, extra.payload, extra.metadata,
        extra.recorded_at, chain.hash_v2(prev, extra), str(first["tx"]),
    ),)  # fmt: skip

    report = await log.online()

    assert ("inserted", 0, "plugin:a") in kinds_at(report)


# -- chain version 1 --------------------------------------------------------------------------------


async def test_rows_of_chain_version_1_keep_verifying_after_migration_0008(databases: Any, log: Log) -> None:
    """A database migrated before 0008 holds rows hashed by the version-1 rule; after 0008 they are
    version 1, a stream goes on in version 2 from their hash, and an edit of a v1 row is still found."""
    name = f"charter_test_v1_{uuid4().hex[:10]}"
    admin = await asyncpg.connect(databases.server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    databases.created.append(name)
    dsn = log.dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    for migration in available():
        if migration.version != 8:
            await conn.execute(migration.sql)
    old = [event("legacy:x", v, {"n": v, "password_hash": "$argon2id$old"}) for v in (1, 2)]
    prev = GENESIS
    for e in old:
        prev = chain.hash_v1(prev, e)
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type, payload, metadata, recorded_at, hash)"
            " VALUES ($1, $2, 'legacy', $3, $4, $5, $6, $7, $8)",
            e.event_id, e.stream_id, e.stream_version, e.event_type, e.payload, e.metadata, e.recorded_at, prev,
        )  # fmt: skip
    await conn.execute(next(m.sql for m in available() if m.version == 8))
    assert await conn.fetchval("SELECT array_agg(DISTINCT chain_version) FROM events") == [1]
    await conn.close()
    pool = await create_pool(dsn, min_size=1, max_size=2)
    store = EventStore(pool, writers=1)
    try:
        await store.append(AppendRequest("legacy:x", 2, [event("legacy:x", 3, {"n": 3})], prev))
        assert await pool.fetchval("SELECT chain_version FROM events WHERE stream_version = 3") == 2
        assert await Sealer(pool, store, log.signer, interval=0, max_events=100).seal_once() == 1
        conn = await asyncpg.connect(dsn)
        await init_connection(conn)
        report, _ = await verify_log(conn, log.signer.public)
        assert report.ok, report.findings
        assert await store.verify_stream("legacy:x")
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("UPDATE events SET payload = '{\"n\": 9}' WHERE stream_id = 'legacy:x' AND stream_version = 1")
        position = await conn.fetchval("SELECT position FROM events WHERE stream_id = 'legacy:x' AND stream_version = 1")
        report, _ = await verify_log(conn, log.signer.public)
        await conn.close()
        assert ("edited", position, "legacy:x") in kinds_at(report)
        assert not await store.verify_stream("legacy:x")
    finally:
        await store.stop()
        await pool.close()
