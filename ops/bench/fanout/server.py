"""The Charter server process of `charter bench fanout` (`python -m ops.bench.fanout.server serve`), and
what the bench reads from it: its stream, its hub's flushes, its relay's lag, its warnings."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from ops.bench.common import ServerProcess, pythonpath, raise_nofile, serve_app
from ops.bench.fanout.clients import Auth, Feed, open_sse
from ops.bench.fanout.config import FanoutConfig

PROFILE_ENV = "CHARTER_BENCH_PROFILE_SERVER"
WORKERS_ENV = "CHARTER_BENCH_FANOUT_WORKERS"


def serve() -> None:
    """`python -m ops.bench.fanout.server serve`: uvicorn on create_app(Settings.from_env()).

    With CHARTER_BENCH_PROFILE_SERVER=<file> it profiles the event loop thread with cProfile between
    SIGUSR1 and SIGUSR2 (the bench sends them around the measured window) and writes the stats there.
    """
    raise_nofile()
    from infrastructure.settings import Settings
    from interfaces.app import create_app

    settings = Settings.from_env()
    workers = int(os.environ.get(WORKERS_ENV) or 1)
    if workers > 1:  # as `charter serve --workers N` runs them (no profile: one worker could be, not the set)
        from interfaces.serving import APP_FACTORY, run_workers

        run_workers(APP_FACTORY, settings.host, settings.port, workers)
        return
    app = create_app(settings)
    profile_path = os.environ.get(PROFILE_ENV)
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()

        def begin(*_: Any) -> None:
            profiler.enable()

        def end(*_: Any) -> None:
            profiler.disable()
            profiler.dump_stats(profile_path)

        signal.signal(signal.SIGUSR1, begin)
        signal.signal(signal.SIGUSR2, end)
    signal.signal(signal.SIGQUIT, _dump_stacks)
    serve_app(app, settings.host, settings.port)


def _dump_stacks(_signum: int, frame: Any) -> None:
    """SIGQUIT: the main thread's stack and every asyncio task's, to stderr (the bench sends it when the
    server does not stop)."""
    import traceback

    print("--- SIGQUIT: main thread", file=sys.stderr)
    traceback.print_stack(frame, file=sys.stderr)
    with contextlib.suppress(RuntimeError):
        tasks = asyncio.all_tasks(asyncio.get_running_loop())
        print(f"--- {len(tasks)} asyncio tasks", file=sys.stderr)
        seen: dict[str, int] = {}
        for task in tasks:
            chain, awaited = [], task.get_coro()
            while awaited is not None and len(chain) < 12:  # outermost -> innermost awaited coroutine
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is None:
                    chain.append(type(awaited).__name__)
                    break
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
            where = " > ".join(chain) or repr(task)
            if task.cancelling():
                where += f"  [cancel requested {task.cancelling()}x]"
            seen[f"{task.get_name().rstrip('0123456789')}: {where}"] = seen.get(f"{task.get_name().rstrip('0123456789')}: {where}", 0) + 1
        for where, n in sorted(seen.items(), key=lambda kv: -kv[1]):
            print(f"{n:6d} x {where}", file=sys.stderr)
    import gc
    import types

    suspended: dict[str, int] = {}
    for obj in gc.get_objects():  # async generators (lifespans, SSE streams) a task dump cannot see into
        if isinstance(obj, types.AsyncGeneratorType) and obj.ag_frame is not None and obj.ag_await is not None:
            chain, awaited = [f"{obj.ag_code.co_name}:{obj.ag_frame.f_lineno}"], obj.ag_await
            while awaited is not None and len(chain) < 12:
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is None:
                    chain.append(type(awaited).__name__)
                    break
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
            suspended[" > ".join(chain)] = suspended.get(" > ".join(chain), 0) + 1
    print(f"--- {sum(suspended.values())} suspended async generators", file=sys.stderr)
    for where, n in sorted(suspended.items(), key=lambda kv: -kv[1]):
        print(f"{n:6d} x {where}", file=sys.stderr)
    sys.stderr.flush()


@dataclass
class FanoutServer(ServerProcess):
    host: str = "127.0.0.1"

    def warnings(self, keep: int = 8) -> dict[str, Any]:
        """The server's log lines at warning level or above, counted by message (first few kept)."""
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("level") in ("warning", "error", "critical"):
                        key = f"{entry.get('level')}: {entry.get('event')} {entry.get('error', '')}".strip()
                        counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:keep])


def start_server(env: dict[str, str], host: str, port: int, log: Path, cwd: Path) -> FanoutServer:
    return FanoutServer.spawn("ops.bench.fanout.server", env, port, log, cwd, host=host)


async def wait_for_stream(server: FanoutServer, auth: Auth, timeout: float = 120.0) -> None:
    """Until the SSE endpoint answers 200: the hub is subscribed to JetStream and the guard knows the
    bench's role (the access read model, built by the projectors in the writer process, is loaded)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the Charter server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            conn = await open_sse(server.host, server.port, Feed(), auth, timeout=5)
            conn.close()
            return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the Charter server did not stream events within {timeout}s ({last!r}):\n{server.log_tail()}")


async def warm_connections(server: FanoutServer, auth: Auth, count: int) -> None:
    """Open and close a few SSE connections, so first-request costs do not count as per-client memory."""
    conns = await asyncio.gather(*(open_sse(server.host, server.port, Feed(), auth) for _ in range(count)))
    await asyncio.sleep(0.2)
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.5)


async def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> bytes:
    """The body of GET `path`, over HTTP/1.0 (no chunking, the server closes)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return raw.split(b"\r\n\r\n", 1)[1]


