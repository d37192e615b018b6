"""PostgreSQL goes away under write load: only 503 DATABASE_UNAVAILABLE (never a 500, never a hang), one
log line per outage state change, and recovery by itself within seconds of the server's return.

The test runs `charter serve` as a subprocess (its real log output is what is checked) against a
throw-away PostgreSQL cluster of its own: the shared server is never stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from infrastructure.embedded.postgres import EmbeddedPostgres
from infrastructure.embedded.process import find_free_port
from tests.e2e.plugin_kit import PLUGINS, install, manifest, unique_id

ADMIN = ("outage-admin@charter.test", "outage-admin-password")
REQUEST_BOUND = 10.0  # no request may take longer than this, outage or not


async def _wait_ready(base: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"charter serve exited with {process.returncode}")
            try:
                if (await http.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("charter serve did not become ready")


@pytest.fixture
def throwaway_pg(tmp_path: Path):
    server = EmbeddedPostgres(tmp_path / "pg", port=find_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop(force=True)


async def test_requests_answer_503_during_an_outage_and_recover_by_themselves(
    throwaway_pg: EmbeddedPostgres, tmp_path: Path, nats_url: str, jetstream_streams
) -> None:
    admin_conn = await asyncpg.connect(throwaway_pg.dsn)
    await admin_conn.execute("CREATE DATABASE charter")
    await admin_conn.close()
    dsn = throwaway_pg.dsn.rsplit("/", 1)[0] + "/charter"
    stream = jetstream_streams.new("outage")
    port = find_free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        "CHARTER_DATABASE_URL": dsn,
        "CHARTER_NATS_URL": nats_url,
        "CHARTER_NATS_STREAM": stream.name,
        "CHARTER_NATS_SUBJECT_PREFIX": stream.prefix,
        "CHARTER_DATA_DIR": str(tmp_path / "data"),
        "CHARTER_BOOTSTRAP_ADMIN_EMAIL": ADMIN[0],
        "CHARTER_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
        "CHARTER_LOG_LEVEL": "info",
        "CHARTER_POLL_INTERVAL": "0.2",
        "CHARTER_RATE_LIMIT_ADMIN": "1000000",
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", "from interfaces.cli import main; main()", "serve", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base, process)
        async with httpx.AsyncClient(base_url=base, timeout=REQUEST_BOUND + 5) as http:
            login = await http.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
            http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            outcomes: list[tuple[int, float, dict, httpx.Headers]] = []
            stop = asyncio.Event()

            async def writer() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        response = await install(http, manifest(unique_id("outage")))
                        body = response.json()
                    except httpx.TransportError as exc:  # the server must keep answering
                        raise AssertionError(f"transport error during the outage: {exc!r}") from exc
                    outcomes.append((response.status_code, time.monotonic() - started, body, response.headers))

            async def reader() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    response = await http.get(PLUGINS, params={"limit": 5})
                    outcomes.append((response.status_code, time.monotonic() - started, response.json(), response.headers))

            load = [asyncio.create_task(writer()) for _ in range(4)] + [asyncio.create_task(reader()) for _ in range(2)]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(throwaway_pg.stop)
            outage_started = len(outcomes)
            await asyncio.sleep(3.0)
            during = outcomes[outage_started:]
            asked = time.monotonic()
            ready = await http.get("/ready")
            assert ready.status_code == 503 and time.monotonic() - asked < 5
            assert ready.json()["checks"]["database"]["status"] == "failing"
            await asyncio.to_thread(throwaway_pg.start)
            back_at = time.monotonic()

            async def first_success() -> float:
                while True:
                    response = await install(http, manifest(unique_id("back")))
                    if response.status_code == 201:
                        return time.monotonic() - back_at
                    await asyncio.sleep(0.05)

            recovered_in = await asyncio.wait_for(first_success(), 15)
            stop.set()
            await asyncio.gather(*load)

            statuses = {status for status, *_ in outcomes}
            assert statuses <= {200, 201, 503}, statuses
            unavailable = [(body, headers) for status, _, body, headers in during if status == 503]
            assert len(unavailable) >= 5, f"the outage was not seen: {[s for s, *_ in during]}"
            for body, headers in unavailable:
                assert body["error"]["code"] == "DATABASE_UNAVAILABLE"
                assert int(headers["retry-after"]) >= 1
            assert max(elapsed for _, elapsed, *_ in outcomes) < REQUEST_BOUND
            print(f"recovered {recovered_in:.2f}s after PostgreSQL returned; {len(unavailable)} requests answered 503")
            assert recovered_in < 5.0, f"writes recovered only {recovered_in:.2f}s after the server returned"

            # Background parts recover too: the projection catches up, /ready clears.
            deadline = time.monotonic() + 10
            while True:
                ready = await http.get("/ready")
                if ready.status_code == 200 and ready.json()["checks"]["relay"]["last_error"] is None:
                    break
                assert time.monotonic() < deadline, ready.text
                await asyncio.sleep(0.2)
            consistent = await http.get(PLUGINS, params={"consistent": "true", "limit": 1})
            assert consistent.status_code == 200
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    text = log_path.read_text()
    assert "Traceback" not in text
    # Each serving process (`--workers`, one per core by default) logs a line per change of the state it
    # sees: down, then up again, alternating (a server that stops slowly under load may answer a
    # process once more in between), ending up; never a line per failed request.
    changes = {"database unavailable": "down", "database available again": "up"}
    states: dict[int, list[str]] = {}
    for line in lines:
        if line.get("event") in changes:
            states.setdefault(line["pid"], []).append(changes[line["event"]])
    assert states, "no process logged the outage"
    for pid, seen in states.items():
        assert seen == ["down", "up"] * (len(seen) // 2) and seen, (pid, seen)
    changed = sum(len(seen) for seen in states.values())
    errors = [line for line in lines if line.get("level") in ("error", "critical")]
    assert len(errors) <= changed + 2 * len(states), errors  # one per state change, not one per failed request
    assert changed < len(unavailable), (changed, len(unavailable))
