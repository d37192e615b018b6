"""The canonical forms behind tamper evidence: what an event's hash covers (per chain version), the Merkle
root a checkpoint seals, and the bytes a checkpoint's signature covers.

Pure (hashlib and msgspec only): the offline checker (`charter audit check`) imports this without any
database driver. The README's "Tamper evidence" section documents these forms with a worked vector; a
unit test keeps that vector true.

Chain version 2 (every event written now): `hash = sha256(prev || body)` where `prev` is the hash of the
previous event of the stream (32 zero bytes for the first) and `body` is the compact JSON, keys sorted at
every depth, of the array

    ["charter-event", 2, event_id, stream_id, stream_type, stream_version, event_type, schema_version,
     site_id, recorded_at, payload, metadata]

with `recorded_at` in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, and every payload field named in
`WITHHELD_V2` replaced by `{"withheld": "sha256:<hex of sha256(its value as sorted compact JSON)>"}` so
an export can leave credentials out and still be verified. Chain version 1 (rows written before
migration 0008): `body` is `[event_id, stream_id, stream_version, event_type, payload]`, sorted compact JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import msgspec

CHAIN_VERSION = 2
GENESIS = bytes(32)
# Payload fields a hash covers through their digest only (part of chain version 2: never changes for it).
# Equal to domain.identity.user.WITHHELD_FIELDS (a unit test keeps them so).
WITHHELD_V2 = ("password_hash",)
_WITHHELD = frozenset(WITHHELD_V2)
EVENT_TAG = "charter-event"
CHECKPOINT_TAG = "charter-checkpoint/1"
CHECKPOINT_STREAM = "audit:checkpoints"
CHECKPOINT_TYPE = "Audit.CheckpointSealed"


def canonical_json(value: Any) -> bytes:
    """Compact JSON with object keys sorted at every depth."""
    return msgspec.json.encode(value, order="sorted")


def utc_instant(moment: datetime) -> str:
    """A recorded time as chain version 2 hashes it (a time without an offset is UTC)."""
    if moment.tzinfo is not None and moment.tzinfo is not timezone.utc and moment.utcoffset():
        moment = moment.astimezone(timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # (strftime is 10 times slower)


def withheld_digest(value: Any) -> dict[str, str]:
    return {"withheld": "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()}


def withhold(payload: Any, already: Iterable[str] = ()) -> Any:
    """The payload as chain version 2 hashes it: withheld fields by digest (`already`: fields that an
    export carries as their digest already)."""
    if type(payload) is not dict or _WITHHELD.isdisjoint(payload):
        return payload  # (a payload that is no object: only a tampered row)
    done = set(already)
    return {k: (withheld_digest(v) if k in WITHHELD_V2 and k not in done else v) for k, v in payload.items()}


def body_v2(
    event_id: str, stream_id: str, stream_type: str, stream_version: int, event_type: str, schema_version: int,
    site_id: str | None, recorded_at: str, payload: Mapping[str, Any], metadata: Mapping[str, Any],
) -> bytes:
    return canonical_json([
        EVENT_TAG, 2, event_id, stream_id, stream_type, stream_version, event_type, schema_version,
        site_id, recorded_at, payload, metadata,
    ])  # fmt: skip


def body_v1(event_id: str, stream_id: str, stream_version: int, event_type: str, payload: Any) -> bytes:
    return canonical_json([event_id, stream_id, stream_version, event_type, payload])


def link(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + body).digest()


def hash_v2(prev: bytes, event: Any, payload: Mapping[str, Any] | None = None, metadata: Any = None) -> bytes:
    """Chain version 2 hash of an event (a NewEvent, a StoredEvent or any object with their fields);
    `payload`/`metadata`: the JSON as stored, when the object holds values JSON does not keep (UUIDs, ...)."""
    return link(prev, body_v2(
        str(event.event_id), event.stream_id, event.stream_type, event.stream_version, event.event_type,
        event.schema_version, event.site_id, utc_instant(event.recorded_at),
        withhold(event.payload if payload is None else payload), event.metadata if metadata is None else metadata,
    ))  # fmt: skip


def hash_v1(prev: bytes, event: Any) -> bytes:
    return link(prev, body_v1(str(event.event_id), event.stream_id, event.stream_version, event.event_type, event.payload))


# -- the Merkle root a checkpoint seals ------------------------------------------------------------------


def leaf(position: int, event_hash: bytes) -> bytes:
    """A leaf binds an event's hash to its global position (so moving an event changes the root)."""
    return hashlib.sha256(b"\x00" + position.to_bytes(8, "big") + event_hash).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """Pairs hashed level by level (`sha256(0x01 || left || right)`); an odd last node goes up as it is.
    The root of no leaves is sha256 of nothing."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = leaves
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def position_runs(positions: Iterable[int]) -> list[list[int]]:
    """Sorted positions as inclusive `[first, last]` runs."""
    runs: list[list[int]] = []
    for p in sorted(positions):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return runs


def signed_bytes(checkpoint: Mapping[str, Any]) -> bytes:
    """What a checkpoint's signature covers: the tag, then its payload without the signature."""
    return CHECKPOINT_TAG.encode() + b"\n" + canonical_json({k: v for k, v in checkpoint.items() if k != "signature"})
