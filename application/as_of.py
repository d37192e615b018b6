"""As of: the state of a stream at an instant or at a global position, rebuilt from the log.

An `AsOf` names a point of the log: `position:N` (the events at or below global position N) or an
instant (the events recorded at or before it). A stream is replayed up to that point, as a prefix: it
stops at its first event past the point, so a replay never skips an event of its stream. "Now" is not a
point: it is resolved to the last settled position (`History.settled_position`) and answered as
`position:N`, so the same answer can be asked for again, byte for byte, after later events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable
from uuid import UUID

from application.ports import StoredEvent
from domain.errors import DomainError

A = TypeVar("A")

MAX_AS_OF = 64  # characters of an as_of / since value
POSITION = re.compile(r"^position:([0-9]{1,18})$")
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)


class AsOfInvalid(DomainError):
    """An as_of (or since) value that names no point of the log; `field` names the parameter."""

    code = "VALIDATION_FAILED"


@dataclass(frozen=True)
class AsOf:
    """A point of the log: exactly one of `position` and `instant` is set."""

    position: int | None = None
    instant: datetime | None = None

    def includes(self, event: StoredEvent) -> bool:
        if self.position is not None:
            return event.position <= self.position
        return self.instant is not None and event.recorded_at <= self.instant

    def after(self, event: StoredEvent) -> bool:
        """Is `event` past this point (what a `since` window starts after)?"""
        return not self.includes(event)

    def text(self) -> str:
        return f"position:{self.position}" if self.position is not None else timestamp(self.instant)


def timestamp(moment: datetime | None) -> str:
    """One spelling of an instant everywhere in reports: UTC, microseconds, `Z`."""
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_as_of(raw: str, field: str = "as_of") -> AsOf:
    """`position:N` or an ISO 8601 instant with its offset (`Z` or `+hh:mm`); AsOfInvalid naming `field`."""
    text = raw.strip()
    if not text or len(text) > MAX_AS_OF:
        raise AsOfInvalid(f"{field} must be 1 to {MAX_AS_OF} characters: an ISO 8601 instant or position:N", field=field)
    match = POSITION.fullmatch(text)
    if match:
        return AsOf(position=int(match.group(1)))
    try:
        instant = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise AsOfInvalid(f"{field} must be an ISO 8601 instant such as 2025-01-31T12:00:00Z, or position:N",
                          field=field) from None
    if instant.tzinfo is None:
        raise AsOfInvalid(f"{field} must say its offset (Z or +hh:mm): a bare local time names no instant", field=field)
    try:
        instant = instant.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise AsOfInvalid(f"{field} is out of range", field=field) from None
    if instant < EARLIEST:
        raise AsOfInvalid(f"{field} is before 1970-01-01T00:00:00Z", field=field)
    return AsOf(instant=instant)


@dataclass(frozen=True)
class Replayed(Generic[A]):
    """A stream replayed up to a point: the aggregate then (None before its first event) and the events read."""

    aggregate: A | None
    events: list[StoredEvent]


@runtime_checkable  # the HTTP layer receives it as a dependency, which Litestar checks with isinstance
class History(Protocol):
    """The log read as of a point (implemented over the event store by infrastructure/eventlog/as_of.py)."""

    async def replay(self, aggregate_cls: type[A], stream_type: str, key: str, aggregate_id: UUID,
                     as_of: AsOf) -> Replayed[A]: ...

    async def settled_position(self) -> int:
        """The last position with nothing left to commit at or below it."""
        ...


async def resolve(history: History, as_of: AsOf | None, now: datetime, field: str = "as_of") -> AsOf:
    """The point a request names, made fixed: none is "now", the settled position; a position not yet
    settled or an instant in the future is refused (its answer could still change)."""
    if as_of is None:
        return AsOf(position=await history.settled_position())
    if as_of.instant is not None and as_of.instant > now:
        raise AsOfInvalid(f"{field} is in the future (the server's time is {timestamp(now)})", field=field)
    if as_of.position is not None:
        settled = await history.settled_position()
        if as_of.position > settled:
            raise AsOfInvalid(f"{field}: position {as_of.position} is past the last position of the log ({settled})",
                              field=field, last_position=settled)
    return as_of


def actor_of(event: StoredEvent) -> str:
    """Who caused an event (its metadata's actor; `system` when none was recorded)."""
    actor: Any = (event.metadata or {}).get("actor")
    return str(actor) if actor else "system"


def check_window(as_of: AsOf, since: AsOf | None, now: datetime, field: str = "since") -> None:
    """A `since` that starts a window: not in the future, not after `as_of` (when both are of one kind)."""
    if since is None:
        return
    if since.instant is not None and since.instant > now:
        raise AsOfInvalid(f"{field} is in the future (the server's time is {timestamp(now)})", field=field)
    later = (
        (since.position is not None and as_of.position is not None and since.position > as_of.position)
        or (since.instant is not None and as_of.instant is not None and since.instant > as_of.instant)
    )
    if later:
        raise AsOfInvalid(f"{field} ({since.text()}) is after as_of ({as_of.text()})", field=field)


async def fixed_window(history: History, as_of: str | None, since: str | None, now: datetime) -> tuple[AsOf, AsOf | None]:
    """A request's `as_of` and `since` (as given, None when absent) parsed and made fixed; AsOfInvalid
    naming the parameter when either names no usable point."""
    point = await resolve(history, parse_as_of(as_of) if as_of is not None else None, now)
    start = await resolve(history, parse_as_of(since, "since"), now, "since") if since is not None else None
    check_window(point, start, now)
    return point, start
