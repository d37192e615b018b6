"""The repository port and what it loads: an aggregate with its stream's version and last hash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from application.ports import AppendResult, Idempotency

A = TypeVar("A")


@dataclass
class Loaded(Generic[A]):
    aggregate: A | None
    stream_id: str
    stream_type: str
    version: int
    last_hash: bytes


class Repository(Protocol):
    def new(self, stream_type: str, key: str) -> Loaded[Any]: ...

    async def load(self, aggregate_cls: type[A], stream_type: str, key: str, aggregate_id: UUID) -> Loaded[A]: ...

    async def save(
        self,
        loaded: Loaded[Any],
        metadata: dict[str, Any],
        idempotency: Idempotency | None = None,
        site_id: str | None = None,
    ) -> AppendResult: ...

    async def save_all(
        self,
        items: list[tuple[Loaded[Any], str | None]],
        metadata: dict[str, Any],
        idempotency: Idempotency | None = None,
    ) -> list[AppendResult]:
        """Several aggregates (with the site id of each one's events) in one atomic append, or none."""
        ...
