"""How Charter runs under uvicorn: one place for the server options `charter serve`, the benchmark
servers and the tests' live servers share."""

from __future__ import annotations

import sys
from collections.abc import Callable
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


def direct_body_writer(send: Any) -> Callable[[bytes], bool] | None:
    """For a response uvicorn's httptools protocol has started as chunked (`send` being the server's own
    send, as `request_ids` keeps it in the scope's state): a function writing bytes already framed as
    chunks straight to the connection's transport, skipping the ASGI send and its wrappers. It returns
    False, writing nothing, when the transport cannot take them now (its buffer is over the high-water
    mark: the client reads slowly; or the client is gone); the caller then sends through `send`, which
    waits. None for any other server, protocol or response (HEAD, Content-Length, finished)."""
    try:
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    except ImportError:  # httptools not installed: h11, no direct writes
        return None
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle) or getattr(send, "__func__", None) is not RequestResponseCycle.send:
        return None
    if not cycle.response_started or cycle.response_complete or cycle.chunked_encoding is not True or cycle.scope["method"] == "HEAD":
        return None
    transport, flow = cycle.transport, cycle.flow

    def write(wire: bytes) -> bool:
        if flow.write_paused or cycle.disconnected or cycle.response_complete or transport.is_closing():
            return False
        transport.write(wire)
        return True

    return write


# What `charter serve --workers N` hands its worker processes: each builds its own app (and runtime) from
# the environment, so the settings the command line or the embedded servers decided are exported first.
APP_FACTORY = "interfaces.app:app_from_env"
HANDED_ON = ("database_url", "nats_url", "host", "port", "run_projectors", "bootstrap_admin_email", "bootstrap_admin_password")


def end_with_parent() -> None:
    """A worker of `charter serve --workers N` ends when its supervisor does, also when the supervisor was
    killed (SIGKILL) and could not stop it: on Linux the kernel sends the worker SIGTERM (its graceful stop)
    as the parent dies; elsewhere, or if that cannot be set, a thread watches the parent pid."""
    import os
    import signal
    import threading
    import time

    parent = os.getppid()
    try:
        import ctypes

        pr_set_pdeathsig = 1
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM) == 0 and os.getppid() == parent:
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def default_workers() -> int:
    """One worker per core this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def hand_on(settings: Any) -> None:
    """Export what the workers must see as the parent saw it (CHARTER_* variables, read by Settings.from_env)."""
    import os

    for name in HANDED_ON:
        value = getattr(settings, name)
        if value is None:
            continue
        os.environ[f"CHARTER_{name.upper()}"] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    os.environ["CHARTER_MIGRATE_ON_START"] = "false"  # the parent migrated once, before the workers start


def serve_workers(settings: Any, workers: int) -> None:
    """`charter serve --workers N` once its embedded servers (if any) are up: migrations and the secret key
    file made once here, then the workers (see run_workers)."""
    import asyncio

    import asyncpg

    from infrastructure.eventlog.migrate import migrate
    from infrastructure.audit.signing import Signer
    from infrastructure.plugins.secrets import load_or_create_key

    async def migrated() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    if settings.migrate_on_start:
        asyncio.run(migrated())
    load_or_create_key(settings.secret_key, settings.data_dir)  # made once here, not by each worker
    Signer.load_or_create(settings.audit_key_file())  # likewise the audit log's signing key
    hand_on(settings)
    run_workers(APP_FACTORY, settings.host, settings.port, workers)


def run_workers(app: Any, host: str, port: int, workers: int, **overrides: Any) -> None:
    """N worker processes on one listening socket: uvicorn's supervisor binds it, starts the workers (each
    `app`, an import string of an app factory, built afresh in the worker), restarts one that dies and
    stops them all on SIGINT/SIGTERM. Background work that must run once (projectors, the relay) is led by
    one process at a time through PostgreSQL advisory locks, exactly as across replicas; each worker has
    its own SSE hub, access cache and read cache."""
    import os
    import shutil
    import tempfile

    from uvicorn.supervisors import Multiprocess

    from infrastructure.telemetry.metrics import MULTIPROCESS_DIR

    config = server_config(app, host, port, workers=workers, factory=True, **overrides)
    sock = config.bind_socket()
    # The workers' metrics meet in a directory of this run's own (infrastructure/telemetry/metrics.py):
    # a scrape answered by any worker counts every worker. Made before they start, removed after.
    shared = tempfile.mkdtemp(prefix="charter-metrics-")
    os.environ[MULTIPROCESS_DIR] = shared
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
        os.environ.pop(MULTIPROCESS_DIR, None)
        shutil.rmtree(shared, ignore_errors=True)
