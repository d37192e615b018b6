"""Where stored events take their current shape: every read of the log for a consumer goes through here.

The store keeps each event as it was recorded, at the schema version of the code that recorded it
(`domain/upcasting.py`). What reads it to act on it gets the current shape:

- `current(event)`: a StoredEvent for aggregates (`EventStore.read_stream`, hence `reconstruct`, loads
  and as-of replays) and for projections (`read_global`: the projectors and rebuilds);
- `current_json(...)`: a payload passed through as stored JSON text (the event log API and the relay
  to JetStream), decoded only when the event is older than the code.

Hash chains are computed over the event as stored, so verification reads the raw rows
(`global_order.record`, `EventStore.read_stream_as_stored`), never these.
"""

from __future__ import annotations

import msgspec

from application.ports import StoredEvent
from domain.event_schemas import UPCASTERS
from domain.identity.user import WITHHELD_FIELDS

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _named(stream_id: str, stream_version: int, position: int | None) -> str:
    at = f", position {position}" if position is not None else ""
    return f"stream {stream_id} version {stream_version}{at}"


def current(event: StoredEvent) -> StoredEvent:
    """`event` at the current schema version of its type (the same object when it already is)."""
    if UPCASTERS.is_current(event.event_type, event.schema_version):
        return event
    payload = UPCASTERS.upcast(
        event.event_type, event.schema_version, event.payload,
        _named(event.stream_id, event.stream_version, event.position),
    )
    return StoredEvent(  # positionally: a tenth of what dataclasses.replace costs
        event.position, event.transaction_id, event.event_id, event.stream_id, event.stream_type,
        event.stream_version, event.event_type, UPCASTERS.current(event.event_type), payload, event.metadata,
        event.site_id, event.recorded_at, event.hash,
    )


def current_json(
    event_type: str, schema_version: int, payload: str | bytes, stream_id: str, stream_version: int, position: int
) -> tuple[int, str | bytes]:
    """The schema version and payload JSON text of an event as it may leave the database (credentials
    withheld): passed through untouched when current, else decoded, upcast and encoded again. Upcasters
    see the payload without the withheld fields here, so none may need one."""
    if UPCASTERS.is_current(event_type, schema_version):
        return schema_version, payload
    upcast = UPCASTERS.upcast(
        event_type, schema_version, _decode(payload), _named(stream_id, stream_version, position)
    )
    for name in WITHHELD_FIELDS:
        upcast.pop(name, None)
    return UPCASTERS.current(event_type), _encode(upcast)
