"""Aggregates kept in memory between commands, so a long stream (a site running 200 extensions, a
plugin's activation registry) is not read and replayed whole for every command that decides from it.

Why it never serves stale state: the log is append-only (triggers refuse UPDATE and DELETE) and every
event carries a hash chained to the previous one of its stream, so the first `version` events of a
stream are known for good once their last hash is known. A load therefore still reads the stream, but
only from the cached version on (`read_stream_from`): the row at the cached version must carry the
cached hash (else the cache is dropped and the stream read whole: another database, a restored log),
and the rows after it are replayed onto a copy of the cached aggregate. The aggregate handed out is
exactly what a full read in that statement would have built; an append racing the command is refused by
the optimistic-concurrency check of the store, as without the cache.

The cached aggregate is never handed out: each load gets its own copy (`clone`), so a command that
records events and then fails (a lost race, a refusal) leaves the cache as it was. Copies share only
values that cannot change (strings, numbers, frozen msgspec Structs and frozen dataclasses, which the
domain uses for its value objects), and copy containers and everything else.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from application.unit import Loaded
from infrastructure.eventlog.eventstore import EventStore
from infrastructure.eventlog.repository import AggregateRepository, reconstruct

A = TypeVar("A")

MIN_EVENTS = 16  # shorter streams are read and replayed whole: cheap, and not worth the memory
IMMUTABLE = (str, int, float, bool, bytes, type(None), UUID, datetime, date, time, timedelta, Decimal, frozenset)


def _is_value(kind: type) -> bool:
    """A value object that cannot change: a frozen msgspec Struct or frozen dataclass."""
    if issubclass(kind, msgspec.Struct):
        return bool(kind.__struct_config__.frozen)
    params = getattr(kind, "__dataclass_params__", None)
    return params is not None and bool(params.frozen)


def _shared(value: Any) -> Any:
    return value


def _copier(kind: type) -> Callable[[Any], Any]:
    """How values of one type are copied (decided once per type)."""
    if issubclass(kind, IMMUTABLE) and kind not in (dict, list, set, tuple):
        return _shared
    if kind is dict:
        return lambda d: {key: clone(item) for key, item in d.items()}
    if kind is list:
        return lambda items: [clone(item) for item in items]
    if kind is tuple:
        return lambda items: tuple(clone(item) for item in items)
    if kind is set:
        return set  # members are hashable, so immutable
    if _is_value(kind):
        return _shared
    return copy.deepcopy


_COPIERS: dict[type, Callable[[Any], Any]] = {}


def clone(value: Any) -> Any:
    """A copy of `value` that shares nothing mutable with it (see the module's docstring)."""
    kind = type(value)
    copier = _COPIERS.get(kind)
    if copier is None:
        copier = _COPIERS[kind] = _copier(kind)
    return copier(value)


def clone_aggregate(aggregate: A) -> A:
    """A fresh aggregate object with a copy of each attribute (its pending events included)."""
    twin = object.__new__(type(aggregate))
    twin.__dict__.update({name: clone(item) for name, item in aggregate.__dict__.items()})
    return twin


@dataclass(frozen=True)
class Entry:
    version: int
    last_hash: bytes
    aggregate: Any  # never handed out: loads get a clone


class AggregateCache:
    """The most recently used aggregates, at most `size` of them (0: none), by stream id."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, stream_id: str) -> Entry | None:
        entry = self._entries.get(stream_id)
        if entry is not None:
            self._entries.move_to_end(stream_id)
        return entry

    def put(self, stream_id: str, entry: Entry) -> None:
        """Keep `entry` unless a newer one is already there (a slower load of the same stream)."""
        if self.size <= 0:
            return
        current = self._entries.get(stream_id)
        if current is not None and current.version > entry.version:
            return
        self._entries[stream_id] = entry
        self._entries.move_to_end(stream_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, stream_id: str) -> None:
        self._entries.pop(stream_id, None)

    def __len__(self) -> int:
        return len(self._entries)


class CachingRepository(AggregateRepository):
    """`AggregateRepository` whose loads start from the cached aggregate and read only the events after it."""

    def __init__(self, store: EventStore, cache: AggregateCache) -> None:
        super().__init__(store)
        self.cache = cache

    async def load(self, aggregate_cls: type[A], stream_type: str, key: str, aggregate_id: UUID) -> Loaded[A]:
        stream_id = f"{stream_type}:{key}"
        entry = self.cache.get(stream_id)
        if entry is None or type(entry.aggregate) is not aggregate_cls:
            self.cache.misses += 1
            loaded = await super().load(aggregate_cls, stream_type, key, aggregate_id)
            if loaded.aggregate is not None and loaded.version >= MIN_EVENTS:
                self.cache.put(stream_id, Entry(loaded.version, loaded.last_hash, clone_aggregate(loaded.aggregate)))
            return loaded
        events = await self.store.read_stream_from(stream_id, entry.version)
        if not events or events[0].stream_version != entry.version or events[0].hash != entry.last_hash:
            self.cache.drop(stream_id)  # not the stream the cache saw: read it whole
            return await self.load(aggregate_cls, stream_type, key, aggregate_id)
        self.cache.hits += 1
        aggregate = clone_aggregate(entry.aggregate)
        tail = events[1:]
        if tail:
            try:
                aggregate = reconstruct(aggregate_cls, aggregate_id, tail, aggregate)
            except Exception:
                self.cache.drop(stream_id)
                raise
            self.cache.put(stream_id, Entry(tail[-1].stream_version, tail[-1].hash, clone_aggregate(aggregate)))
        last = events[-1]
        return Loaded(aggregate, stream_id, stream_type, last.stream_version, last.hash)
