"""Who asks, and in which request: carried from the interface to the event metadata."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from application.ports import Idempotency
from domain.identity.access import Access


@dataclass(frozen=True)
class CommandContext:
    actor: str = "system"
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None
    idempotency_key: str | None = None
    expected_version: int | None = None  # from If-Match
    site_id: str | None = None
    idempotency: Idempotency | None = None
    access: Access | None = None  # what the caller may do; None: the system itself (start-up, CLI)

    def metadata(self, command: str) -> dict[str, Any]:
        data = {
            "actor": self.actor,
            "command": command,
            "request_id": self.request_id,
            "correlation_id": self.correlation_id or self.request_id,
            "causation_id": self.causation_id or self.request_id,
            "traceparent": self.traceparent,
            "idempotency_key": self.idempotency_key,
            "site_id": self.site_id,
        }
        return {k: v for k, v in data.items() if v is not None}

    def with_idempotency(self, idempotency: Idempotency | None) -> "CommandContext":
        return replace(self, idempotency=idempotency)


@dataclass(frozen=True)
class CommandResult:
    stream_id: str
    version: int
    position: int | None
    duplicate: bool = False
