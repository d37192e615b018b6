"""How Charter runs under uvicorn: one place for the server options `charter serve`, the benchmark
servers and the tests' live servers share."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn


def server_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """uvloop where there is one; httptools when installed (uvicorn picks it); requests are logged by
    Charter itself (no access log); a deep accept backlog for many SSE clients; at shutdown, 3 s for open
    connections (SSE streams never end by themselves) before they are closed. uvicorn's own
    X-Forwarded-For handling is off (by default it believes any loopback peer): Charter reads the header
    itself, from `CHARTER_TRUSTED_PROXIES` only (interfaces/http/clients.py)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "backlog": 4096,
        "timeout_graceful_shutdown": 3,
        "proxy_headers": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
