"""A small in-memory repository whose appends interleave like the real store's (the role-name and
dependents race tests drive it step by step), with the identity helpers those tests share."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from application.context import CommandContext, CommandResult
from application.errors import ConcurrencyError
from application.identity.handlers import HANDLERS, IdentityServices
from application.ports import AppendResult
from application.unit import Loaded
from domain.identity.user import User

SYSTEM = CommandContext()

class MemoryRepository:
    """Streams of event objects; `save_all` appends to all streams or, on any stale version, to none.
    Every load and save yields to the event loop, so concurrent commands interleave as they would."""

    def __init__(self) -> None:
        self.streams: dict[str, list[Any]] = {}

    def new(self, stream_type: str, key: str) -> Loaded[Any]:
        return Loaded(None, f"{stream_type}:{key}", stream_type, 0, b"")

    async def load(self, aggregate_cls: type, stream_type: str, key: str, aggregate_id: UUID) -> Loaded[Any]:
        await asyncio.sleep(0)
        stream_id = f"{stream_type}:{key}"
        aggregate = None
        for event in self.streams.get(stream_id, []):
            aggregate = event.mutate(aggregate)
        return Loaded(aggregate, stream_id, stream_type, len(self.streams.get(stream_id, [])), b"")

    async def save(self, loaded: Loaded[Any], metadata: dict[str, Any], idempotency: Any = None, site_id: str | None = None) -> AppendResult:
        return (await self.save_all([(loaded, site_id)], metadata, idempotency))[0]

    async def save_all(self, items: list[tuple[Loaded[Any], str | None]], metadata: dict[str, Any], idempotency: Any = None) -> list[AppendResult]:
        await asyncio.sleep(0)
        pending = [(loaded, loaded.aggregate.collect_events() if loaded.aggregate else []) for loaded, _ in items]
        for loaded, events in pending:
            current = len(self.streams.get(loaded.stream_id, []))
            if events and current != loaded.version:
                raise ConcurrencyError(loaded.stream_id, loaded.version, current)
        for loaded, events in pending:
            self.streams.setdefault(loaded.stream_id, []).extend(events)
        return [AppendResult(l.stream_id, l.version + len(e), 1 if e else None) for l, e in pending]


class Passwords:
    async def hash(self, password: str) -> str:
        return f"hashed:{password}"

    async def verify(self, password_hash: str, password: str) -> bool:
        return password_hash == f"hashed:{password}"



async def run(services: IdentityServices, command: Any, ctx: CommandContext = SYSTEM) -> CommandResult:
    return await HANDLERS[type(command)](command, ctx, services)


async def user(services: IdentityServices, user_id: str) -> User:
    loaded = await services.repository.load(User, "user", user_id, UUID(user_id))
    return loaded.aggregate
