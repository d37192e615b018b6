"""An app built through `create_app`, pointed at the test database, driven through HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from litestar import Litestar
from cryptography.fernet import Fernet

from infrastructure.embedded.process import find_free_port
from infrastructure.settings import Settings
from interfaces.app import create_app
from interfaces.serving import server_config


ADMIN_EMAIL = "admin@charter.test"
ADMIN_PASSWORD = "admin-password-for-tests"


def make_settings(database_url: str, data_dir: Path, **overrides) -> Settings:
    values = dict(
        database_url=database_url,
        data_dir=data_dir,
        secret_key=Fernet.generate_key().decode(),
        log_json=True,
        log_level="warning",
        poll_interval=0.2,
        pool_size=8,  # many apps share the test server's 100 connections
        bootstrap_admin_email=ADMIN_EMAIL,
        bootstrap_admin_password=ADMIN_PASSWORD,
        rate_limit_anonymous=1_000_000,
        rate_limit_user=1_000_000,
        rate_limit_admin=1_000_000,
    )
    values.update(overrides)
    return Settings(**values)


async def admin_token(client) -> str:
    """Sign in as the bootstrap administrator."""
    response = await client.post("/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def serve_live(app: Litestar) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """Serve `app` with uvicorn in this event loop on a free port, once it listens and its event hub is
    subscribed: the server, the task serving it (set `server.should_exit` and await it to stop) and the URL."""
    port = find_free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            try:
                task.result()
            except SystemExit as exc:  # uvicorn exits on a failed startup; a test fails, not the session
                raise RuntimeError(f"the live server did not start (uvicorn exit {exc.code}); see its log above") from None
        await asyncio.sleep(0.05)
    if app.state.runtime.hub is not None:
        await asyncio.wait_for(app.state.runtime.hub.ready.wait(), 15)
    return server, task, f"http://127.0.0.1:{port}"


@dataclass
class LiveServer:
    url: str
    app: Litestar
    headers: dict[str, str]  # an administrator's Authorization header

    @property
    def runtime(self):
        return self.app.state.runtime


@asynccontextmanager
async def live_server(settings: Settings, *, as_admin: bool = True, **app_options) -> AsyncIterator[LiveServer]:
    """`create_app(settings, **app_options)` served by uvicorn (see `serve_live`) for the duration, with an
    administrator's Authorization header when the settings bootstrap one."""
    app = create_app(settings, **app_options)
    server, task, url = await serve_live(app)
    try:
        headers = {}
        if as_admin:
            async with httpx.AsyncClient(base_url=url) as http:
                headers = {"Authorization": f"Bearer {await admin_token(http)}"}
        yield LiveServer(url, app, headers)
    finally:
        server.should_exit = True
        await task
