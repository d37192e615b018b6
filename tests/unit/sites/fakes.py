"""In-memory stand-ins for the sites handlers' ports (no I/O): a repository that keeps the site id each
event was saved with, a reversible cipher, an inline sandbox, and re-authentication by a password table."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

from application.errors import ConcurrencyError
from application.ports import AppendResult
from application.unit import Loaded
from domain.plugins.configuration import SEALED
from domain.sites.errors import ReauthenticationFailed


class MemoryRepository:
    """Streams of event objects; `save_all` appends to all streams or, on any stale version, to none."""

    def __init__(self) -> None:
        self.streams: dict[str, list[Any]] = {}
        self.sites: dict[str, list[str | None]] = {}  # stream id -> the site id of each event

    def new(self, stream_type: str, key: str) -> Loaded[Any]:
        return Loaded(None, f"{stream_type}:{key}", stream_type, 0, b"")

    async def load(self, aggregate_cls: type, stream_type: str, key: str, aggregate_id: UUID) -> Loaded[Any]:
        await asyncio.sleep(0)
        stream_id = f"{stream_type}:{key}"
        aggregate = None
        for event in self.streams.get(stream_id, []):
            aggregate = event.mutate(aggregate)
        return Loaded(aggregate, stream_id, stream_type, len(self.streams.get(stream_id, [])), b"")

    async def save(self, loaded: Loaded[Any], metadata: dict[str, Any], idempotency: Any = None,
                   site_id: str | None = None) -> AppendResult:
        return (await self.save_all([(loaded, site_id)], metadata, idempotency))[0]

    async def save_all(self, items: list[tuple[Loaded[Any], str | None]], metadata: dict[str, Any],
                       idempotency: Any = None) -> list[AppendResult]:
        await asyncio.sleep(0)
        pending = [(loaded, site, loaded.aggregate.collect_events() if loaded.aggregate else []) for loaded, site in items]
        for loaded, _, events in pending:
            current = len(self.streams.get(loaded.stream_id, []))
            if events and current != loaded.version:
                raise ConcurrencyError(loaded.stream_id, loaded.version, current)
        for loaded, site, events in pending:
            self.streams.setdefault(loaded.stream_id, []).extend(events)
            self.sites.setdefault(loaded.stream_id, []).extend([site] * len(events))
        return [AppendResult(l.stream_id, l.version + len(e), 1 if e else None) for l, _, e in pending]

    def event_types(self, stream_id: str) -> list[str]:
        return [type(e).__name__ for e in self.streams.get(stream_id, [])]

    def payloads(self, stream_id: str) -> list[dict[str, Any]]:
        return [dict(vars(e)) for e in self.streams.get(stream_id, [])]


class ReversibleCipher:
    def seal(self, value: Any) -> dict[str, str]:
        return {SEALED: "sealed:" + json.dumps(value)[::-1]}

    def unseal(self, sealed: dict[str, str]) -> Any:
        return json.loads(sealed[SEALED].removeprefix("sealed:")[::-1])


class InlineSandbox:
    async def run(self, fn, *args, over_limit):
        return fn(*args)


class PasswordTable:
    """Re-authentication by a table of passwords and of fresh tokens (user id -> token)."""

    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}
        self.fresh_tokens: dict[str, str] = {}
        self.asked: list[str] = []

    async def confirm(self, user_id: str, password: str | None, access_token: str | None) -> None:
        self.asked.append(user_id)
        if password is not None and self.passwords.get(user_id) == password:
            return
        if access_token is not None and self.fresh_tokens.get(user_id) == access_token:
            return
        raise ReauthenticationFailed("re-authentication failed")
