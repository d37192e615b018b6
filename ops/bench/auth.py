"""`charter bench auth`: what authorization costs on a read, against the same app without it, in one run.

One run, on ONE PostgreSQL server (CHARTER_DATABASE_URL's, or an embedded one started for the run), in a
fresh database `charter_bench_<hex>` dropped at the end, no NATS:

(1) servers  TWO Charter server processes on the same database, each uvicorn (uvloop) on a free port
             (`python -m ops.bench.auth serve`):
               A  `create_app(settings, authorization=True)`: the guard checks the Bearer token (JWT
                  signature and claims, cached per token), the user's state, resolves the role grants
                  to permissions and checks the route's rule; rate limiting per user.
               B  `create_app(settings, authorization=False)`: the same app with the guard's checks off
                  (only the rate limiter still counts, per IP).
             Neither runs projectors: a third server P (authorization on, projectors on) bootstraps the
             built-in roles and an administrator and builds the read models during the setup, and is
             stopped before the load, so A and B differ in nothing but authorization. Rate limits are set
             so high that neither ever throttles.
(2) seed     50 plugins installed through the application layer (while P starts); a user holding the
             built-in `viewer` role (everywhere) is created and signs in through A (while B starts).
(3) load     `--clients` concurrent keep-alive HTTP/1.1 connections (raw asyncio streams on uvloop in
             the bench process: one request in flight per connection) send `GET /api/v1/plugins?limit=20`:
             to A with the viewer's Bearer token, to B without a token. After one unmeasured warm-up of
             each server, phases alternate A, B, A, B (CHARTER_BENCH_AUTH_ROUNDS=n: n times), each a short
             warm-up and `--seconds` measured, so drift (caches, autovacuum, other load on the machine)
             falls on both sides alike. Requests/s per side over its phases, p50/p99 latency, and the CPU
             used during the window by the bench's clients, the loaded server and PostgreSQL (/proc): the
             client side must stay well below one core for the numbers to be the server's.
(4) guard    the guard alone (`interfaces.http.security.authorize`) called in the bench process on the same
             route, with and without authorization: what authorization adds per request, free of the noise
             of the load phases, and the ratio that alone predicts against B's server CPU per request.

Target: A >= 0.9x B. The report is printed and written to `<report>/auth-<timestamp>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ops.bench.append import (
    Meter,
    bench_server,
    create_database,
    drop_database,
    latency_summary,
    machine_info,
    server_info,
    warmup_for,
    with_database,
)
from ops.bench.common import ServerProcess, bench_progress, postmaster_pid, tree_cpu_seconds, write_report

RATIO_TARGET = 0.9  # authorized requests/s over unauthorized requests/s
PLUGINS = 50  # seeded: the page of 20 is full
PATH = "/api/v1/plugins?limit=20"
AUTHORIZATION_ENV = "CHARTER_BENCH_AUTHORIZATION"
ROUNDS_ENV = "CHARTER_BENCH_AUTH_ROUNDS"
VIEWER_EMAIL = "viewer@bench.charter"
VIEWER_PASSWORD = "viewer-password-for-the-bench"
ADMIN_EMAIL = "admin@bench.charter"
ADMIN_PASSWORD = "admin-password-for-the-bench"
HOST = "127.0.0.1"
_ROOT = Path(__file__).resolve().parents[2]


def _run_loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# -- CPU of other processes -------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far, from /proc (None when it cannot be read)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None






class Cores:
    """Cores a set of processes used over a window (None where /proc cannot tell)."""

    def __init__(self, readers: dict[str, Any]) -> None:
        self.readers = readers
        self.started = time.monotonic()
        self.before = {name: read() for name, read in readers.items()}

    def read(self) -> dict[str, float | None]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        out: dict[str, float | None] = {}
        for name, read in self.readers.items():
            now, then = read(), self.before[name]
            out[name] = None if now is None or then is None else round((now - then) / elapsed, 3)
        return out


# -- the server processes ---------------------------------------------------------------------------


def serve() -> None:
    """`python -m ops.bench.auth serve`: uvicorn on create_app(Settings.from_env(), authorization=...)
    with authorization from CHARTER_BENCH_AUTHORIZATION (`on` / `off`)."""
    import uvicorn

    from infrastructure.settings import Settings
    from interfaces.app import create_app
    from interfaces.serving import server_config

    settings = Settings.from_env()
    authorization = os.environ.get(AUTHORIZATION_ENV, "on") != "off"
    app = create_app(settings, authorization=authorization)
    config = server_config(app, settings.host, settings.port)
    config.load()
    print(
        f"authorization={authorization} http={config.http_protocol_class.__name__} loop={config.loop}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.Server(config).run()


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
            "PYTHONPATH": os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    if projectors:
        env["CHARTER_BOOTSTRAP_ADMIN_EMAIL"] = ADMIN_EMAIL
        env["CHARTER_BOOTSTRAP_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    return env


def start_server(label: str, authorization: bool, env: dict[str, str], port: int, workdir: Path) -> AuthServer:
    cwd = workdir / f"server-{label}"
    cwd.mkdir(parents=True, exist_ok=True)
    log = workdir / f"server-{label}.log"
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops.bench.auth", "serve"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return AuthServer(process=process, port=port, log=log, label=label, authorization=authorization)


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


# -- seeding ------------------------------------------------------------------------------------------


async def migrate_database(dsn: str) -> None:
    from infrastructure.eventlog.migrate import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def seed_plugins(dsn: str, secret: str, data_dir: Path, count: int) -> None:
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
            pid = f"bench-auth-{i:03d}"
            manifest = {
                "id": pid,
                "name": f"Bench plugin {i:03d}",
                "version": f"1.{i % 7}.0",
                "description": f"A plugin seeded by charter bench auth, number {i}",
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

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{a.port}", timeout=30) as http:
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
            page = await http.get(PATH + "&consistent=true", headers=viewer)
            if page.status_code == 200 and page.json()["total"] >= plugins:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the plugins read model did not catch up: {page.status_code} {page.text[:300]}")
            await asyncio.sleep(0.2)
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


# -- the load -----------------------------------------------------------------------------------------


def request_bytes(port: int, token: str | None) -> bytes:
    lines = [f"GET {PATH} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: application/json", "User-Agent: charter-bench-auth"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: status and body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        return status, await reader.readexactly(int(lower[at + 17 : end]))
    if b"transfer-encoding: chunked" in lower:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                return status, bytes(body)
    return status, b""


@dataclass
class PhaseResult:
    side: str  # "authorized" (A) or "unauthorized" (B)
    round: int
    requests: int
    seconds: float
    rate: float
    errors: int
    first_error: str | None
    latency_ms: dict[str, float] | None
    cpu: dict[str, float | None] = field(default_factory=dict)  # cores: bench clients, server, PostgreSQL, machine
    latencies: list[float] = field(default_factory=list, repr=False)


async def run_phase(
    server: AuthServer, side: str, round_: int, request: bytes, clients: int, warmup: float, seconds: float,
    progress: Progress, pg_pid: int | None,
) -> PhaseResult:
    done = 0
    errors: list[str] = []
    latencies: list[float] = []
    measuring = False
    running = True
    perf = time.perf_counter

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            while running:
                started = perf()
                writer.write(request)
                status, body = await _read_response(reader)
                if status != 200:
                    errors.append(f"{status} {body[:200]!r}")
                    await asyncio.sleep(0.01)
                    continue
                done += 1
                if measuring:
                    latencies.append(perf() - started)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if running:
                errors.append(repr(exc))
        finally:
            writer.close()

    letter = "A" if side == "authorized" else "B"
    title = f"{letter}{round_} {side}" if round_ else f"warm-up {letter} (discarded)"
    meter = Meter(progress, title, "req", warmup, seconds)
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    meter.restart_clock()
    warm_until = time.monotonic() + warmup
    while time.monotonic() < warm_until:
        await asyncio.sleep(0.2)
        meter.tick(done)
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]
    cores = Cores({"server": lambda: cpu_seconds(server.pid), "postgres": lambda: tree_cpu_seconds(pg_pid)})
    meter.begin(done)
    measuring = True
    end_at = time.monotonic() + seconds
    while (left := end_at - time.monotonic()) > 0:
        await asyncio.sleep(min(0.2, left))
        meter.tick(done)
    measuring = False
    requests, elapsed = meter.end(done)
    server_cores = cores.read()
    running = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu: dict[str, float | None] = {
        "clients": meter.cpu.get("process_cores"),
        "server": server_cores["server"],
        "postgres": server_cores["postgres"],
        "machine_busy": meter.cpu.get("machine_busy_cores"),
        "machine_idle": meter.cpu.get("machine_idle_cores"),
    }
    result = PhaseResult(
        side, round_, requests, elapsed, requests / elapsed, len(errors), errors[0] if errors else None,
        latency_summary(latencies), cpu, latencies,
    )
    progress.update(
        meter.task,
        completed=warmup + seconds,
        status=f"[bold]{result.rate:,.0f} req/s[/bold] over {elapsed:.1f}s ({requests:,} requests)",
    )
    return result


async def run_load(
    a: AuthServer, b: AuthServer, token: str, clients: int, warmup: float, seconds: float, rounds: int,
    progress: Progress, pg_pid: int | None,
) -> list[PhaseResult]:
    results = []
    # Both servers warm up once before the first measured phase (first connections of the database pools,
    # prepared statements, the interpreter's specialisation): not counted.
    for server, side, token_ in ((a, "authorized", token), (b, "unauthorized", None)):
        await run_phase(server, side, 0, request_bytes(server.port, token_), clients, warmup / 2, warmup, progress, pg_pid)
    for round_ in range(1, rounds + 1):
        results.append(await run_phase(a, "authorized", round_, request_bytes(a.port, token), clients, warmup, seconds, progress, pg_pid))
        results.append(await run_phase(b, "unauthorized", round_, request_bytes(b.port, None), clients, warmup, seconds, progress, pg_pid))
    return results


def side_summary(phases: list[PhaseResult]) -> dict[str, Any]:
    requests = sum(p.requests for p in phases)
    seconds = sum(p.seconds for p in phases)
    rate = requests / seconds if seconds else 0.0

    def mean(key: str) -> float | None:
        values = [p.cpu.get(key) for p in phases]
        if any(v is None for v in values) or not values:
            return None
        return round(sum(v * p.seconds for v, p in zip(values, phases, strict=True)) / seconds, 3)  # type: ignore[operator]

    cpu = {key: mean(key) for key in ("clients", "server", "postgres", "machine_busy", "machine_idle")}
    per_request = {
        f"{key}_us": round(value / rate * 1e6, 1) if value is not None and rate else None
        for key, value in cpu.items()
        if key in ("clients", "server", "postgres")
    }
    return {
        "rate": rate,
        "requests": requests,
        "seconds": round(seconds, 3),
        "errors": sum(p.errors for p in phases),
        "first_error": next((p.first_error for p in phases if p.first_error), None),
        "latency_ms": latency_summary([x for p in phases for x in p.latencies]),
        "phase_rates": [round(p.rate, 1) for p in phases],
        "cpu_cores": cpu,
        "cpu_per_request": per_request,
    }


# -- the guard alone ----------------------------------------------------------------------------------


def guard_cost(iterations: int = 5_000, repeats: int = 3) -> dict[str, float]:
    """Microseconds per call of the guard itself (`interfaces.http.security.authorize`) on the benchmarked
    route, in this process: with authorization and the viewer's (already verified, cached) token, and with
    authorization off and no token, each minus building the request object. The best of `repeats` runs,
    so other load on the machine hardly shows. This is what authorization adds to a request, apart from
    the Authorization header's bytes on the wire."""
    from types import SimpleNamespace

    from litestar import Request

    from domain.identity.access import BUILTIN_ROLES
    from infrastructure.identity.tokens import TokenService
    from infrastructure.identity.ratelimit import RateLimiter
    from infrastructure.settings import Settings
    from interfaces.app import create_app
    from interfaces.http.security import Authority, authorize

    app = create_app(Settings(database_url="postgresql://unused/unused", log_level="warning", log_json=False))
    handler = next(
        h for r in app.routes for h in getattr(r, "route_handlers", []) if getattr(h, "operation_id", None) == "listPlugins"
    )
    tokens = TokenService(uuid.uuid4().hex)
    token, _ = tokens.issue(str(uuid.uuid4()), [("viewer", None)], VIEWER_EMAIL)
    path, _, query = PATH.partition("?")

    def authority(enabled: bool) -> Any:
        limiter = RateLimiter(None, {"anonymous": 10**9, "user": 10**9, "admin": 10**9})  # type: ignore[arg-type]
        found = Authority(tokens, limiter, enabled=enabled)
        found.roles = {name: list(perms) for name, (_, perms) in BUILTIN_ROLES.items()}
        return SimpleNamespace(authority=found, pool=None)

    def request(with_token: bool) -> Any:
        headers = [(b"host", f"{HOST}:8000".encode()), (b"accept", b"application/json"), (b"user-agent", b"charter-bench-auth")]
        if with_token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope = {
            "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": query.encode(), "headers": headers, "path_params": {},
            "client": (HOST, 50000), "server": (HOST, 8000), "app": app, "litestar_app": app,
            "route_handler": handler, "state": {},
        }
        made = Request(scope)
        _ = made.headers  # parsed (and cached in the scope) by the handler anyway: not the guard's cost
        return made

    async def per_call(enabled: bool) -> float:
        app.state.runtime = authority(enabled)
        await authorize(request(enabled), handler)  # the token's verification is cached from now on, as in a server
        started = time.perf_counter()
        for _ in range(iterations):
            await authorize(request(enabled), handler)
        guarded = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(iterations):
            request(enabled)
        return (guarded - (time.perf_counter() - started)) / iterations * 1e6

    async def measure() -> dict[str, float]:
        on, off = [], []
        for _ in range(repeats):
            on.append(await per_call(True))
            off.append(await per_call(False))
        return {
            "authorized_us": round(min(on), 2),
            "disabled_us": round(min(off), 2),
            "extra_us": round(min(on) - min(off), 2),
            "calls": iterations,
        }

    return asyncio.run(measure())


