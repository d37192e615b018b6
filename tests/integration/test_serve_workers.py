"""`charter serve --workers 2`: two worker processes on one port, one relay and one set of projectors
leading among them (PostgreSQL advisory locks, as across replicas), and a worker that dies replaced while
the other takes the lead over.

A real `charter serve` subprocess on the test PostgreSQL (a database of its own) and the test NATS (a
stream of its own)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from infrastructure.embedded.process import find_free_port
from infrastructure.eventlog.projector import lock_key
from infrastructure.stream.relay import RELAY
from projections import PROJECTIONS
from tests.conftest import DatabaseFactory, StreamFactory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CHARTER = Path(sys.executable).parent / "charter"
ADMIN, PASSWORD = "admin@workers.test", "admin-password-for-workers"
LEADERS = {RELAY: lock_key("leader", RELAY), **{p.name: lock_key("leader", p.name) for p in PROJECTIONS}}


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)
    return result


def workers_of(pid: int) -> list[int]:
    """The serve's worker processes (uvicorn's supervisor spawns them with multiprocessing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


async def leader_holders(dsn: str) -> dict[str, int]:
    """How many sessions hold each leader lock (relay, every projection)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT ((classid::bigint << 32) | objid::bigint) AS key, count(*) AS n FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " GROUP BY 1"
        )
    finally:
        await conn.close()
    held = {r["key"]: r["n"] for r in rows}
    return {name: held.get(key, 0) for name, key in LEADERS.items()}


@pytest.fixture
def serve(pg_server_dsn: str, nats_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str, str]]:
    databases, streams = DatabaseFactory(pg_server_dsn), StreamFactory(nats_url)
    dsn = asyncio.run(databases.create("workers"))
    stream = streams.new("workers")
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTER_")}
    env.update(
        CHARTER_DATABASE_URL=dsn, CHARTER_NATS_URL=nats_url, CHARTER_NATS_STREAM=stream.name,
        CHARTER_NATS_SUBJECT_PREFIX=stream.prefix, CHARTER_DATA_DIR=str(tmp_path / "data"), CHARTER_LOG_LEVEL="warning",
        CHARTER_BOOTSTRAP_ADMIN_EMAIL=ADMIN, CHARTER_BOOTSTRAP_ADMIN_PASSWORD=PASSWORD, CHARTER_POLL_INTERVAL="0.2",
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(CHARTER), "serve", "--workers", "2", "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield process, f"http://127.0.0.1:{port}", dsn, stream.name
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        print(log.read_text(errors="replace")[-4000:])
        asyncio.run(streams.delete_all())
        asyncio.run(databases.drop_all())


def ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, f"serve exited with {process.returncode}"
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def published(nats_url: str, stream: str) -> int:
    import nats

    nc = await nats.connect(nats_url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


async def committed(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()


def create_user(url: str, token: str, email: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{url}/api/v1/admin/users", json={"email": email, "password": "a-password-for-x"}, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    shown = httpx.get(f"{url}/api/v1/admin/users/{created.json()['id']}?consistent=true", headers=headers, timeout=30)
    assert shown.status_code == 200, shown.text


def test_two_workers_run_one_relay_and_one_set_of_projectors(serve, nats_url: str) -> None:  # type: ignore[no-untyped-def]
    process, url, dsn, stream = serve
    wait_for(lambda: ready(url, process), 120, "serve --workers 2 to be ready")
    assert len(wait_for(lambda: len(workers_of(process.pid)) == 2 and workers_of(process.pid), 30, "two workers")) == 2
    holders = wait_for(lambda: (h := asyncio.run(leader_holders(dsn))) and all(h.values()) and h, 30, "every leader lock held")
    assert set(holders.values()) == {1}, holders  # one relay, one runner per projection, across both workers

    login = httpx.post(f"{url}/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD}, timeout=30)
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    create_user(url, token, "first@workers.test")
    wait_for(lambda: asyncio.run(published(nats_url, stream)) == asyncio.run(committed(dsn)), 30, "every event published")

    # A worker dies: the supervisor starts another; the lead passes (or stays) and nothing runs twice.
    victim = workers_of(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in workers_of(process.pid) and len(workers_of(process.pid)) == 2, 60, "a new worker")
    wait_for(lambda: ready(url, process), 60, "serve to be ready again")
    holders = wait_for(lambda: (h := asyncio.run(leader_holders(dsn))) and all(h.values()) and h, 60, "every lead taken again")
    assert set(holders.values()) == {1}, holders
    create_user(url, token, "second@workers.test")
    wait_for(lambda: asyncio.run(published(nats_url, stream)) == asyncio.run(committed(dsn)), 30, "every event published")
    assert asyncio.run(published(nats_url, stream)) == asyncio.run(committed(dsn))  # none twice (Nats-Msg-Id)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_end_when_the_supervisor_is_killed(serve) -> None:  # type: ignore[no-untyped-def]
    process, url, dsn, _ = serve
    wait_for(lambda: ready(url, process), 120, "serve --workers 2 to be ready")
    workers = wait_for(lambda: len(found := workers_of(process.pid)) == 2 and found, 30, "two workers")

    os.kill(process.pid, signal.SIGKILL)  # the supervisor cannot stop anything
    process.wait()

    wait_for(lambda: not any(alive(pid) for pid in workers), 30, "the orphaned workers to end")
    holders = wait_for(lambda: (h := asyncio.run(leader_holders(dsn))) and not any(h.values()) and h, 30, "every lead released")
    assert set(holders.values()) == {0}


def scraped(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` with `labels` in one scrape of /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    total = 0.0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_a_scrape_counts_every_worker(serve) -> None:  # type: ignore[no-untyped-def]
    """A scrape reaches one worker; what it shows is the sum over both, so counters never step back
    and count every request, whichever worker took it; a worker that dies keeps its counts."""
    process, url, _, _ = serve
    wait_for(lambda: ready(url, process), 120, "serve --workers 2 to be ready")
    wait_for(lambda: len(workers_of(process.pid)) == 2, 30, "two workers")
    health = {"route": "/health", "status": "200"}
    sent = 60
    with httpx.Client(base_url=url, timeout=10) as http:  # keep-alive off: each request may reach either worker
        for _ in range(sent):
            assert http.get("/health", headers={"Connection": "close"}).status_code == 200
    seen = [scraped(url, "charter_http_requests_total", **health) for _ in range(10)]
    assert all(value >= sent for value in seen), seen
    assert seen == sorted(seen), seen  # never a worker's own, smaller count
    promtool = shutil.which("promtool")  # the merged exposition lints as a single process's does
    if promtool:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=httpx.get(f"{url}/metrics", timeout=10).text, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

    victim = workers_of(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in workers_of(process.pid) and len(workers_of(process.pid)) == 2, 60, "a new worker")
    wait_for(lambda: ready(url, process), 60, "serve to be ready again")
    assert scraped(url, "charter_http_requests_total", **health) >= seen[-1]
