"""Maps `eventsourcing` aggregates to streams of the event store and back."""

from __future__ import annotations

import dataclasses
import functools
from datetime import timezone
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, CanInitAggregate
from eventsourcing.utils import get_topic

from application.ports import AppendRequest, AppendResult, Idempotency, NewEvent, StoredEvent
from application.unit import Loaded
from domain.event_schemas import UPCASTERS
from infrastructure.eventlog.eventstore import GENESIS, EventStore
from infrastructure.eventlog.upcasting import current

A = TypeVar("A", bound=Aggregate)

_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


@functools.cache
def payload_fields(event_cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(event_cls) if f.name not in _ENVELOPE)


@functools.cache
def event_type_of(aggregate_cls: type[Aggregate], event_cls: type) -> str:
    return f"{aggregate_cls.__name__}.{event_cls.__name__}"


def to_new_events(
    loaded: Loaded[A], metadata: dict[str, Any], site_id: str | None = None
) -> list[NewEvent]:
    """The aggregate's pending events as rows for its stream. An aggregate with `event_id_for(version,
    event_name)` names its own event ids (a task run: equal decisions in two replicas make equal events,
    so the second append is answered as a duplicate); the others get random ones."""
    out = []
    ids = getattr(loaded.aggregate, "event_id_for", None)
    for event in loaded.aggregate.collect_events():
        payload = {name: getattr(event, name) for name in payload_fields(type(event))}
        event_type = event_type_of(type(loaded.aggregate), type(event))
        out.append(
            NewEvent(
                event_id=ids(event.originator_version, type(event).__name__) if ids else uuid4(),
                stream_id=loaded.stream_id,
                stream_type=loaded.stream_type,
                stream_version=event.originator_version,
                event_type=event_type,
                payload=payload,
                metadata=metadata,
                recorded_at=event.timestamp,
                site_id=site_id,
                schema_version=UPCASTERS.current(event_type),
            )
        )
    return out


def reconstruct(aggregate_cls: type[A], aggregate_id: UUID, events: list[StoredEvent], aggregate: A | None = None) -> A | None:
    """Replay stored events into an aggregate (None for an empty stream), or onto `aggregate` (the state
    before the first of `events`); each event is brought to the current schema version of its type first (a
    no-op for those `EventStore.read_stream` gives)."""
    for stored in map(current, events):
        event_cls = getattr(aggregate_cls, stored.event_type.split(".", 1)[1])
        kwargs = dict(stored.payload)
        kwargs.update(
            originator_id=aggregate_id,
            originator_version=stored.stream_version,
            timestamp=stored.recorded_at.astimezone(timezone.utc),
        )
        if issubclass(event_cls, CanInitAggregate):
            kwargs["originator_topic"] = get_topic(aggregate_cls)
        aggregate = event_cls(**kwargs).mutate(aggregate)
    return aggregate


class AggregateRepository:
    """Load and save aggregates of one type, each in the stream `<stream_type>:<key>`."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def new(self, stream_type: str, key: str) -> Loaded[Any]:
        """A stream not read from the store: saving it succeeds only if the stream does not exist yet."""
        return Loaded(aggregate=None, stream_id=f"{stream_type}:{key}", stream_type=stream_type, version=0, last_hash=GENESIS)

    async def load(self, aggregate_cls: type[A], stream_type: str, key: str, aggregate_id: UUID) -> Loaded[A]:
        stream_id = f"{stream_type}:{key}"
        events = await self.store.read_stream(stream_id)
        aggregate = reconstruct(aggregate_cls, aggregate_id, events)
        return Loaded(
            aggregate=aggregate,
            stream_id=stream_id,
            stream_type=stream_type,
            version=events[-1].stream_version if events else 0,
            last_hash=events[-1].hash if events else GENESIS,
        )

    async def save(
        self,
        loaded: Loaded[A],
        metadata: dict[str, Any],
        idempotency: Idempotency | None = None,
        site_id: str | None = None,
    ) -> AppendResult:
        return (await self.save_all([(loaded, site_id)], metadata, idempotency))[0]

    async def save_all(
        self,
        items: list[tuple[Loaded[Any], str | None]],
        metadata: dict[str, Any],
        idempotency: Idempotency | None = None,
    ) -> list[AppendResult]:
        """Save several aggregates (each with the site id of its events) in one transaction, or none;
        the first is the command's own (it carries the Idempotency-Key)."""
        requests = []
        for index, (loaded, site_id) in enumerate(items):
            events = to_new_events(loaded, metadata, site_id)
            requests.append(
                AppendRequest(
                    stream_id=loaded.stream_id,
                    expected_version=loaded.version,
                    events=events,
                    prev_hash=loaded.last_hash,
                    idempotency=idempotency if events and index == 0 else None,
                )
            )
        return await self.store.append_all(requests)

