"""Typed settings, read from CHARTER_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


HOST_VERSION = "1.0.0"


def _decode(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, (str, Path)):
        return Path(value)
    raise NotImplementedError(f"cannot read {type_} from {value!r}")


class Settings(msgspec.Struct, kw_only=True):
    database_url: str | None = None
    nats_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".charter")
    # Ports of the embedded servers `charter serve` starts when no URL is set (pinned: fail if taken);
    # unset: the port of the last run, else 54329 (PostgreSQL) / 4229 (NATS), else any free port.
    embedded_pg_port: int | None = None
    embedded_nats_port: int | None = None
    secret_key: str | None = None
    host_version: str = HOST_VERSION
    log_level: str = "info"
    log_json: bool = True
    log_levels: str = ""  # per logger, e.g. "infrastructure.stream=debug,charter.http=warning"
    writers: int = 2
    max_batch: int = 128
    # A command without If-Match that loses a race for its stream is decided again (reloaded) up to this
    # many times, each after a random wait of up to command_retry_backoff * 2**n seconds; then 409.
    command_retries: int = 5
    command_retry_backoff: float = 0.002
    aggregate_cache_size: int = 256  # aggregates of long streams kept between commands (0: none)
    # An as-of report keeps the site's folded state every this many versions of its stream (table
    # site_snapshots) and later replays only the events after the latest one its point includes (0: none).
    report_snapshot_every: int = 500
    pool_size: int = 20
    database_connect_timeout: float = 5.0  # seconds to open a connection before answering 503
    database_command_timeout: float = 30.0  # seconds one statement may take (a hung server answers 503)
    run_projectors: bool = True
    migrate_on_start: bool = True
    consistency_timeout: float = 5.0
    ready_check_timeout: float = 2.0  # /ready answers within this even when a dependency hangs
    ready_max_projection_lag: int = 10_000  # events a projection may lag before /ready says not ready
    ready_max_relay_lag: int = 10_000  # events not yet in JetStream before /ready says not ready
    ready_relay_stall_seconds: float = 30.0  # events waiting and nothing published this long: relay stuck
    poll_interval: float = 0.5
    # Read-model answers kept per process (infrastructure/eventlog/read_cache.py), per read model: at most
    # this many (0: none kept) and this many MiB; dropped as soon as their read model moves.
    read_cache_entries: int = 4096
    read_cache_mib: int = 64
    # A rebuild commits its build schema and cursor every this many events (`charter projections rebuild`
    # and a projector whose version changed): an interrupted rebuild resumes from its last chunk.
    rebuild_chunk: int = 20_000
    nats_stream: str = "CHARTER_EVENTS"
    nats_subject_prefix: str = "charter.events"
    nats_max_age_days: float = 30.0
    run_relay: bool = True
    # The largest event the store accepts: its payload and metadata as JSON, in bytes (a larger one is
    # refused with 413 EVENT_TOO_LARGE and nothing of its command is written). The embedded nats-server's
    # max_payload is sized from it (infrastructure.embedded.nats.nats_max_payload).
    event_max_bytes: int = 256 * 1024
    # What the relay does with an event JetStream can never take (larger than the server's max_payload,
    # refused for good): False (default) holds at it until an operator runs `charter relay skip
    # <event_id>` (or fixes NATS, after which the relay's retry goes through); True records the skip and
    # goes on at once. Either way the event is listed by `charter relay status`, logged and counted.
    relay_skip_unpublishable: bool = False
    relay_retry_interval: float = 30.0  # seconds between a holding relay's retries of the event it holds
    sse_heartbeat: float = 15.0
    sse_client_backlog: int = 2000  # events queued for one SSE client before it is dropped as too slow
    sse_replay_buffer: int = 10000  # recent events kept in memory for resuming clients
    jwt_secret: str | None = None  # default: derived from secret_key
    jwt_issuer: str = "charter"
    jwt_audience: str = "charter"
    access_token_ttl: int = 900
    refresh_token_days: float = 14.0
    external_issuers: str = ""  # JSON list of {issuer, audience, jwks_url, role_claim, role_map}
    allow_registration: bool = True
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: str | None = None
    rate_limit_window: int = 60
    rate_limit_anonymous: int = 600  # requests per window per IP
    rate_limit_user: int = 6000  # per token subject
    rate_limit_admin: int = 60000
    # Uploaded plugin archives (infrastructure/plugins/archives.py). The HTTP request body limit is
    # archive_max_bytes plus MULTIPART_ALLOWANCE (interfaces/app.py).
    archive_max_bytes: int = 20 * 1024 * 1024  # the zip as uploaded; larger answers 413
    archive_max_entries: int = 1000  # files and folders in one archive
    archive_max_entry_bytes: int = 50 * 1024 * 1024  # one entry, uncompressed
    archive_max_total_bytes: int = 200 * 1024 * 1024  # all entries together, uncompressed
    archive_max_ratio: int = 100  # uncompressed:compressed, per entry and overall (past the first MiB)
    manifest_max_bytes: int = 1024 * 1024  # charter-plugin.json, before it is decoded
    # Plugin config schemas are the plugin author's: checking and validating against them runs in worker
    # processes (infrastructure/plugins/sandbox.py), killed past this many seconds or this much memory.
    schema_validation_timeout: float = 2.0
    schema_workers: int = 2  # worker processes (at most this many validations at once)
    schema_worker_memory_mb: int = 1024  # address-space ceiling of each worker (RLIMIT_AS)
    rate_limit_ops: int = 6000  # /health, /ready, /metrics: a bucket of their own per IP, apart from API traffic
    # Failed sign-ins: this many per account (per IP) are free, then each further failure doubles the wait
    # (login_backoff_base seconds, at most login_backoff_max) before the next attempt; a key's failures are
    # forgotten `login_failure_memory` seconds after its last one, an account's at once on a successful sign-in.
    login_free_failures_account: int = 5
    login_free_failures_ip: int = 30
    login_backoff_base: float = 1.0
    login_backoff_max: float = 900.0
    login_failure_memory: float = 3600.0
    # The password policy (registration, creation by an administrator, changes and resets): at least this
    # many characters, not the account's e-mail address (nor its local part), and, when reject_common is on,
    # not one of the 1,000 most common passwords shipped with Charter (infrastructure/identity/common_passwords.txt).
    password_min_length: int = 8
    password_reject_common: bool = True
    # Failed sign-ins are kept in the security log (table signin_failures, never events) this many days,
    # and at most this many rows (the oldest go first).
    security_log_days: float = 30.0
    security_log_max_rows: int = 100_000
    # Reverse proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs); none by default, so
    # the client is the TCP peer. Behind proxies, the client is the right-most address no trusted proxy holds.
    trusted_proxies: str = ""
    # Browsers on other origins (CORS, through Litestar's CORSConfig): none allowed by default. Origins are
    # comma-separated (`https://console.example`; `*` inside one matches anything there).
    cors_origins: str = ""
    cors_methods: str = "GET,POST,PUT,PATCH,DELETE"
    cors_headers: str = "Authorization,Content-Type,If-Match,Idempotency-Key,Last-Event-ID,X-Request-Id,X-Correlation-Id,X-Causation-Id,Charter-Min-Position"
    cors_credentials: bool = False  # Charter signs in with bearer tokens, not cookies
    cors_max_age: int = 600  # seconds a browser may cache a preflight answer
    # EventSource cannot send headers: browsers open the stream with a ticket (POST /api/v1/events/stream-tickets).
    # True also accepts `?access_token=` on the stream (a token in a URL: proxies, histories and consoles see it).
    sse_query_tokens: bool = False
    stream_ticket_ttl: float = 30.0  # seconds a stream ticket may wait to be used (once)
    # Tasks: every replica runs the scheduler (one run per tick across replicas whatever their number).
    run_scheduler: bool = True
    task_tick: float = 0.05  # longest sleep of the scheduler between two looks at its due ticks
    task_refresh: float = 1.0  # seconds between reads of the task catalog and sweeps for overdue runs
    task_reload: float = 30.0  # seconds between full reads of the task catalog (changes a changes read missed)
    task_misfire_grace: float = 1.0  # a tick later than this counts as missed (the task's catch-up policy)
    task_url_allowlist: str = ""  # hosts (`host` or `host:port`) the http.request action may call
    # Tamper evidence (infrastructure/audit/): a signed checkpoint every this many seconds (0: this process
    # seals nothing), at most this many events per checkpoint, signed with the Ed25519 key in this file
    # (made on first start; unset: `<data_dir>/audit-ed25519.pem`; every sealing replica needs the same).
    audit_seal_interval: float = 10.0
    audit_checkpoint_events: int = 10_000
    audit_key_path: Path | None = None

    def audit_key_file(self) -> Path:
        return self.audit_key_path or self.data_dir / "audit-ed25519.pem"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> "Settings":
        """Build settings from CHARTER_<FIELD> variables; `overrides` win."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for name in cls.__struct_fields__:
            value = env.get(f"CHARTER_{name.upper()}")
            if value is not None and value != "":
                raw[name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(raw, type=cls, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"invalid setting: {exc} (from CHARTER_* environment variables)") from None