# -- the report ---------------------------------------------------------------------------------------


def fmt_latency(latency: dict[str, float] | None) -> str:
    return "-" if not latency else f"p50 {latency['p50']:.2f} / p99 {latency['p99']:.2f}"


def fmt_cores(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _side_title(key: str) -> str:
    return "A authorized (viewer token)" if key == "authorized" else "B authorization off (no token)"


def results_table(report: dict[str, Any]) -> Table:
    table = Table(title="charter bench auth: GET " + PATH, title_justify="left")
    for name, justify in (
        ("side", "left"), ("requests/s", "right"), ("per phase", "right"), ("latency ms", "right"), ("errors", "right"),
        ("cores: clients / server / postgres / machine", "right"), ("CPU µs per request: server / postgres", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for key, side in report["sides"].items():
        cpu, per = side["cpu_cores"], side["cpu_per_request"]
        table.add_row(
            _side_title(key),
            f"{side['rate']:,.0f}",
            " / ".join(f"{r:,.0f}" for r in side["phase_rates"]),
            fmt_latency(side["latency_ms"]),
            str(side["errors"]),
            " / ".join(fmt_cores(cpu[k]) for k in ("clients", "server", "postgres", "machine_busy")),
            f"{per['server_us'] if per['server_us'] is not None else '?'} / {per['postgres_us'] if per['postgres_us'] is not None else '?'}",
        )
    return table


def markdown(report: dict[str, Any]) -> str:
    cfg, target = report["config"], report["target"]
    lines = [
        f"# charter bench auth — {report['started_at']}",
        "",
        f"`GET {PATH}` with {cfg['clients']} concurrent keep-alive connections, phases A, B, A, B of "
        f"{cfg['seconds']:g} s measured each after {cfg['warmup']:g} s warm-up, both servers on the same "
        f"PostgreSQL database ({report['server']['kind']}), {cfg['plugins']} plugins seeded.",
        "",
        "| side | requests/s | per phase | latency (ms) | errors | cores: clients / server / postgres / machine | CPU µs per request: server / postgres |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, side in report["sides"].items():
        cpu, per = side["cpu_cores"], side["cpu_per_request"]
        lines.append(
            f"| {_side_title(key)} | {side['rate']:,.0f} | {' / '.join(f'{r:,.0f}' for r in side['phase_rates'])} "
            f"| {fmt_latency(side['latency_ms'])} | {side['errors']} "
            f"| {' / '.join(fmt_cores(cpu[k]) for k in ('clients', 'server', 'postgres', 'machine_busy'))} "
            f"| {per['server_us']} / {per['postgres_us']} |"
        )
    value = target["value"]
    lines += [
        "",
        f"Authorized / unauthorized: **{'n/a' if value is None else f'{value:.3f}x'}** (target ≥ {target['target']:g}x: "
        f"{'met' if target['met'] else 'NOT met'}). Server CPU per request, authorized − unauthorized: "
        f"{report['authorization_cost_us']} µs.",
        "",
        f"The guard alone (`authorize`, measured in the bench process, best of 3 runs of {report['guard']['calls']:,} calls): "
        f"{report['guard']['authorized_us']} µs per request with authorization and the viewer's token, "
        f"{report['guard']['disabled_us']} µs with authorization off: {report['guard']['extra_us']} µs more, against "
        f"{report['sides']['unauthorized']['cpu_per_request']['server_us']} µs of server CPU per request, so "
        f"≈ {report['expected_ratio_from_guard']}x expected from the guard alone.",
        "",
        f"Client side: at most {fmt_cores(report['client_cores_max'])} cores in a phase "
        f"({'not the bottleneck' if report['client_bound'] is False else 'may be the bottleneck' if report['client_bound'] else 'unknown'}); "
        f"the machine has {report['machine'].get('cpu_count')} CPUs.",
        "",
        f"Both servers answered the same page: {report['check']['same_body']} ({report['check']['body_bytes']} bytes, "
        f"total {report['check']['total']}); A refused a request without a token with 401.",
    ]
    errors = [f"- {k}: {s['errors']} errors, first: `{s['first_error']}`" for k, s in report["sides"].items() if s["first_error"]]
    if errors:
        lines += ["", "## Errors", "", *errors]
    lines += ["", "## Servers", ""]
    lines += [f"- {s['label']} ({s['role']}): {s.get('banner', '')}" for s in report["servers"]]
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in report["machine"].items()]
    server = report["server"]
    lines += ["", "## PostgreSQL", "", f"- server: {server['kind']}", f"- version: {server.get('version_full') or server.get('version')}"]
    lines += [f"- {k}: {v}" for k, v in server.get("settings", {}).items()]
    lines += ["", "## Run", ""]
    lines += [f"- {k}: {v}" for k, v in cfg.items()]
    return "\n".join(lines) + "\n"




def _banner(server: AuthServer) -> str:
    for line in server.log_tail(200).splitlines():
        if line.startswith("authorization="):
            return line.strip()
    return ""


# -- the run ------------------------------------------------------------------------------------------


def run_auth(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    from infrastructure.embedded.servers import find_free_port
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)

    clients = max(1, int(getattr(args, "clients", None) or 32))
    seconds = max(0.5, float(getattr(args, "seconds", None) or 10.0))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    warmup = warmup_for(seconds)
    rounds = max(1, int(os.environ.get(ROUNDS_ENV) or 2))  # A B A B; more alternations for a noisy machine
    console = Console()
    started_at = datetime.now(timezone.utc)
    database = f"charter_bench_{uuid.uuid4().hex[:12]}"
    secret, jwt_secret = Fernet.generate_key().decode(), uuid.uuid4().hex + uuid.uuid4().hex
    timings: dict[str, float] = {}
    clock = [time.monotonic()]

    def _lap() -> float:
        now = time.monotonic()
        took, clock[0] = round(now - clock[0], 2), now
        return took

    with tempfile.TemporaryDirectory(prefix="charter-bench-auth-") as tmp:
        workdir = Path(tmp)
        with bench_server(workdir, console) as pg:
            asyncio.run(create_database(pg.admin_dsn, database))
            dsn = with_database(pg.admin_dsn, database)
            servers: list[AuthServer] = []
            try:
                info = asyncio.run(server_info(dsn))
                pg_pid = asyncio.run(postmaster_pid(dsn))
                console.print(
                    f"database {database} on PostgreSQL {info['version']} ({pg.kind}); {clients} clients, phases A B A B "
                    f"of {seconds:g}s after {warmup:g}s warm-up each"
                )
                asyncio.run(migrate_database(dsn))
                timings["database"] = _lap()
                # P first: it bootstraps the built-in roles and the administrator, and projects; the
                # plugins are seeded while it starts. Then A and B, the viewer set up through A.
                port = find_free_port()
                setup = start_server(
                    "P", True, server_env(dsn, port, secret, jwt_secret, authorization=True, projectors=True), port, workdir
                )
                servers.append(setup)
                console.print(f"seeding {PLUGINS} plugins while the setup server P starts ...")
                _run_loop(seed_plugins(dsn, secret, workdir / "seed", PLUGINS))
                asyncio.run(wait_healthy(setup))
                timings["seed_and_server_p"] = _lap()
                port = find_free_port()
                a = start_server("A", True, server_env(dsn, port, secret, jwt_secret, authorization=True), port, workdir)
                servers.append(a)
                port = find_free_port()
                b = start_server("B", False, server_env(dsn, port, secret, jwt_secret, authorization=False), port, workdir)
                servers.append(b)
                asyncio.run(wait_healthy(a))
                prepared = asyncio.run(prepare(a, b, PLUGINS))
                setup.stop()  # no projectors anywhere during the load
                timings["servers_and_viewer"] = _lap()
                console.print(
                    f"servers up: A :{a.port} (pid {a.pid}, authorization on), B :{b.port} (pid {b.pid}, authorization off); "
                    f"page of {prepared.body_bytes} bytes, same on both: {prepared.same_body}"
                )
                with bench_progress(22) as progress:
                    phases = _run_loop(run_load(a, b, prepared.token, clients, warmup, seconds, rounds, progress, pg_pid))
                timings["load"] = _lap()
                banners = {s.label: _banner(s) for s in servers}
            finally:
                for server in servers:
                    server.stop()
                asyncio.run(drop_database(pg.admin_dsn, database))
                timings["teardown"] = _lap()

    sides = {
        side: side_summary([p for p in phases if p.side == side]) for side in ("authorized", "unauthorized")
    }
    guard = guard_cost(iterations=5_000 if seconds >= 5 else 1_000)
    timings["guard"] = _lap()
    a_rate, b_rate = sides["authorized"]["rate"], sides["unauthorized"]["rate"]
    value = a_rate / b_rate if b_rate > 0 else None
    client_max = max((p.cpu.get("clients") or 0.0 for p in phases), default=None)
    a_us, b_us = sides["authorized"]["cpu_per_request"]["server_us"], sides["unauthorized"]["cpu_per_request"]["server_us"]
    report = {
        "suite": "auth",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "clients": clients,
            "seconds": seconds,
            "warmup": warmup,
            "rounds": rounds,
            "order": " ".join(["A B"] * rounds),
            "path": PATH,
            "plugins": PLUGINS,
            "database": database,
            "timings_s": timings,
        },
        "target": {"value": value, "target": RATIO_TARGET, "met": value is not None and value >= RATIO_TARGET},
        "authorization_cost_us": round(a_us - b_us, 1) if a_us is not None and b_us is not None else None,
        "guard": guard,
        # What the guard alone predicts: B's server CPU per request plus the guard's extra microseconds.
        "expected_ratio_from_guard": round(b_us / (b_us + guard["extra_us"]), 4) if b_us else None,
        "client_cores_max": client_max,
        "client_bound": None if client_max is None else client_max > 0.8,
        "sides": sides,
        "phases": [{k: v for k, v in asdict(p).items() if k != "latencies"} for p in phases],
        "check": {"same_body": prepared.same_body, "body_bytes": prepared.body_bytes, "total": prepared.total},
        "servers": [
            {
                "label": s.label,
                "role": "setup: bootstrap and projectors, stopped before the load" if s.label == "P" else "measured",
                "authorization": s.authorization,
                "banner": banners.get(s.label, ""),
            }
            for s in servers
        ],
        "machine": machine_info(),
        "server": {"kind": pg.kind, **info},
    }
    json_path, md_path = write_report(folder, "auth", report, markdown)
    console.print(results_table(report))
    verdict = "[green]met[/green]" if report["target"]["met"] else "[red]not met[/red]"
    console.print(
        f"authorized / unauthorized: [bold]{'n/a' if value is None else f'{value:.3f}x'}[/bold] "
        f"(target >= {RATIO_TARGET:g}x: {verdict}); server CPU per request authorized - unauthorized: "
        f"{report['authorization_cost_us']} µs"
    )
    console.print(
        f"the guard alone: {guard['authorized_us']} µs per request with authorization, {guard['disabled_us']} µs "
        f"without: +{guard['extra_us']} µs on {b_us} µs of server CPU per request -> "
        f"{report['expected_ratio_from_guard']}x expected"
    )
    console.print(
        f"client side at most {fmt_cores(client_max)} cores in a phase"
        + (" [red](may be the bottleneck)[/red]" if report["client_bound"] else "")
        + f"; {os.cpu_count()} CPUs on the machine"
    )
    for key, side in sides.items():
        if side["first_error"]:
            console.print(f"  [red]{_side_title(key)}: {side['errors']} errors, first: {side['first_error']}[/red]")
    console.print(f"report: {json_path}  {md_path}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        print("usage: python -m ops.bench.auth serve", file=sys.stderr)
        sys.exit(2)
