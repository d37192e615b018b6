"""The event envelope: the one JSON shape of an event wherever Charter hands one out.

The items of `GET /api/v1/events`, the `data:` of each Server-Sent Event and the body of each JetStream
message are all this struct, encoded by msgspec, so a consumer reads an event alike from any of them.
It is defined here, beside the records of the event store's port, because the three paths live in three
layers (projections/event_log.py, interfaces/http/events.py, infrastructure/stream/) that may all
depend on the application and not on each other.

`payload` (credentials withheld) and `metadata` are JSON objects. Where an event is read from
PostgreSQL to be served, they are passed through as the JSON text the database returns, in a
`msgspec.Raw` that msgspec writes out verbatim: never decoded and encoded again (but for the payload
of an event older than its type's current schema version, upcast first by the caller:
infrastructure/eventlog/upcasting.py `current_json`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_type_hints

import msgspec


class EventEnvelope(msgspec.Struct):
    """One event as Charter publishes and lists it."""

    event_id: str
    position: int  # in the global order
    transaction_id: int  # of the transaction that wrote it (with position, the order of the log)
    stream_id: str
    stream_type: str
    stream_version: int
    event_type: str
    schema_version: int
    site_id: str | None  # None: a global event
    actor: str | None  # who asked (metadata.actor, lifted for filtering without decoding metadata)
    recorded_at: datetime
    payload: dict[str, Any]
    metadata: dict[str, Any]


def passed_through(
    event_id: str, position: int, transaction_id: int, stream_id: str, stream_type: str, stream_version: int,
    event_type: str, schema_version: int, site_id: str | None, actor: str | None, recorded_at: datetime,
    payload: str | bytes, metadata: str | bytes,
) -> EventEnvelope:
    """An envelope of a stored event, its payload and metadata given as the stored JSON text."""
    return EventEnvelope(
        event_id, position, transaction_id, stream_id, stream_type, stream_version, event_type, schema_version,
        site_id, actor, recorded_at, msgspec.Raw(payload), msgspec.Raw(metadata),  # type: ignore[arg-type]
    )


def envelope_view(name: str, *fields: str) -> type[msgspec.Struct]:
    """A struct that decodes only `fields` of an encoded envelope (same names, same types; the other
    fields are skipped without being decoded), for readers that route events without opening them."""
    hints = get_type_hints(EventEnvelope)
    return msgspec.defstruct(name, [(field, hints[field]) for field in fields])
