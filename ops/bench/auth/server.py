"""The Charter server processes of `charter bench auth`: A (authorization on), B (off) and the setup
server P, each `python -m ops.bench.auth.server serve` on a port of its own."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ops.bench.auth import ADMIN_EMAIL, ADMIN_PASSWORD, AUTHORIZATION_ENV, HOST
from ops.bench.common import ServerProcess, pythonpath, serve_app


def serve() -> None:
    """`python -m ops.bench.auth.server serve`: uvicorn on create_app(Settings.from_env(), authorization=...)
    with authorization from CHARTER_BENCH_AUTHORIZATION (`on` / `off`)."""
    from infrastructure.settings import Settings
    from interfaces.app import create_app

    settings = Settings.from_env()
    authorization = os.environ.get(AUTHORIZATION_ENV, "on") != "off"
    serve_app(create_app(settings, authorization=authorization), settings.host, settings.port, f"authorization={authorization} ")


@dataclass
class AuthServer(ServerProcess):
    label: str = ""
    authorization: bool = True


def server_env(
    dsn: str, port: int, secret: str, jwt_secret: str, *, authorization: bool, projectors: bool = False
) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):  # nothing of the caller's Charter configuration leaks into the servers
        if name.startswith("CHARTER_"):
            del env[name]
    env.update(
        {
            "CHARTER_DATABASE_URL": dsn,
            "CHARTER_HOST": HOST,
            "CHARTER_PORT": str(port),
            "CHARTER_SECRET_KEY": secret,
            "CHARTER_JWT_SECRET": jwt_secret,
            "CHARTER_ACCESS_TOKEN_TTL": "86400",
            "CHARTER_LOG_LEVEL": "warning",
            "CHARTER_MIGRATE_ON_START": "false",
            # Generous limits: neither server may ever throttle (both still count every request).
            "CHARTER_RATE_LIMIT_ANONYMOUS": "1000000000",
            "CHARTER_RATE_LIMIT_USER": "1000000000",
            "CHARTER_RATE_LIMIT_ADMIN": "1000000000",
            # Only the setup server P runs the projectors (and bootstraps the administrator): A and B
            # differ in nothing but authorization, background work included.
            "CHARTER_RUN_PROJECTORS": "true" if projectors else "false",
            AUTHORIZATION_ENV: "on" if authorization else "off",
            "PYTHONPATH": pythonpath(env),
        }
    )
    if projectors:
        env["CHARTER_BOOTSTRAP_ADMIN_EMAIL"] = ADMIN_EMAIL
        env["CHARTER_BOOTSTRAP_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    return env


def start_server(label: str, authorization: bool, env: dict[str, str], port: int, workdir: Path) -> AuthServer:
    return AuthServer.spawn(
        "ops.bench.auth.server", env, port, workdir / f"server-{label}.log", workdir / f"server-{label}",
        label=label, authorization=authorization,
    )


async def wait_healthy(server: AuthServer, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=5) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server {server.label} exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server {server.label} did not answer /health within {timeout}s ({last!r}):\n{server.log_tail()}")


def banner(server: AuthServer) -> str:
    """The server's `authorization=... http=... loop=...` line."""
    for line in server.log_tail(200).splitlines():
        if line.startswith("authorization="):
            return line.strip()
    return ""


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        print("usage: python -m ops.bench.auth.server serve", file=sys.stderr)
        sys.exit(2)
