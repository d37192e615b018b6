"""What the application needs from the outside world, as protocols and plain records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

import msgspec


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended to a stream."""

    event_id: UUID
    stream_id: str
    stream_type: str
    stream_version: int
    event_type: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    site_id: str | None = None
    schema_version: int = 1


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as read back from the log (a Struct: made once per event read, by every projector, the
    relay, rebuilds, reports and audits, it costs a twentieth of a frozen dataclass)."""

    position: int
    transaction_id: int
    event_id: UUID
    stream_id: str
    stream_type: str
    stream_version: int
    event_type: str
    schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    site_id: str | None
    recorded_at: datetime
    hash: bytes


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key and what it was used for (so a key reused for another request is refused)."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class AppendResult:
    stream_id: str
    version: int
    position: int | None  # global position of the last event written; None when nothing was written
    duplicate: bool = False  # True when an earlier identical append (event ids / idempotency key) answered


@dataclass
class AppendRequest:
    stream_id: str
    expected_version: int
    events: list[NewEvent]
    prev_hash: bytes
    idempotency: Idempotency | None = None
    hashes: list[bytes] = field(default_factory=list)
    encoded: list[tuple[str, str]] = field(default_factory=list)  # (payload, metadata) JSON, set by the store


class EventStore(Protocol):
    async def append(self, request: AppendRequest) -> AppendResult: ...

    async def read_stream(self, stream_id: str) -> list[StoredEvent]:
        """The stream's events, each at the current schema version of its type (domain/upcasting.py)."""
        ...

    async def idempotent_result(self, idempotency: Idempotency) -> AppendResult | None: ...


class SecretCipher(Protocol):
    def seal(self, value: Any) -> dict[str, str]: ...

    def unseal(self, sealed: dict[str, str]) -> Any: ...


class Sandbox(Protocol):
    """Runs a pure, CPU-bound function (schema checks, configuration validation) off the event loop,
    bounded in time and memory; past a bound it raises `over_limit(reason)`."""

    async def run(self, fn: Callable[..., Any], *args: Any, over_limit: Callable[[str], Exception]) -> Any: ...


class ArchiveStore(Protocol):
    async def put(self, content: bytes) -> str: ...

    async def get(self, sha256: str) -> bytes | None: ...



# -- identity: what sign-in and the after-commit reactions need -------------------------------------


class Passwords(Protocol):
    """Slow, salted password hashes (argon2id): never a clear password in an event."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...


class TokenIssuer(Protocol):
    """Signs access tokens. `issuer` names this server in the tokens it signs (the `iss` claim)."""

    issuer: str

    def issue(
        self, subject: str, grants: list[tuple[str, str | None]], name: str | None = None, session: str | None = None
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds; `session` (the `sid` claim) ties it to a sign-in."""
        ...

    def issue_password_change(self, subject: str) -> tuple[str, int]:
        """A short-lived token good for one thing only: changing the password `subject` must change
        (its `purpose` claim; the guard refuses it on every other route)."""
        ...


@dataclass(frozen=True)
class RefreshGrant:
    """Who a rotated refresh token was issued to, and the sign-in (token family) it belongs to."""

    user_id: str
    family_id: str


class RefreshTokenStore(Protocol):
    """Opaque, rotating refresh tokens: one family per sign-in; a rotated token presented again revokes its
    family (raises `RefreshTokenReused`); an unknown, expired or revoked one raises `AuthenticationFailed`."""

    async def issue(self, user_id: str, family_id: str | None = None, client: Any = None) -> str:
        """A new refresh token of the sign-in `family_id` (new when None); `client` (domain.identity.user.Client)
        is where it was asked from, shown in the list of sessions."""
        ...

    async def rotate(self, token: str) -> tuple[RefreshGrant, str]: ...

    async def revoke(self, token: str) -> str | None:
        """Revoke the sign-in `token` belongs to; its family id (None for an unknown token)."""
        ...

    async def revoke_family(self, family_id: str) -> None: ...

    async def revoke_user(self, user_id: str, keep: str | None = None) -> list[str]:
        """Revoke every sign-in of the user but `keep`; the ids of those it ended."""
        ...


@dataclass(frozen=True)
class Session:
    """One live sign-in (a refresh-token family) as its owner or an administrator sees it."""

    session_id: str
    user_id: str
    started_at: datetime
    last_used_at: datetime
    expires_at: datetime
    client_address: str
    user_agent: str


class SessionStore(Protocol):
    """The live sign-ins, read from the refresh tokens (they are not events: a refresh is too frequent)."""

    async def owner(self, session_id: str) -> str | None:
        """The user a live sign-in belongs to (None: unknown, ended or expired)."""
        ...

    async def sessions(self, user_id: str) -> list[Session]: ...


class SignInFailures(Protocol):
    """Failed sign-ins: counted, and kept in a bounded security log (never as events: an anonymous caller
    must not be able to grow the event log)."""

    async def failed(self, account: str, user_id: str | None, client: Any, reason: str) -> None: ...


@dataclass(frozen=True)
class Attempt:
    """A sign-in attempt charged in advance (`retry_after` 0), or a refusal to wait `retry_after` seconds."""

    keys: tuple[str, ...]
    retry_after: int = 0


class LoginThrottle(Protocol):
    """Backoff on failed sign-ins per account and per client address, shared by every replica."""

    async def attempt(self, account: str, address: str) -> Attempt: ...

    async def succeeded(self, attempt: Attempt) -> None: ...


class AccessCache(Protocol):
    """This process's copy of who may do what, read by every request: reactions keep it current at once
    after a commit (other replicas catch up at their next refresh)."""

    def granted(self, user_id: str, role: str, site_id: str | None) -> None: ...

    def revoked(self, user_id: str, role: str, site_id: str | None) -> None: ...

    def activated(self, user_id: str) -> None: ...

    def deactivated(self, user_id: str) -> None: ...

    def role_changed(self, role: str, permissions: list[str] | None) -> None:
        """A role's permissions now (None: the role was deleted)."""
        ...

    def end_sessions(self, *session_ids: str | None) -> None:
        """Sign-ins just revoked: their access tokens stop working at once."""
        ...
