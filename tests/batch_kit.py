"""Events for folding tests, recorded by the domain aggregates themselves (so every payload has its real
shape), numbered as the log numbers them, and an in-memory stand-in of the set-based writes: a batch
loads the groups its projection needs, folds, and the changes are applied to the tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import msgspec

from application.ports import StoredEvent
from application.unit import Loaded
from domain.errors import DomainError
from domain.identity.role import Permission, Role
from domain.identity.user import User
from domain.plugins.plugin import Plugin
from infrastructure.eventlog.eventstore import GENESIS
from infrastructure.eventlog.repository import to_new_events
from projections.batch import BatchProjection, Key, Row, RowCache, Rows, apply_changes, select

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
State = dict[str, dict[Key, Row]]


def manifest(plugin_id: str, version: str, depends_on: str | None = None, tags: Sequence[str] = ("t",)) -> dict[str, Any]:
    return {
        "id": plugin_id,
        "name": plugin_id.title(),
        "version": version,
        "tags": list(tags),
        "dependencies": {depends_on: ">=1.0"} if depends_on else {},
    }


class Log:
    """Aggregates by stream, and the events they recorded, in global order."""

    def __init__(self) -> None:
        self.streams: dict[str, Loaded[Any]] = {}
        self.events: list[StoredEvent] = []

    def record(self, stream_type: str, key: str, aggregate: Any | None = None, actor: str = "tester") -> Any:
        """Store what `aggregate` (new) or the stream's aggregate recorded since; the aggregate."""
        stream_id = f"{stream_type}:{key}"
        loaded = self.streams.get(stream_id)
        if loaded is None:
            loaded = self.streams[stream_id] = Loaded(aggregate, stream_id, stream_type, 0, GENESIS)
        for new in to_new_events(loaded, {"actor": actor}):
            position = len(self.events) + 1
            payload = msgspec.json.decode(msgspec.json.encode(new.payload))  # as read back from jsonb
            self.events.append(StoredEvent(
                position, position, uuid4(), stream_id, stream_type, new.stream_version, new.event_type, 1, payload,
                dict(new.metadata), None, EPOCH + timedelta(seconds=position), b"",
            ))  # fmt: skip
            loaded.version = new.stream_version
        return loaded.aggregate

    def aggregate(self, stream_type: str, key: str) -> Any | None:
        loaded = self.streams.get(f"{stream_type}:{key}")
        return loaded.aggregate if loaded else None

    def act(self, stream_type: str, key: str, action: Any) -> None:
        """Run `action(aggregate)`; a domain refusal records nothing."""
        aggregate = self.aggregate(stream_type, key)
        if aggregate is None:
            return
        try:
            action(aggregate)
        except DomainError:
            aggregate.collect_events()
            return
        self.record(stream_type, key)

    # -- plugins ------------------------------------------------------------------------------------

    def install(self, plugin_id: str, version: str = "1.0.0", depends_on: str | None = None, enabled: bool = False) -> None:
        existing = self.aggregate("plugin", plugin_id)
        if existing is None:
            plugin = Plugin(plugin_id=plugin_id, manifest=manifest(plugin_id, version, depends_on), source={"kind": "t"},
                            config={"level": 1}, enabled=enabled)  # fmt: skip
            self.record("plugin", plugin_id, plugin)
        else:
            self.act("plugin", plugin_id, lambda p: p.reinstall(manifest(plugin_id, version, depends_on), {"kind": "r"}, {}, enabled))

    # -- identity -----------------------------------------------------------------------------------

    def register(self, key: str, active: bool = True) -> None:
        if self.aggregate("user", key) is None:
            user = User(email=f"{key}@example.org", full_name=key.title(), password_hash="x", active=active)
            self.record("user", key, user)

    def create_role(self, name: str, permissions: Sequence[str]) -> None:
        if self.aggregate("role", name) is None:
            self.record("role", name, Role.create(name, f"the {name}", list(permissions)))

    def define(self, name: str) -> None:
        """A permission defined (again, when the stream exists: a second stream of the same name)."""
        key = name if self.aggregate("permission", name) is None else f"{name}#{len(self.events)}"
        self.record("permission", key, Permission.define(name, f"may {name}"))


def fold_in_batches(
    projection: BatchProjection, events: Sequence[StoredEvent], size: int, cache: bool = False, fresh: bool = False
) -> State:
    """The tables after writing `events` in batches of `size` the way the database does: each batch
    loads only the groups its projection needs (or takes them from a rebuild's row cache; `fresh`: one
    that began with the tables empty, so it loads only groups it wrote and let go)."""
    state: State = {}
    row_cache = RowCache(projection.tables, limit=7) if cache else None
    if row_cache is not None:
        row_cache.fresh = fresh
    for start in range(0, len(events), size):
        batch = projection.relevant(events[start : start + size])
        if not batch:
            continue
        needs = projection.needs(batch)
        if row_cache is not None:
            loaded, missing = row_cache.take(needs)
            for name, found in select(state, missing).items():
                loaded.setdefault(name, []).extend(found)
        else:
            loaded = select(state, needs)
        rows = Rows(projection.tables, _copied(loaded), needs)
        apply_changes(projection.tables, state, projection.fold(rows, batch))
        if row_cache is not None:
            row_cache.keep(rows)
    return state


def fold_whole(projection: BatchProjection, events: Iterable[StoredEvent]) -> State:
    """The tables after folding every event into one complete in-memory state."""
    state: State = {}
    rows = Rows.complete(projection.tables, state)
    apply_changes(projection.tables, state, projection.fold(rows, events))
    return state


def _copied(loaded: dict[str, list[Row]]) -> dict[str, list[Row]]:
    return {name: [dict(row) for row in rows] for name, rows in loaded.items()}


def tables(state: State) -> dict[str, list[Row]]:
    """Every table's rows in key order, empty tables left out (comparable across runs)."""
    return {name: [rows[k] for k in sorted(rows)] for name, rows in sorted(state.items()) if rows}
