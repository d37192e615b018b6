"""Global positions a client can reason about: starting Charter again on the same log appends nothing it
already holds and takes no position (an append refused as a duplicate would still take one from the
`position` identity, leaving a gap at every restart)."""

from __future__ import annotations

import asyncpg
from litestar.testing import AsyncTestClient

from interfaces.app import create_app
from tests.e2e.conftest import make_settings


async def positions(database_url: str) -> tuple[int, int]:
    """(the last position the identity handed out, the last event's position)."""
    conn = await asyncpg.connect(database_url)
    try:
        handed_out = await conn.fetchval("SELECT last_value FROM pg_sequences WHERE sequencename = "
                                         "(parse_ident(pg_get_serial_sequence('events', 'position')))[2]")
        last = await conn.fetchval("SELECT max(position) FROM events")
        return handed_out, last
    finally:
        await conn.close()


async def start_and_stop(database_url: str, data_dir) -> None:
    async with AsyncTestClient(app=create_app(make_settings(database_url, data_dir))) as client:
        assert (await client.get("/health")).status_code == 200


async def test_a_restart_takes_no_global_position(fresh_database_url: str, tmp_path) -> None:
    await start_and_stop(fresh_database_url, tmp_path / "first")
    first = await positions(fresh_database_url)

    await start_and_stop(fresh_database_url, tmp_path / "second")
    await start_and_stop(fresh_database_url, tmp_path / "third")

    assert first[0] == first[1], "the first start left a gap"
    assert await positions(fresh_database_url) == first
