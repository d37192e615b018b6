"""What each setting means, in one place: `charter serve --help`, `charter settings` and the README's
settings table are all generated from this and `Settings`' defaults (a test keeps the README in step)."""

from __future__ import annotations

from pathlib import Path

from infrastructure.settings import Settings

DESCRIPTIONS: dict[str, str] = {
    "cors_origins": "comma-separated origins whose pages may call the API (CORS), e.g. `https://console.example` (`*` inside one matches anything there); empty: none",
    "cors_methods": "comma-separated methods allowed to those origins",
    "cors_headers": "comma-separated request headers those origins may send",
    "cors_credentials": "answer `Access-Control-Allow-Credentials: true` (cookies; Charter itself signs in with bearer tokens)",
    "cors_max_age": "seconds a browser may cache a preflight answer",
    "sse_query_tokens": "also accept `?access_token=` on `/api/v1/events/stream` (off: browsers use stream tickets; a token in a URL leaks to proxies and consoles)",
    "stream_ticket_ttl": "seconds a stream ticket (`POST /api/v1/events/stream-tickets`) may wait before its one use",
    "run_scheduler": "run the task scheduler in this process (every replica may: one run per tick across them)",
    "task_tick": "seconds the task scheduler sleeps at most between two looks at its due ticks",
    "task_refresh": "seconds between the scheduler's reads of the task catalog (a pause reaches it within this) and its sweeps for overdue runs",
    "task_reload": "seconds between the scheduler's full reads of the task catalog: a task change that committed out of position order, missed by the reads of changes, is picked up within this",
    "task_misfire_grace": "seconds a tick may be late and still run as scheduled; later ticks follow the task's catch-up policy",
    "task_url_allowlist": "comma-separated hosts (`host` or `host:port`) the `http.request` task action may call; empty: none",
    "database_url": "PostgreSQL DSN; unset: `charter serve` starts an embedded PostgreSQL under the data dir",
    "nats_url": "NATS server with JetStream; unset: `charter serve` starts an embedded nats-server",
    "host": "address the API listens on",
    "port": "port the API listens on",
    "data_dir": "embedded servers' data, the generated secret key, the first admin's credentials",
    "secret_key": "Fernet key sealing secret configuration values (every replica needs the same); unset: generated into `<data_dir>/secret.key`",
    "host_version": "the host version manifests' `host_versions` are checked against",
    "log_level": "structured log level (debug, info, warning, error)",
    "log_json": "JSON log lines (false: console rendering)",
    "log_levels": "a level per logger, overriding the log level for it and the loggers under it: `name=level,...` (e.g. `infrastructure.stream=debug,charter.http=warning`; stdlib loggers such as `asyncpg` too)",
    "writers": "group-commit writer tasks",
    "max_batch": "most commands one group-commit transaction carries",
    "pool_size": "PostgreSQL connections per process",
    "database_connect_timeout": "seconds to open a database connection before the request answers 503",
    "database_command_timeout": "seconds one SQL statement may take before the request answers 503",
    "run_projectors": "run projectors in this process (one leader per projection across processes)",
    "migrate_on_start": "apply pending migrations when the process starts",
    "consistency_timeout": "seconds a `?consistent=true` read waits before `503 PROJECTION_BEHIND`",
    "ready_check_timeout": "seconds `/ready` waits for the database before reporting it failing",
    "ready_max_projection_lag": "events a projection may lag before `/ready` answers 503",
    "ready_max_relay_lag": "events not yet in JetStream before `/ready` answers 503",
    "ready_relay_stall_seconds": "seconds with events waiting and nothing published before `/ready` calls the relay stuck",
    "poll_interval": "seconds between polls of projectors and relay when no NOTIFY arrives",
    "read_cache_entries": "read-model answers (encoded pages and details) kept per read model in each process, dropped when it moves; 0: none",
    "read_cache_mib": "MiB of read-model answers kept per read model in each process",
    "rebuild_chunk": "events a projection rebuild commits at a time (an interrupted rebuild resumes from its last chunk)",
    "nats_stream": "JetStream stream events are published to",
    "nats_subject_prefix": "subject prefix (`<prefix>.<site|global>.<stream_type>.<EventName>`)",
    "nats_max_age_days": "days JetStream keeps events (the log in PostgreSQL keeps them forever)",
    "run_relay": "take part in relaying to JetStream (one leader across processes)",
    "sse_heartbeat": "seconds between `: heartbeat` comments on idle SSE streams",
    "sse_client_backlog": "events queued for one SSE client before it is dropped as too slow",
    "sse_replay_buffer": "recent events kept in memory for resuming SSE clients",
    "jwt_secret": "HS256 signing key of access tokens; unset: derived from the secret key",
    "jwt_issuer": "`iss` of issued tokens",
    "jwt_audience": "`aud` of issued tokens",
    "access_token_ttl": "seconds an access token lives",
    "refresh_token_days": "days a refresh token (a session) lives",
    "external_issuers": "JSON list of trusted identity providers `{issuer, audience, jwks_url, role_claim, role_map}`",
    "allow_registration": "whether `POST /api/v1/auth/register` is open",
    "bootstrap_admin_email": "e-mail of an administrator ensured at start",
    "bootstrap_admin_password": "that administrator's password",
    "rate_limit_window": "seconds of one rate-limit window",
    "rate_limit_anonymous": "requests per window per IP without a token",
    "rate_limit_user": "requests per window per signed-in user",
    "rate_limit_admin": "requests per window per administrator",
    "archive_max_bytes": "bytes of an uploaded plugin archive; larger answers 413 (the request body limit is this plus 1 MiB)",
    "archive_max_entries": "files and folders in one archive",
    "archive_max_entry_bytes": "bytes of one archive entry, uncompressed",
    "archive_max_total_bytes": "bytes of all entries together, uncompressed",
    "archive_max_ratio": "uncompressed:compressed ratio, per entry and overall (checked past the first MiB)",
    "audit_seal_interval": "seconds between signed checkpoints of the log (0: this process seals nothing); see Tamper evidence",
    "audit_checkpoint_events": "most events one checkpoint seals (a longer backlog is sealed in several)",
    "audit_key_path": "the sealer's Ed25519 private key (PEM, made on first start, mode 0600; every sealing replica needs the same file); unset: `<data_dir>/audit-ed25519.pem`",
    "manifest_max_bytes": "bytes of `charter-plugin.json`, checked before it is decoded",
    "command_retries": "times a command without If-Match is decided again after losing a race for its stream (then 409)",
    "command_retry_backoff": "seconds; retry n first waits a random time up to this × 2^n",
    "aggregate_cache_size": "aggregates of long streams (16 events or more: a busy site, a plugin's activation registry) a process keeps between commands, so a command reads only the events after the cached version (a site running 200 extensions takes ~300 KB; 0: read every stream whole)",
    "report_snapshot_every": "an as-of compliance report keeps the site's folded state (the Site and who activated and last configured each extension) every this many versions of the site's stream, in `site_snapshots`, and replays only the events after the latest snapshot its point includes (0: no snapshots, every report replays the stream whole)",
    "embedded_pg_port": "pin the embedded PostgreSQL's port (start fails if taken); unset: last run's, else 54329 when free, else any",
    "embedded_nats_port": "pin the embedded nats-server's port (start fails if taken); unset: last run's, else 4229 when free, else any",
    "schema_validation_timeout": "seconds a plugin config schema check or validation may run in its worker before it is killed (400)",
    "schema_workers": "worker processes validating against plugin schemas (at most this many at once)",
    "schema_worker_memory_mb": "memory ceiling of each schema worker (RLIMIT_AS)",
    "event_max_bytes": "largest event (payload + metadata as JSON); a command writing a larger one answers 413 and writes nothing",
    "relay_skip_unpublishable": "skip (and record) an event JetStream will never take instead of holding the relay at it",
    "relay_retry_interval": "seconds between a holding relay's retries of the event it holds",
    "rate_limit_ops": "requests per window per address to `/health`, `/ready`, `/metrics` (their own bucket)",
    "login_free_failures_account": "failed sign-ins per account before the backoff starts",
    "login_free_failures_ip": "failed sign-ins per client address before the backoff starts",
    "login_backoff_base": "seconds of the first sign-in wait; each further failure doubles it",
    "login_backoff_max": "longest sign-in wait, in seconds",
    "login_failure_memory": "seconds after its last failure before an account or address starts afresh",
    "password_min_length": "shortest password accepted (registration, creation, change, reset); shorter: 400 with `details.rule` `min_length`",
    "password_reject_common": "refuse the 1,000 most common passwords shipped with Charter (`details.rule` `not_common`)",
    "security_log_days": "days a failed sign-in is kept in the security log (table `signin_failures`; never events)",
    "security_log_max_rows": "most rows the security log keeps (the oldest go first)",
    "trusted_proxies": "comma-separated IPs/CIDRs of reverse proxies whose `X-Forwarded-For` is believed (none by default)",
}


def env_name(field: str) -> str:
    return f"CHARTER_{field.upper()}"


def default_text(field: str) -> str:
    value = getattr(Settings(), field)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    return str(value) if value != "" else '""'


def undocumented() -> list[str]:
    return [name for name in Settings.__struct_fields__ if name not in DESCRIPTIONS]


def settings_markdown() -> str:
    """The README's settings table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name in Settings.__struct_fields__:
        rows.append(f"| `{env_name(name)}` | `{default_text(name)}` | {DESCRIPTIONS.get(name, '')} |")
    return "\n".join(rows) + "\n"


def settings_help() -> str:
    """The settings as `--help` lists them."""
    lines = ["settings (environment variables; default in brackets):"]
    for name in Settings.__struct_fields__:
        lines.append(f"  {env_name(name)} [{default_text(name)}]\n      {DESCRIPTIONS.get(name, '')}")
    return "\n".join(lines)
