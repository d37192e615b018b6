"""`charter serve` as a separate process, its whole output (every log line) kept in a file.

The hostile tests of plugin schemas and secrets run against this: a real server process with the relay
publishing to its own JetStream stream, whose stdout/stderr (structlog, uvicorn, stdlib logging and the
sandbox workers it spawns) can be read afterwards, which an in-process app cannot promise.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
from cryptography.fernet import Fernet

from infrastructure.embedded.process import find_free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@charter.test"
ADMIN_PASSWORD = "admin-password-for-security-tests"
START_TIMEOUT = 90.0


@dataclass
class Served:
    url: str
    database_url: str
    nats_url: str
    stream: Any  # infrastructure.stream.relay.StreamSettings
    log_path: Path
    process: subprocess.Popen
    headers: dict[str, str] = field(default_factory=dict)  # the administrator's Authorization header

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@asynccontextmanager
async def charter_process(
    database_url: str, nats_url: str, stream: Any, data_dir: Path, **settings: str
) -> AsyncIterator[Served]:
    """Start `charter serve` on a free port; stop it (SIGTERM, then SIGKILL) at the end."""
    port = find_free_port()
    env = {
        **os.environ,
        "CHARTER_DATABASE_URL": database_url,
        "CHARTER_NATS_URL": nats_url,
        "CHARTER_NATS_STREAM": stream.name,
        "CHARTER_NATS_SUBJECT_PREFIX": stream.prefix,
        "CHARTER_SECRET_KEY": Fernet.generate_key().decode(),
        "CHARTER_DATA_DIR": str(data_dir),
        "CHARTER_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "CHARTER_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CHARTER_LOG_LEVEL": "debug",
        "CHARTER_POLL_INTERVAL": "0.2",
        "CHARTER_RATE_LIMIT_ANONYMOUS": "1000000",
        "CHARTER_RATE_LIMIT_USER": "1000000",
        "CHARTER_RATE_LIMIT_ADMIN": "1000000",
        **{f"CHARTER_{name.upper()}": value for name, value in settings.items()},
    }
    log_path = data_dir / "server.log"
    code = "import sys; from interfaces.cli import main; sys.exit(main(sys.argv[1:]))"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        served = Served(url, database_url, nats_url, stream, log_path, process)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await _until_healthy(http, served)
            login = await http.post("/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            assert login.status_code == 200, login.text
            served.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 10)


async def _until_healthy(http: httpx.AsyncClient, served: Served) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"charter serve exited with {served.process.returncode}:\n{served.log_text()[-4000:]}")
        try:
            if (await http.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline
    raise AssertionError(f"charter serve did not answer /health within {START_TIMEOUT}s:\n{served.log_text()[-4000:]}")


async def jetstream_messages(served: Served, expected: int, timeout: float = 30.0) -> list[str]:
    """Every message of the server's JetStream stream (subject, headers and data, as text), once the
    stream holds `expected` messages (the relay publishes after the commit)."""
    nc = await nats.connect(served.nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while (info := await js.stream_info(served.stream.name)).state.messages < expected:
            assert time.monotonic() < deadline, f"JetStream holds {info.state.messages} of {expected} events"
            await asyncio.sleep(0.1)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(served.stream.name, seq=seq)
            out.append(f"{msg.subject}\n{json.dumps(msg.headers or {})}\n{msg.data.decode(errors='replace')}")
        return out
    finally:
        await nc.close()
