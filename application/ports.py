"""What the application needs from the outside world, as protocols and plain records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID


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


@dataclass(frozen=True)
class StoredEvent:
    """An event as read back from the log."""

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

    async def read_stream(self, stream_id: str) -> list[StoredEvent]: ...

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
