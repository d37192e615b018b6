"""In-memory fakes of the ports the command handlers use, for unit tests with no I/O.

`MemoryRepository` behaves as `infrastructure/eventlog/repository.AggregateRepository` over the real
store does, as far as a handler can tell: streams `<stream_type>:<key>`, events numbered on from the
version the aggregate was loaded at, optimistic concurrency (a stream that moved on since it was read
refuses the append with `ConcurrencyError`, and `save_all` writes all its streams or none), and payloads
that go through JSON, so a payload the real store could not hold fails here too. Reservation streams
(e-mail addresses, the admin registry) are streams like any other. Every load and save yields to the
event loop, so commands run with `asyncio.gather` interleave as they would against PostgreSQL.

The read-side ports (`RoleDirectory`, `PluginCatalog`) answer from the same streams, as the read
models would once caught up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate, CanInitAggregate
from eventsourcing.utils import get_topic

from application.errors import ConcurrencyError
from application.ports import AppendResult, Idempotency
from application.unit import Loaded
from domain.plugins.configuration import SEALED
from domain.plugins.manifest import Manifest
from domain.plugins.plugin import STREAM_TYPE as PLUGIN_STREAM
from domain.plugins.plugin import Plugin, plugin_uuid
from domain.plugins.policies import dependents_of
from domain.identity.role import STREAM_TYPE as ROLE_STREAM
from domain.identity.role import Role, role_uuid

ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


@dataclass(frozen=True)
class Recorded:
    """One event as the fake store holds it: what a real row holds, minus the global bookkeeping."""

    stream_id: str
    version: int
    name: str  # the event class name, e.g. "Installed"
    payload: bytes  # JSON, as the store would keep it
    timestamp: datetime
    metadata: dict[str, Any]
    site_id: str | None
    position: int

    @property
    def data(self) -> dict[str, Any]:
        return msgspec.json.decode(self.payload)


def payload_of(event: Any) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in ENVELOPE}


class MemoryRepository:
    """Streams of recorded events; see the module docstring."""

    def __init__(self) -> None:
        self.streams: dict[str, list[Recorded]] = {}
        self.position = 0
        self.idempotency: list[Idempotency] = []
        self._seen = 0  # events `new_events` has already handed out
        self.refused = 0  # appends refused for a stale version (the real store loses positions on each)

    # -- the Repository port (application/unit.py) ----------------------------------------------

    def new(self, stream_type: str, key: str) -> Loaded[Any]:
        return Loaded(None, f"{stream_type}:{key}", stream_type, 0, b"")

    async def load(self, aggregate_cls: type, stream_type: str, key: str, aggregate_id: UUID) -> Loaded[Any]:
        await asyncio.sleep(0)
        stream_id = f"{stream_type}:{key}"
        events = self.streams.get(stream_id, [])
        return Loaded(self._replay(aggregate_cls, aggregate_id, events), stream_id, stream_type, len(events), b"")

    async def save(
        self, loaded: Loaded[Any], metadata: dict[str, Any], idempotency: Idempotency | None = None, site_id: str | None = None
    ) -> AppendResult:
        return (await self.save_all([(loaded, site_id)], metadata, idempotency))[0]

    async def save_all(
        self, items: list[tuple[Loaded[Any], str | None]], metadata: dict[str, Any], idempotency: Idempotency | None = None
    ) -> list[AppendResult]:
        await asyncio.sleep(0)
        pending = [(loaded, site_id, loaded.aggregate.collect_events() if loaded.aggregate else []) for loaded, site_id in items]
        for loaded, _, events in pending:
            current = len(self.streams.get(loaded.stream_id, []))
            if events and current != loaded.version:
                self.refused += 1
                raise ConcurrencyError(loaded.stream_id, loaded.version, current)
            numbers = [e.originator_version for e in events]
            if numbers != list(range(loaded.version + 1, loaded.version + 1 + len(events))):
                raise ValueError(f"events of {loaded.stream_id} must be numbered from {loaded.version + 1}: {numbers}")
        encoded = [[msgspec.json.encode(payload_of(e)) for e in events] for _, _, events in pending]
        if idempotency is not None and any(events for _, _, events in pending):
            self.idempotency.append(idempotency)
        results = []
        for (loaded, site_id, events), payloads in zip(pending, encoded):
            for event, payload in zip(events, payloads):
                self.position += 1
                self.streams.setdefault(loaded.stream_id, []).append(
                    Recorded(loaded.stream_id, event.originator_version, type(event).__name__, payload, event.timestamp,
                             dict(metadata), site_id, self.position)
                )
            # as the store answers: the stream's new version, the position of its last event (None: nothing written)
            results.append(AppendResult(loaded.stream_id, loaded.version + len(events), self.position if events else None))
        return results

    # -- for the tests ----------------------------------------------------------------------------

    async def given(self, stream_type: str, key: str, aggregate: Aggregate) -> None:
        """Past events: `aggregate`'s pending events appended to the stream `<stream_type>:<key>`."""
        loaded = self.new(stream_type, key)
        loaded.version, loaded.aggregate = self.version(loaded.stream_id), aggregate
        await self.save_all([(loaded, None)], {"actor": "given"})
        self._seen = self.position

    def given_recorded(self, stream_id: str, name: str, payload: dict[str, Any], site_id: str | None = None) -> None:
        """A past event as an earlier version of Charter recorded it: the payload as it is in the store,
        e.g. without a field added to the event since."""
        self.position += 1
        version = self.version(stream_id) + 1
        recorded = Recorded(stream_id, version, name, msgspec.json.encode(payload), datetime.now(timezone.utc),
                            {"actor": "given"}, site_id, self.position)
        self.streams.setdefault(stream_id, []).append(recorded)
        self._seen = self.position

    def new_events(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(stream id, event name, payload) of each event appended since the last call, in order."""
        events = sorted((r for s in self.streams.values() for r in s), key=lambda r: r.position)
        fresh = [(r.stream_id, r.name, r.data) for r in events if r.position > self._seen]
        self._seen = self.position
        return fresh

    def recorded(self, stream_id: str) -> list[Recorded]:
        return list(self.streams.get(stream_id, []))

    def version(self, stream_id: str) -> int:
        return len(self.streams.get(stream_id, []))

    def aggregate(self, aggregate_cls: type, stream_type: str, key: str, aggregate_id: UUID) -> Any:
        return self._replay(aggregate_cls, aggregate_id, self.streams.get(f"{stream_type}:{key}", []))

    def aggregates(self, stream_type: str, aggregate_cls: type, uuid_of: Callable[[str], UUID]) -> list[Any]:
        """Every aggregate of one stream type, as its stream leaves it."""
        prefix = f"{stream_type}:"
        return [
            self._replay(aggregate_cls, uuid_of(sid[len(prefix):]), events)
            for sid, events in sorted(self.streams.items())
            if sid.startswith(prefix)
        ]

    @staticmethod
    def _replay(aggregate_cls: type, aggregate_id: UUID, events: list[Recorded]) -> Any:
        aggregate = None
        for r in events:
            event_cls = getattr(aggregate_cls, r.name)
            kwargs = dict(r.data, originator_id=aggregate_id, originator_version=r.version, timestamp=r.timestamp)
            if issubclass(event_cls, CanInitAggregate):
                kwargs["originator_topic"] = get_topic(aggregate_cls)
            aggregate = event_cls(**kwargs).mutate(aggregate)
        return aggregate


# -- identity ------------------------------------------------------------------------------------


class FakePasswords:
    """`Passwords`: a visible, checkable stand-in for argon2 (hashing is not what these tests test)."""

    async def hash(self, password: str) -> str:
        return f"hashed:{password}"

    async def verify(self, password_hash: str, password: str) -> bool:
        return password_hash == f"hashed:{password}"


class FakeRoleDirectory:
    """`RoleDirectory`: the key of the live role named (or keyed) so, from the role streams."""

    def __init__(self, repository: MemoryRepository) -> None:
        self.repository = repository

    async def key_of(self, name_or_key: str) -> str | None:
        live = [r for r in self.repository.aggregates(ROLE_STREAM, Role, role_uuid) if not r.deleted]
        by_key = [r.key for r in live if r.key == name_or_key]
        by_name = [r.key for r in live if r.name == name_or_key]
        return (by_key or by_name or [None])[0]


# -- plugins -------------------------------------------------------------------------------------


class FakeCipher:
    """`SecretCipher`: seals into the real sealed shape (`{SEALED: ...}`), reversibly and visibly."""

    PREFIX = "fake-sealed:"

    def seal(self, value: Any) -> dict[str, str]:
        return {SEALED: self.PREFIX + msgspec.json.encode(value).decode()}

    def unseal(self, sealed: dict[str, str]) -> Any:
        return msgspec.json.decode(sealed[SEALED].removeprefix(self.PREFIX))


class FakeArchives:
    """`ArchiveStore` in a dict, keyed by the SHA-256 of the content as the real one is."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}

    async def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        self.stored[digest] = content
        return digest

    async def get(self, sha256: str) -> bytes | None:
        return self.stored.get(sha256)


class FakeSandbox:
    """`Sandbox` that runs the function in the test's own thread; `over_limit_with` set, every run is
    refused as the real sandbox refuses one past its time or memory bound."""

    def __init__(self) -> None:
        self.over_limit_with: str | None = None
        self.runs: list[str] = []

    async def run(self, fn: Callable[..., Any], *args: Any, over_limit: Callable[[str], Exception]) -> Any:
        self.runs.append(fn.__name__)
        if self.over_limit_with is not None:
            raise over_limit(self.over_limit_with)
        return fn(*args)


class FakePluginCatalog:
    """`PluginCatalog`: installed plugins whose current manifest depends on the one asked about."""

    def __init__(self, repository: MemoryRepository) -> None:
        self.repository = repository

    async def dependents_of(self, plugin_id: str) -> list[str]:
        plugins = self.repository.aggregates(PLUGIN_STREAM, Plugin, plugin_uuid)
        manifests: list[Manifest] = [p.manifest for p in plugins if p.installed]
        return dependents_of(plugin_id, manifests)
