"""The one event envelope: JetStream messages, Server-Sent Events and `GET /api/v1/events` items are the
same JSON, byte for byte, for the same stored event (application/envelope.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
from litestar.serialization import encode_json

from application.envelope import EventEnvelope
from infrastructure.stream.hub import delivered_from
from infrastructure.stream.relay import Outbox
from interfaces.http.schemas import Page
from projections import event_log

RECORDED = datetime(2026, 11, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
# As PostgreSQL writes jsonb as text: spaced, keys in its own order. Passed through, never re-encoded.
PAYLOAD = '{"reason": "stuck", "nested": {"ok": true, "n": [1, 2.5, null]}}'
METADATA = '{"actor": "alice", "command": "RestartPlugin", "request_id": "r-1", "traceparent": "00-ab-cd-01"}'
EVENT: dict[str, Any] = dict(
    event_id="0b6f1f7e-93a4-4c0e-8d8c-2f1e0e6b7a11", position=42, transaction_id=7001, stream_id="plugin:audit-log",
    stream_type="plugin", stream_version=3, event_type="Plugin.Restarted", schema_version=1, site_id="site-a",
    actor="alice", recorded_at=RECORDED, payload=PAYLOAD, metadata=METADATA,
)


def jetstream_body(event: dict[str, Any]) -> bytes:
    """What the relay publishes: the outbox row (READ_OUTBOX's columns, in its order) made a message."""
    row = (
        event["position"], event["transaction_id"], event["event_id"], event["stream_id"], event["stream_type"],
        event["stream_version"], event["event_type"], event["schema_version"], event["site_id"], event["recorded_at"],
        event["payload"], event["metadata"], "00-ab-cd-01", "r-1", event["actor"],
    )
    [message] = Outbox("charter.events").messages([row], None)
    return message.data


def sse_data(body: bytes, seq: int = 9) -> bytes:
    """What an SSE client reads: the `data:` line of the hub's frame for that message."""
    frame = delivered_from(seq, body).frame
    [data] = [line[len(b"data: "):] for line in frame.split(b"\n") if line.startswith(b"data: ")]
    return data


def events_item(event: dict[str, Any]) -> bytes:
    """An item of `GET /api/v1/events` as litestar encodes the page the controller returns."""
    page = Page(total=1, skip=0, limit=50, items=[event_log.envelope(dict(event))], has_more=False)
    return msgspec.json.encode(msgspec.json.decode(encode_json(page))["items"][0])


def test_jetstream_sse_and_the_event_log_serve_the_same_bytes() -> None:
    body = jetstream_body(EVENT)

    assert sse_data(body) == body
    assert encode_json(event_log.envelope(dict(EVENT))) == body


def test_the_three_paths_decode_alike_as_the_envelope() -> None:
    body = jetstream_body(EVENT)
    decoded = [msgspec.json.decode(raw, type=EventEnvelope) for raw in (body, sse_data(body), events_item(EVENT))]

    assert decoded[0] == decoded[1] == decoded[2]
    assert decoded[0].payload == {"reason": "stuck", "nested": {"ok": True, "n": [1, 2.5, None]}}
    assert decoded[0].metadata["actor"] == decoded[0].actor == "alice"
    assert decoded[0].recorded_at == RECORDED


def test_every_field_of_the_envelope_and_no_other() -> None:
    fields = list(msgspec.json.decode(jetstream_body(EVENT)))

    assert fields == list(EventEnvelope.__struct_fields__)
    assert list(msgspec.json.decode(events_item(EVENT))) == fields


def test_a_global_event_without_an_actor_keeps_both_fields_as_null() -> None:
    event = dict(EVENT, site_id=None, actor=None)

    envelope = msgspec.json.decode(jetstream_body(event))

    assert envelope["site_id"] is None and envelope["actor"] is None
    assert delivered_from(1, jetstream_body(event)).site_id is None


def test_the_hub_routes_on_the_envelopes_own_fields() -> None:
    delivered = delivered_from(9, jetstream_body(EVENT))

    assert (delivered.site_id, delivered.stream_type, delivered.stream_id, delivered.event_type) == (
        "site-a", "plugin", "plugin:audit-log", "Plugin.Restarted",
    )
