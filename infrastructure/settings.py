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
    secret_key: str | None = None
    host_version: str = HOST_VERSION
    log_level: str = "info"
    log_json: bool = True
    writers: int = 2
    max_batch: int = 128
    pool_size: int = 20
    run_projectors: bool = True
    migrate_on_start: bool = True
    consistency_timeout: float = 5.0
    poll_interval: float = 0.5
    nats_stream: str = "CHARTER_EVENTS"
    nats_subject_prefix: str = "charter.events"
    nats_max_age_days: float = 30.0
    run_relay: bool = True
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
    rate_limit_ops: int = 6000  # /health, /ready, /metrics: a bucket of their own per IP, apart from API traffic
    # Failed sign-ins: this many per account (per IP) are free, then each further failure doubles the wait
    # (login_backoff_base seconds, at most login_backoff_max) before the next attempt; a key's failures are
    # forgotten `login_failure_memory` seconds after its last one, an account's at once on a successful sign-in.
    login_free_failures_account: int = 5
    login_free_failures_ip: int = 30
    login_backoff_base: float = 1.0
    login_backoff_max: float = 900.0
    login_failure_memory: float = 3600.0
    # Reverse proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs); none by default, so
    # the client is the TCP peer. Behind proxies, the client is the right-most address no trusted proxy holds.
    trusted_proxies: str = ""

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
