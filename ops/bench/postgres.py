"""The PostgreSQL server a benchmark runs on (CHARTER_DATABASE_URL's, or an embedded one) and the fresh
database `charter_bench_<hex>` each run creates there and drops at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg
from rich.console import Console

SERVER_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "commit_delay",
    "shared_buffers",
    "wal_buffers",
    "max_connections",
    "superuser_reserved_connections",
    "max_wal_size",
)


@dataclass
class Server:
    admin_dsn: str
    kind: str  # "embedded" or "external"
    bin_dir: Path | None = None


DATABASE_PREFIX = "charter_bench_"


def database_name() -> str:
    """A fresh bench database's name: `charter_bench_<pid>_<random>` (the pid lets a test find what its own
    process made among other runs' databases on a shared server)."""
    return f"{DATABASE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def bench_server(workdir: Path, console: Console) -> Iterator[Server]:
    """CHARTER_DATABASE_URL's server, or an embedded PostgreSQL under `workdir` for the duration."""
    given = os.environ.get("CHARTER_DATABASE_URL")
    if given:
        yield Server(given, "external")
        return
    from infrastructure.embedded.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(workdir / "postgres")
    console.print(f"starting embedded PostgreSQL under {server.pgdata} ...")
    dsn = server.start()
    try:
        yield Server(dsn, "embedded", server.bin_dir)
    finally:
        server.stop()
        console.print("embedded PostgreSQL stopped")


@contextlib.contextmanager
def fresh_database(server: Server, name: str) -> Iterator[str]:
    """Database `name` created on `server` for the block (its DSN), dropped after it whatever happens."""
    asyncio.run(create_database(server.admin_dsn, name))
    try:
        yield with_database(server.admin_dsn, name)
    finally:
        asyncio.run(drop_database(server.admin_dsn, name))


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def connection_params(dsn: str) -> dict[str, str]:
    """host/port/user/password/dbname of a postgresql:// URI (a `host=` query parameter wins, for sockets)."""
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {
        "host": query.get("host") or parts.hostname or "localhost",
        "port": str(query.get("port") or parts.port or 5432),
        "user": query.get("user") or unquote(parts.username or "") or os.environ.get("USER", "postgres"),
        "password": query.get("password") or unquote(parts.password or ""),
        "dbname": unquote(parts.path.lstrip("/")) or query.get("dbname") or "postgres",
    }


async def execute(dsn: str, sql: str) -> None:
    """One statement on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(admin_dsn: str, name: str) -> None:
    await execute(admin_dsn, f'CREATE DATABASE "{name}"')


async def drop_database(admin_dsn: str, name: str) -> None:
    await execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def migrate_database(dsn: str) -> None:
    """Charter's schema in the bench database (the servers start with CHARTER_MIGRATE_ON_START=false)."""
    from infrastructure.eventlog.migrate import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def server_info(dsn: str) -> dict[str, Any]:
    """The server's version and the settings that bear on write throughput, for the report."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT name, setting, unit FROM pg_settings WHERE name = any($1::text[])", list(SERVER_SETTINGS))
        settings = {r["name"]: r["setting"] + (f" ({r['unit']})" if r["unit"] else "") for r in rows}
        for name in ("shared_buffers", "wal_buffers", "max_wal_size"):
            with contextlib.suppress(Exception):
                settings[name] = await conn.fetchval(f"SHOW {name}")
        return {
            "version": await conn.fetchval("SHOW server_version"),
            "version_full": await conn.fetchval("SELECT version()"),
            "settings": settings,
        }
    finally:
        await conn.close()


def connection_budget(info: dict[str, Any]) -> int:
    """Connections one phase may open: max_connections minus reserved slots and a few for the bench itself."""
    settings = info.get("settings", {})
    try:
        limit = int(str(settings.get("max_connections", "100")).split()[0])
        reserved = int(str(settings.get("superuser_reserved_connections", "3")).split()[0])
    except ValueError:
        return 64
    return max(1, limit - reserved - 5)


async def postmaster_pid(dsn: str) -> int | None:
    """The postmaster's pid when PostgreSQL runs on this machine and /proc shows it (else None)."""
    try:
        conn = await asyncpg.connect(dsn)
        try:  # read while the backend lives: it exits with the connection
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            stat = Path(f"/proc/{backend}/stat").read_text()
        finally:
            await conn.close()
        if "postgres" not in stat.split(")", 1)[0]:
            return None
        return int(stat.rsplit(")", 1)[1].split()[1])
    except Exception:  # noqa: BLE001 - remote or hidden: not measured
        return None
