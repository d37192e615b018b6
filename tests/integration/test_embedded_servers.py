"""Integration tests for the embedded PostgreSQL and NATS servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path

import asyncpg
import nats
import pytest

from infrastructure.embedded.nats import EmbeddedNats

from infrastructure.embedded.postgres import EmbeddedPostgres

from infrastructure.embedded.process import find_free_port


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live, non-zombie process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return state.split()[1] not in {"Z", "X"}


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_find_free_port_returns_bindable_port() -> None:
    port = find_free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_postgres_start_query_stop_and_restart_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"

    async def first_run(dsn: str) -> tuple[int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            one = await conn.fetchval("select 1")
            max_connections = int(await conn.fetchval("show max_connections"))
            await conn.execute("create table survives_restart (id int primary key, note text)")
            await conn.execute("insert into survives_restart values (1, 'kept')")
            return one, max_connections
        finally:
            await conn.close()

    async def second_run(dsn: str) -> str | None:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("select note from survives_restart where id = 1")
        finally:
            await conn.close()

    server = EmbeddedPostgres(data_dir)
    assert (server.bin_dir / "pg_ctl").exists()
    assert (server.bin_dir / "pgbench").exists()
    dsn = server.start()
    try:
        assert dsn == server.dsn
        assert dsn.startswith("postgresql://")
        one, max_connections = asyncio.run(first_run(dsn))
        assert one == 1
        assert max_connections >= 200
        assert asyncio.run(second_run(server.socket_dsn)) == "kept"
        first_pid = server.pid
        assert first_pid is not None and _pid_alive(first_pid)
    finally:
        server.stop()
    assert not _pid_alive(first_pid)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    server.stop()

    with EmbeddedPostgres(data_dir) as restarted:
        assert restarted.pid != first_pid
        assert asyncio.run(second_run(restarted.dsn)) == "kept"
        second_pid = restarted.pid
    assert second_pid is not None and not _pid_alive(second_pid)


def test_postgres_adopts_running_server_without_stopping_it(tmp_path: Path) -> None:
    owner = EmbeddedPostgres(tmp_path / "pg")
    owner.start()
    try:
        adopter = EmbeddedPostgres(tmp_path / "pg")
        assert adopter.start() == owner.dsn
        assert adopter.pid == owner.pid
        adopter.stop()
        assert owner.pid is not None and _pid_alive(owner.pid)
    finally:
        owner.stop()
    assert owner.pid is None


def test_nats_jetstream_survives_restart(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")

    async def publish(url: str) -> int:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="CHARTER_TEST", subjects=["charter.test.>"])
            ack = await js.publish("charter.test.event", b"hello", timeout=5)
            return ack.seq
        finally:
            await nc.close()

    async def read_back(url: str, seq: int) -> bytes:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("CHARTER_TEST")
            assert info.state.messages == 1
            message = await js.get_msg("CHARTER_TEST", seq)
            return message.data
        finally:
            await nc.close()

    url = server.start()
    try:
        assert url == server.url == f"nats://127.0.0.1:{server.port}"
        seq = asyncio.run(publish(url))
        first_pid = server.pid
        assert server.restart() == url
        assert server.pid != first_pid
        assert asyncio.run(read_back(url, seq)) == b"hello"
    finally:
        server.stop()
    assert server.port is not None and not _port_open(server.port)
    assert first_pid is not None and not _pid_alive(first_pid)
    server.stop()
    assert (tmp_path / "nats" / "nats.log").exists()


def test_nats_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedNats(tmp_path / "nats", port=port, start_timeout=5)
        with pytest.raises(RuntimeError, match="nats-server"):
            server.start()
    assert server.pid is None
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="permission handling only matters as root")
def test_postgres_data_owned_by_unprivileged_user_when_root(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg") as server:
        assert (server.pgdata).stat().st_uid != 0
        assert server.log_file.exists()


def test_nats_prefers_the_given_port_then_remembers_it(tmp_path: Path) -> None:
    preferred = find_free_port()
    with EmbeddedNats(tmp_path / "nats", preferred_port=preferred) as first:
        assert first.port == preferred
    with EmbeddedNats(tmp_path / "nats", preferred_port=find_free_port()) as again:
        assert again.url == f"nats://127.0.0.1:{preferred}"


def test_watchdog_restarts_a_dead_server_and_reports_when_it_cannot(tmp_path: Path) -> None:
    from infrastructure.embedded.supervision import Watchdog

    server = EmbeddedNats(tmp_path / "nats", port=find_free_port())
    server.start()
    failed = threading.Event()
    watchdog = Watchdog([server], interval=0.05, restart_for=1.0)
    watchdog.on_failure = failed.set
    with watchdog:
        first = server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while not (server.pid not in {None, first} and _port_open(server.port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.is_running and server.pid != first and _port_open(server.port)

        server.binary = Path("/bin/false")  # every further start fails
        os.kill(server.pid, signal.SIGKILL)
        assert failed.wait(30)
        assert watchdog.failure is not None and "nats-server died and could not be restarted" in watchdog.failure
    assert not server.is_running