async def http_get_json(host: str, port: int, path: str, timeout: float = 10.0) -> Any:
    """GET `path` and decode the JSON body (an error entry on failure)."""
    try:
        return json.loads(await http_get(host, port, path, timeout))
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return {"error": repr(exc)}


async def hub_flushes(host: str, port: int, timeout: float = 10.0) -> dict[str, float]:
    """The server's SSE hub counters from /metrics: flushes, their event-loop seconds and events."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = (await http_get(host, port, "/metrics", timeout)).decode(errors="replace")
    except Exception:  # noqa: BLE001 - diagnostics only
        return {}
    wanted = {
        "charter_sse_flush_seconds_count": "flushes",
        "charter_sse_flush_seconds_sum": "seconds",
        "charter_sse_flush_events_sum": "events",
        "charter_sse_writes_total": "writes",
    }
    return {
        wanted[sample.name]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


def hub_window(before: dict[str, float], after: dict[str, float], subscribers: int, workers: int = 1) -> dict[str, Any] | None:
    """What the hub's flushes cost in the measured window (subscribers: the clients and the probe). With
    `workers`, /metrics sums every worker's hub, each flush writing to that worker's share of the clients:
    the writes are the server's own count (`charter_sse_writes_total`), else an even share is assumed."""
    if not before or not after:
        return None
    flushes = after.get("flushes", 0) - before.get("flushes", 0)
    seconds = after.get("seconds", 0) - before.get("seconds", 0)
    events = after.get("events", 0) - before.get("events", 0)
    if flushes <= 0:
        return None
    return {
        "flushes": int(flushes),
        "events_per_flush": round(events / flushes, 2),
        "flush_ms_avg": round(seconds / flushes * 1000, 2),
        "us_per_write": round(seconds / (after.get("writes", 0) - before.get("writes", 0) or flushes * subscribers / workers) * 1e6, 2),
    }


async def relay_behind(dsn: str) -> int:
    """Events committed that the relay has not published yet."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM events e WHERE (e.transaction_id, e.position) >"
            " coalesce((SELECT (c.transaction_id, c.position) FROM checkpoints c WHERE c.name = 'relay'),"
            " ('0'::xid8, 0::bigint))"
        )
    finally:
        await conn.close()


def server_env(dsn: str, nats_url: str, stream: Any, port: int, cfg: FanoutConfig, secret: str, jwt_secret: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CHARTER_DATABASE_URL": dsn,
            "CHARTER_NATS_URL": nats_url,
            "CHARTER_NATS_STREAM": stream.name,
            "CHARTER_NATS_SUBJECT_PREFIX": stream.prefix,
            "CHARTER_NATS_MAX_AGE_DAYS": "1",
            "CHARTER_HOST": "127.0.0.1",
            "CHARTER_PORT": str(port),
            "CHARTER_SECRET_KEY": secret,
            "CHARTER_JWT_SECRET": jwt_secret,
            # 1,000 clients connecting from one address must not be rate limited (the limiter still runs).
            "CHARTER_RATE_LIMIT_ANONYMOUS": "1000000000",
            "CHARTER_RATE_LIMIT_USER": "1000000000",
            "CHARTER_RATE_LIMIT_ADMIN": "1000000000",
            "CHARTER_RUN_PROJECTORS": "true" if cfg.server_projectors else "false",
            "CHARTER_RUN_RELAY": "true" if cfg.relay_in == "server" else "false",
            "CHARTER_MIGRATE_ON_START": "false",
            # the events delivered are the writer's only (no checkpoints, no scheduled task runs)
            "CHARTER_AUDIT_SEAL_INTERVAL": "0",
            "CHARTER_RUN_SCHEDULER": "false",
            "PYTHONPATH": pythonpath(env),
        }
    )
    env.setdefault("CHARTER_LOG_LEVEL", "warning")
    # Settings.from_env cannot parse CHARTER_DATA_DIR (str -> Path); with a secret key the server needs no
    # data dir, and it runs in a directory of its own (the default `.charter` lands there).
    env.pop("CHARTER_DATA_DIR", None)
    env.pop(PROFILE_ENV, None)
    if cfg.profile is not None:
        env[PROFILE_ENV] = str(cfg.profile)
    env[WORKERS_ENV] = str(cfg.server_workers)
    return env


def msgspec_to_dict(settings: Any) -> dict[str, Any]:
    import msgspec

    return {k: (str(v) if isinstance(v, Path) else v) for k, v in msgspec.structs.asdict(settings).items()}


def profile_text(path: Path, top: int = 30) -> str:
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    buffer.write("\n")
    stats.sort_stats("cumulative").print_stats(top)
    return buffer.getvalue()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    else:
        print("usage: python -m ops.bench.fanout.server serve   (use `charter bench fanout` to run the benchmark)", file=sys.stderr)
        sys.exit(2)
