"""Shared fixtures: one PostgreSQL database per test run (or per test where isolation matters).

With CHARTER_TEST_DATABASE_URL set, databases are created on that server; otherwise an embedded
PostgreSQL is started for the run under a temporary directory and stopped at the end.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from infrastructure.eventlog.migrate import migrate

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from tests.e2e.conftest import LiveServer


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    given = os.environ.get("CHARTER_TEST_DATABASE_URL")
    if given:
        yield given
        return
    from infrastructure.embedded.postgres import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="charter-test-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        dsn = server.start()
        try:
            yield dsn
        finally:
            server.stop()


class DatabaseFactory:
    """Creates migrated databases on the test server and drops them all at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.created: list[str] = []

    async def create(self, label: str = "run") -> str:
        name = f"charter_test_{label}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.server_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        dsn = _with_database(self.server_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return dsn

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.server_dsn)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def databases(pg_server_dsn: str) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_server_dsn)
    yield factory
    await factory.drop_all()


@pytest.fixture(scope="session")
async def database_url(databases: DatabaseFactory) -> str:
    """One migrated database shared by the run (tests use their own ids, never each other's rows)."""
    return await databases.create("run")


@pytest.fixture
async def fresh_database_url(databases: DatabaseFactory) -> str:
    """A migrated database of this test's own, for tests that look at the whole log."""
    return await databases.create("own")


# -- NATS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """CHARTER_TEST_NATS_URL, or an embedded nats-server with JetStream for the run."""
    given = os.environ.get("CHARTER_TEST_NATS_URL")
    if given:
        yield given
        return
    from infrastructure.embedded.nats import EmbeddedNats

    with tempfile.TemporaryDirectory(prefix="charter-test-nats-") as tmp:
        server = EmbeddedNats(Path(tmp))
        try:
            yield server.start()
        finally:
            server.stop()


class StreamFactory:
    """JetStream stream names of this run only (the server may be shared); deleted at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = uuid.uuid4().hex[:8]
        self.count = 0
        self.created: list[str] = []

    def new(self, label: str = "s"):
        from infrastructure.stream.relay import StreamSettings

        self.count += 1
        name = f"CHARTER_TEST_{self.token}_{label}_{self.count}".upper()
        self.created.append(name)
        return StreamSettings(name=name, prefix=f"charter_test_{self.token}_{label}_{self.count}.events", max_age_days=1)

    async def delete_all(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=3)
        try:
            js = nc.jetstream(timeout=15)  # a loaded server answers slowly; the default 5 s is not enough
            for name in self.created:
                for attempt in range(3):
                    try:
                        await js.delete_stream(name)
                        break
                    except NotFoundError:
                        break
                    except nats.errors.TimeoutError:
                        if attempt == 2:
                            raise
        finally:
            await nc.close()


@pytest.fixture(scope="session")
async def jetstream_streams(nats_url: str) -> AsyncIterator[StreamFactory]:
    factory = StreamFactory(nats_url)
    yield factory
    await factory.delete_all()


@pytest.fixture
def stream_settings(jetstream_streams: StreamFactory):
    """A JetStream stream (name and subject prefix) of this test's own."""
    return jetstream_streams.new()


# -- the shared apps ------------------------------------------------------------------------------
# Defined here, once: a session fixture imported into a test module is a second definition, and each
# copy would keep an app (and its PostgreSQL connections) alive until the run ends.


@pytest.fixture(scope="session")
async def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient]:
    from interfaces.app import create_app
    from litestar.testing import AsyncTestClient
    from tests.e2e.conftest import admin_token, make_settings

    app = create_app(make_settings(database_url, tmp_path_factory.mktemp("charter")))
    async with AsyncTestClient(app=app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {await admin_token(test_client)}"
        yield test_client


@pytest.fixture(scope="session")
async def fanout_server(
    databases, nats_url: str, jetstream_streams, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveServer]:
    """A real HTTP server (uvicorn) with the relay and the SSE hub, on a database and a JetStream
    stream of its own: SSE needs a server that streams, not an in-memory test transport."""
    from tests.e2e.conftest import live_server, make_settings

    stream = jetstream_streams.new("e2e")
    settings = make_settings(
        await databases.create("fanout"),
        tmp_path_factory.mktemp("charter-fanout"),
        nats_url=nats_url,
        nats_stream=stream.name,
        nats_subject_prefix=stream.prefix,
        sse_heartbeat=1.0,
    )
    async with live_server(settings) as live:
        yield live
