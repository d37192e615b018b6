"""Errors raised by the application layer (not domain rules)."""

from __future__ import annotations

from typing import Any

from domain.errors import DomainError


class ConcurrencyError(DomainError):
    """The stream moved on since it was read: the expected version is stale."""

    code = "VERSION_CONFLICT"

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"stream {stream_id} is at version {actual}, not {expected}",
            stream_id=stream_id,
            expected_version=expected,
            current_version=actual,
        )


class EventNotStorable(DomainError):
    """The store refused the events' data (a NUL character, a number out of range): bad input, alone."""

    code = "VALIDATION_FAILED"

    def __init__(self, stream_id: str, reason: str) -> None:
        super().__init__(f"the events of {stream_id} cannot be stored: {reason}", stream_id=stream_id)


class PreconditionFailed(ConcurrencyError):
    """The client's If-Match does not name the current version."""

    code = "PRECONDITION_FAILED"


class IdempotencyKeyReused(DomainError):
    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, key: str, **details: Any) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different request", key=key, **details)


class SourceUnavailable(DomainError):
    code = "PLUGIN_SOURCE_INVALID"


class EventTooLarge(DomainError):
    """An event of the command is larger than the store accepts; nothing of the command was written."""

    code = "EVENT_TOO_LARGE"

    def __init__(self, event_type: str, size: int, limit: int, field: str | None) -> None:
        where = f" (mostly {field})" if field else ""
        super().__init__(
            f"a {event_type} event of {size} bytes is larger than the {limit} bytes allowed{where}",
            event_type=event_type,
            size=size,
            limit=limit,
            **({"field": field} if field else {}),
        )
