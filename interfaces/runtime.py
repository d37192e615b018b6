"""The composition root's parts: everything a running Charter process holds, started and stopped together."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import msgspec
import structlog

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.tasks.handlers import TaskServices
from application.sites.proposals import SiteServices
from application.identity.handlers import EnsureAdmin, EnsureBuiltins, IdentityServices
from application.identity.reactions import REACTIONS as IDENTITY_REACTIONS
from application.identity.reactions import AccessServices
from application.identity.signin import SignIn
from application.plugins.handlers import PluginServices
from application.bus import Application, ReactingRepository, Reactions, RetryPolicy
from domain.errors import DomainError
from infrastructure.identity.tokens import Argon2Passwords, ExternalIssuer, RefreshTokens, TokenService
from infrastructure.identity.ratelimit import RateLimiter
from infrastructure.audit.service import AuditService, RangeNotFound, VerificationBusy
from infrastructure.identity.common_passwords import common_passwords
from infrastructure.identity.security_log import SecurityLog
from domain.identity.passwords import PasswordPolicy
from infrastructure.telemetry import metrics, tracing
from infrastructure.eventlog.availability import DATABASE, is_unavailable
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.identity.keys import EMAIL_RESERVATION, server_key
from infrastructure.identity.access_cache import Authority
from infrastructure.identity.stream_tickets import StreamTickets
from infrastructure.eventlog.migrate import migrate
from infrastructure.plugins.archives import ArchiveLimits
from infrastructure.plugins.sources import LocalPluginSources, PostgresArchiveStore
from infrastructure.stream.hub import Delivered, EventHub, Filter  # noqa: F401 (named by the SSE controller)
from infrastructure.stream.relay import RELAY, Relay, StreamSettings
from infrastructure.eventlog.aggregate_cache import AggregateCache, CachingRepository
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.eventlog.as_of import StoreHistory
from infrastructure.sites.report_archive import PostgresReportArchive
from infrastructure.eventlog.projector import (
    PROJECTED_CHANNEL, Notifier, Projection, ProjectionRunner, has_processed, lag, lag_seconds, last_committed,
)
from infrastructure.eventlog.read_cache import Answer, ReadCache
from infrastructure.plugins.sandbox import ProcessSandbox
from infrastructure.plugins.secrets import IDEMPOTENCY_FINGERPRINT, FernetCipher, derive_key, load_or_create_key
from infrastructure.settings import Settings
from infrastructure.identity.signin import LoginThrottle, Policy
from interfaces.http.clients import TrustedProxies
from interfaces.features import start_audit, start_sites, start_tasks
from interfaces.readiness import Readiness
from infrastructure.tasks.scheduler import Scheduler, SchedulerSettings
from projections import PROJECTIONS

# The composition root is where controllers get the concrete types they name (`Authority`, `EventHub`,
# `Delivered`, `Filter`) and the outage classification (`is_unavailable`, `DATABASE`): interfaces/http
# imports no infrastructure module itself (tests/unit/test_layering.py).
CONTROLLER_TYPES = (
    Authority, EventHub, Delivered, Filter, StreamTickets, Answer, DATABASE, is_unavailable, AuditService, RangeNotFound,
    VerificationBusy,
)

log = structlog.get_logger(__name__)


class ProjectionBehind(Exception):
    """A read asked for consistency the projection did not reach in time."""

    def __init__(self, name: str, position: int, timeout: float) -> None:
        super().__init__(f"projection {name} did not reach position {position} within {timeout}s")
        self.name, self.position, self.timeout = name, position, timeout


@dataclass
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    cipher: FernetCipher
    application: Application
    projections: dict[str, Projection]
    archives: PostgresArchiveStore
    sandbox: ProcessSandbox | None = None
    notifier: Notifier | None = None
    read_cache: ReadCache | None = None
    projected: Notifier | None = None  # the projectors' notifications, for the read cache
    runners: list[ProjectionRunner] = field(default_factory=list)
    relay: Relay | None = None
    hub: EventHub | None = None
    repository: ReactingRepository | None = None
    reactions: Reactions = field(default_factory=Reactions)
    authority: Authority | None = None
    stream_tickets: StreamTickets | None = None
    passwords: Argon2Passwords | None = None
    refresh_tokens: RefreshTokens | None = None
    security_log: SecurityLog | None = None
    identity: IdentityServices | None = None
    sites: SiteServices | None = None
    task_services: TaskServices | None = None
    scheduler: Scheduler | None = None
    task_nats: Any = None
    history: StoreHistory | None = None  # the log read as of a point (reports, `as_of=`)
    report_archive: PostgresReportArchive | None = None  # compliance reports kept by task runs (infrastructure/sites/report_archive.py)
    limiter: RateLimiter | None = None
    login_throttle: LoginThrottle | None = None
    sign_in: SignIn | None = None
    audit: AuditService | None = None
    dummy_hash: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    readiness: "Readiness" = None  # type: ignore[assignment]  # set by start_runtime

    def __post_init__(self) -> None:
        self.readiness = Readiness(self)

    async def execute(self, command: Command, ctx: CommandContext) -> CommandResult:
        """Run a command through the application, counting and timing it (and tracing it, when on:
        its events then carry this command span's traceparent)."""
        if tracing.enabled():
            return await self._traced(command, ctx)
        return await self._run(command, ctx)

    async def _run(self, command: Command, ctx: CommandContext) -> CommandResult:
        name = type(command).__name__
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self.application.execute(command, ctx)
            outcome = "duplicate" if result.duplicate else "ok"
            return result
        except DomainError as exc:
            outcome = exc.code
            raise
        finally:
            metrics.command_done(name, outcome, time.perf_counter() - started)

    async def _traced(self, command: Command, ctx: CommandContext) -> CommandResult:
        name = type(command).__name__
        # Exceptions are recorded by type only (tracing.failed): their messages may quote client input.
        with tracing.tracer().start_as_current_span(
            f"command {name}", attributes={"charter.command": name}, record_exception=False, set_status_on_exception=False
        ) as span:
            ctx = replace(ctx, traceparent=tracing.traceparent_of(span))
            try:
                result = await self._run(command, ctx)
            except DomainError as exc:
                span.set_attribute("charter.outcome", exc.code)
                raise
            except Exception as exc:
                span.set_attribute("charter.outcome", "error")
                tracing.failed(span, exc)
                raise
            span.set_attributes({
                "charter.outcome": "duplicate" if result.duplicate else "ok",
                "charter.stream_id": result.stream_id,
                "charter.stream_type": result.stream_id.partition(":")[0],
                "charter.version": result.version,
            })
            return result

    async def wait_for(self, projection: str, position: int | None, timeout: float | None = None) -> None:
        """Wait until `projection` has handled `position` (default: everything committed now)."""
        timeout = self.settings.consistency_timeout if timeout is None else timeout
        if position is None:
            last = await last_committed(self.pool)
            if last is None:
                return
            position = last[1]
        deadline = time.monotonic() + timeout
        delay = 0.002
        while not await has_processed(self.pool, projection, position):
            if time.monotonic() > deadline:
                raise ProjectionBehind(projection, position, timeout)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        if self.read_cache is not None:  # no cached answer older than what was waited for
            await self.read_cache.caught_up(projection)

    async def answer(self, projection: str, key: Any, build: Any) -> Answer:
        """A read model's answer for `key`: kept by the read cache until the read model moves."""
        if self.read_cache is None:
            return await build()
        return await self.read_cache.answer(projection, key, build)

    async def relay_lag(self) -> int:
        """Events committed but not yet acknowledged by JetStream."""
        value = await lag(self.pool, RELAY)
        metrics.RELAY_LAG.set(value)
        metrics.RELAY_LAG_SECONDS.set(await lag_seconds(self.pool, RELAY) if value else 0)
        return value

    async def projection_lag(self) -> dict[str, int]:
        lags = {name: await lag(self.pool, name) for name in self.projections}
        for name, value in lags.items():
            metrics.PROJECTION_LAG.labels(name).set(value)
            metrics.PROJECTION_LAG_SECONDS.labels(name).set(await lag_seconds(self.pool, name) if value else 0)
        return lags


async def start_runtime(settings: Settings) -> Runtime:
    if not settings.database_url:
        raise RuntimeError("CHARTER_DATABASE_URL is not set (charter serve starts an embedded server when it is absent)")
    dsn = settings.database_url
    if settings.migrate_on_start:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    pool = await create_pool(
        dsn,
        min_size=2,
        max_size=settings.pool_size,
        connect_timeout=settings.database_connect_timeout,
        command_timeout=settings.database_command_timeout,
    )
    store = EventStore(
        pool, writers=settings.writers, max_batch=settings.max_batch, max_event_bytes=settings.event_max_bytes
    )
    await store.start()
    secret = load_or_create_key(settings.secret_key, settings.data_dir)
    cipher = FernetCipher(secret)
    projections = {p.name: p for p in PROJECTIONS}
    runtime = Runtime(
        settings=settings,
        pool=pool,
        store=store,
        cipher=cipher,
        application=None,  # type: ignore[arg-type]  # set just below, once the services are made
        projections=projections,
        archives=PostgresArchiveStore(pool),
    )
    cache = AggregateCache(settings.aggregate_cache_size)
    runtime.repository = ReactingRepository(CachingRepository(store, cache), runtime.reactions)
    runtime.history = StoreHistory(pool, settings.report_snapshot_every)
    runtime.report_archive = PostgresReportArchive(pool)
    runtime.sandbox = ProcessSandbox(
        settings.schema_workers, settings.schema_validation_timeout, settings.schema_worker_memory_mb
    )
    runtime.tasks.append(asyncio.create_task(runtime.sandbox.start(), name="sandbox-start"))
    services = PluginServices(
        repository=runtime.repository,
        cipher=cipher,
        archives=runtime.archives,
        host_version=settings.host_version,
        sandbox=runtime.sandbox,
        sources=LocalPluginSources(ArchiveLimits.of(settings)),
    )
    runtime.passwords = Argon2Passwords()
    runtime.dummy_hash = await runtime.passwords.hash("not a password of anyone")
    identity = IdentityServices(
        repository=runtime.repository,
        passwords=runtime.passwords,
        email_key=await server_key(pool, EMAIL_RESERVATION),
        policy=PasswordPolicy(
            settings.password_min_length, common_passwords() if settings.password_reject_common else frozenset()
        ),
        registration_open=settings.allow_registration,
    )
    runtime.identity = identity
    runtime.application = Application(
        store,
        services,
        identity,
        fingerprint_key=derive_key(secret, IDEMPOTENCY_FINGERPRINT),
        retry=RetryPolicy(settings.command_retries, settings.command_retry_backoff),
        on_retry=lambda command: metrics.COMMAND_RETRIES.labels(command).inc(),
        reactions=runtime.reactions,
    )
    await _start_access(runtime, settings)
    await _start_read_cache(runtime, settings)
    await start_sites(runtime)
    start_tasks(runtime)
    if settings.run_projectors:
        runtime.notifier = Notifier(dsn)
        await runtime.notifier.start()
        for projection in projections.values():
            runner = ProjectionRunner(
                dsn,
                projection,
                runtime.notifier.subscribe(),
                poll_interval=settings.poll_interval,
                rebuild_chunk=max(1, settings.rebuild_chunk),
            )
            runtime.runners.append(runner)
            runtime.tasks.append(asyncio.create_task(runner.run(), name=f"projection-{projection.name}"))
    if settings.nats_url:
        stream = StreamSettings(
            name=settings.nats_stream, prefix=settings.nats_subject_prefix, max_age_days=settings.nats_max_age_days
        )
        if settings.run_relay:
            if runtime.notifier is None:
                runtime.notifier = Notifier(dsn)
                await runtime.notifier.start()
            runtime.relay = Relay(
                dsn, settings.nats_url, stream, runtime.notifier.subscribe(), poll_interval=settings.poll_interval,
                skip_unpublishable=settings.relay_skip_unpublishable, retry_interval=settings.relay_retry_interval,
            )
            runtime.tasks.append(asyncio.create_task(runtime.relay.run(), name="relay"))
        runtime.hub = EventHub(
            settings.nats_url, stream, replay_buffer=settings.sse_replay_buffer, backlog=settings.sse_client_backlog
        )
        await runtime.hub.start()
    start_audit(runtime, settings)
    log.info(
        "charter runtime started",
        projections=list(projections),
        projectors=settings.run_projectors,
        relay=runtime.relay is not None,
        nats=settings.nats_url,
    )
    return runtime


async def _start_read_cache(runtime: Runtime, settings: Settings) -> None:
    """The read cache, told by the projectors' notifications (and a poll behind them) when a read model moves."""
    cache = ReadCache(
        runtime.pool, max_entries=settings.read_cache_entries, max_bytes=settings.read_cache_mib * 1024 * 1024,
        resync_every=max(settings.poll_interval, 0.05) * 2,
    )
    runtime.projected = Notifier(settings.database_url, channel=PROJECTED_CHANNEL)
    runtime.projected.on_message(cache.on_notification)
    await runtime.projected.start()
    runtime.read_cache = cache
    runtime.tasks.append(asyncio.create_task(cache.run(), name="read-cache-resync"))


def external_issuers(raw: str) -> list[ExternalIssuer]:
    if not raw.strip():
        return []
    try:
        return msgspec.json.decode(raw, type=list[ExternalIssuer])
    except msgspec.MsgspecError as exc:
        raise SystemExit(f"CHARTER_EXTERNAL_ISSUERS is not a JSON list of issuers: {exc}") from None


async def _start_access(runtime: Runtime, settings: Settings) -> None:
    signing_key = settings.jwt_secret or f"jwt:{load_or_create_key(settings.secret_key, settings.data_dir)}"
    tokens = TokenService(
        signing_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.access_token_ttl,
        external=external_issuers(settings.external_issuers),
    )
    runtime.refresh_tokens = RefreshTokens(runtime.pool, timedelta(days=settings.refresh_token_days))
    runtime.identity.sessions = runtime.refresh_tokens
    runtime.security_log = SecurityLog(
        runtime.pool, timedelta(days=settings.security_log_days), settings.security_log_max_rows
    )
    runtime.limiter = RateLimiter(
        runtime.pool,
        {
            "anonymous": settings.rate_limit_anonymous,
            "user": settings.rate_limit_user,
            "admin": settings.rate_limit_admin,
            "ops": settings.rate_limit_ops,
        },
        window=settings.rate_limit_window,
    )
    await runtime.limiter.start()
    runtime.login_throttle = LoginThrottle(
        runtime.pool,
        Policy(
            free_per_account=settings.login_free_failures_account,
            free_per_address=settings.login_free_failures_ip,
            base=settings.login_backoff_base,
            cap=settings.login_backoff_max,
            memory=settings.login_failure_memory,
        ),
    )
    runtime.authority = Authority(
        tokens, runtime.limiter, proxies=TrustedProxies.parse(settings.trusted_proxies), pool=runtime.pool
    )
    runtime.stream_tickets = StreamTickets(runtime.pool, settings.stream_ticket_ttl)
    runtime.reactions.register(IDENTITY_REACTIONS, AccessServices(runtime.refresh_tokens, runtime.authority))
    runtime.sign_in = SignIn(
        identity=runtime.identity,
        passwords=runtime.passwords,
        tokens=tokens,
        refresh_tokens=runtime.refresh_tokens,
        throttle=runtime.login_throttle,
        sessions=runtime.authority,
        dummy_hash=runtime.dummy_hash,
        execute=runtime.execute,
        failures=runtime.security_log,
    )
    runtime.tasks.append(asyncio.create_task(_refresh_authority(runtime), name="authority-refresh"))


async def _refresh_authority(runtime: Runtime) -> None:
    while True:
        try:
            await runtime.authority.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the access schema may not exist until its projector starts
            if is_unavailable(exc):
                DATABASE.failed(exc, "access cache")
            else:
                log.debug("authority refresh failed", error=repr(exc))
        await asyncio.sleep(runtime.authority.refresh_every)


async def bootstrap(runtime: Runtime, permissions: dict[str, str]) -> None:
    """Built-in roles and permissions, and the first administrator from CHARTER_BOOTSTRAP_ADMIN_*."""
    ctx = CommandContext(actor="system")
    await runtime.execute(EnsureBuiltins(permissions=permissions), ctx)
    settings = runtime.settings
    if settings.bootstrap_admin_email and settings.bootstrap_admin_password:
        # Made when missing, left alone otherwise: an administrator deactivated or demoted on purpose
        # does not come back at the next start (`charter users create-admin` repairs on request).
        await ensure_admin(runtime, settings.bootstrap_admin_email, settings.bootstrap_admin_password, repair=False)
    if settings.run_projectors:
        await runtime.wait_for("identity", None, timeout=30)
        await runtime.authority.refresh()


async def ensure_admin(runtime: Runtime, email: str, password: str | None, repair: bool = True) -> str:
    """Make `email` an active administrator everywhere (see EnsureAdmin); returns the user id."""
    cmd = EnsureAdmin(email=email, password=password, full_name="Administrator", repair=repair)
    result = await runtime.execute(cmd, CommandContext(actor="system"))
    return result.stream_id.split(":", 1)[1]


async def stop_runtime(runtime: Runtime) -> None:
    if runtime.scheduler is not None:
        await runtime.scheduler.stop()
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)
    if runtime.limiter:
        await runtime.limiter.stop()
    if runtime.relay:
        await runtime.relay.close()
    if runtime.hub:
        await runtime.hub.stop()
    if runtime.notifier:
        await runtime.notifier.stop()
    if runtime.projected:
        await runtime.projected.stop()
    if runtime.sandbox:
        await runtime.sandbox.stop()
    if runtime.task_nats is not None:
        await runtime.task_nats.close()
    await runtime.store.stop()
    await runtime.pool.close()
    log.info("charter runtime stopped")
