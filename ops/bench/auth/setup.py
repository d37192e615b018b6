"""(2) The seed of `charter bench auth`: plugins installed through the application layer, and a viewer
created and signed in through server A, with the checks that A and B answer the same page."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from ops.bench.auth import ADMIN_EMAIL, ADMIN_PASSWORD, HOST, PATH, VIEWER_EMAIL, VIEWER_PASSWORD
from ops.bench.auth.server import AuthServer, wait_healthy


async def seed_plugins(dsn: str, secret: str, data_dir: Path, count: int, prefix: str = "bench-auth") -> None:
    """`count` plugins installed through the application layer (the real write path)."""
    from application.commands import InstallPlugin
    from application.context import CommandContext
    from infrastructure.telemetry.logging import configure_logging
    from infrastructure.settings import Settings
    from interfaces.runtime import start_runtime, stop_runtime

    configure_logging("warning", json=False)
    settings = Settings(
        database_url=dsn, data_dir=data_dir, secret_key=secret, run_projectors=False, migrate_on_start=False,
        log_level="warning", pool_size=4,
    )
    runtime = await start_runtime(settings)
    try:
        ctx = CommandContext(actor="bench")
        for i in range(count):
            pid = f"{prefix}-{i:03d}"
            manifest = {
                "id": pid,
                "name": f"Bench plugin {i:03d}",
                "version": f"1.{i % 7}.0",
                "description": f"A plugin seeded by charter bench ({prefix}), number {i}",
            }
            await runtime.application.execute(InstallPlugin(manifest=manifest, source={"kind": "bench"}), ctx)
    finally:
        await stop_runtime(runtime)


@dataclass
class Prepared:
    token: str
    total: int
    body_bytes: int
    same_body: bool


async def prepare(a: AuthServer, b: AuthServer, plugins: int) -> Prepared:
    """The viewer and its token on A, then (B has been starting meanwhile) checks that both servers answer
    the same page and that A refuses a request without a token."""
    import httpx

    token = await viewer_token(a.port, plugins, PATH)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{a.port}", timeout=30) as http:
        viewer = {"Authorization": f"Bearer {token}"}
        authorized = await http.get(PATH, headers=viewer)
        anonymous = await http.get(PATH)
    if authorized.status_code != 200 or anonymous.status_code != 401:
        raise RuntimeError(
            f"server A must answer 200 with the token and 401 without: {authorized.status_code} / {anonymous.status_code}"
        )
    await wait_healthy(b)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{b.port}", timeout=30) as http:
        open_ = await http.get(PATH)
    if open_.status_code != 200:
        raise RuntimeError(f"server B must answer 200 without a token: {open_.status_code} {open_.text[:300]}")
    same = authorized.json()["items"] == open_.json()["items"]
    return Prepared(token, authorized.json()["total"], len(authorized.content), same)


async def viewer_token(port: int, plugins: int, path: str) -> str:
    """A user holding the built-in `viewer` role everywhere, created by the bootstrapped administrator,
    signed in; returns once `path` (a plugins list) shows every seeded plugin."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
        login = await http.post("/api/v1/auth/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        login.raise_for_status()
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await http.post(
            "/api/v1/admin/users", json={"email": VIEWER_EMAIL, "password": VIEWER_PASSWORD, "full_name": "Bench viewer"},
            headers=admin,
        )
        if created.status_code != 201:
            raise RuntimeError(f"creating the viewer failed: {created.status_code} {created.text}")
        granted = await http.post(f"/api/v1/admin/users/{created.json()['id']}/roles/viewer", headers=admin)
        if granted.status_code != 200:
            raise RuntimeError(f"granting viewer failed: {granted.status_code} {granted.text}")
        login = await http.post("/api/v1/auth/login", json={"username": VIEWER_EMAIL, "password": VIEWER_PASSWORD})
        login.raise_for_status()
        token = login.json()["access_token"]
        viewer = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        while True:  # until the plugins read model holds every seeded plugin
            page = await http.get(path + "&consistent=true", headers=viewer)
            if page.status_code == 200 and page.json()["total"] >= plugins:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the plugins read model did not catch up: {page.status_code} {page.text[:300]}")
            await asyncio.sleep(0.2)
    return token
