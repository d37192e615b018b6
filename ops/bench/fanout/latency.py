"""Latency as the fan-out bench measures it: a histogram of 0.1 ms buckets, the envelope's `recorded_at`
and `position` read straight from the bytes, and the ring of the writer's acknowledgements."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

HIST_RESOLUTION = 10_000  # buckets per second: 0.1 ms
HIST_BUCKETS = 60 * HIST_RESOLUTION  # up to 60 s; slower deliveries land in the last bucket (max is exact)
_RECORDED_AT = b'"recorded_at":"'


def new_histogram() -> list[int]:
    return [0] * HIST_BUCKETS


def sparse(hist: list[int]) -> dict[int, int]:
    return {i: n for i, n in enumerate(hist) if n}


def hist_summary(buckets: dict[int, int], max_seconds: float) -> dict[str, float] | None:
    """p50/p90/p99/p99.9 (upper bound of the 0.1 ms bucket) and the exact max, in ms."""
    total = sum(buckets.values())
    if not total:
        return None
    ordered = sorted(buckets.items())
    out: dict[str, float] = {"count": total}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                out[name] = round(min((bucket + 1) * 1000 / HIST_RESOLUTION, max_seconds * 1000), 2)
                break
    out["max"] = round(max_seconds * 1000, 2)
    return out


def recorded_epoch(data: bytes, start: int) -> float:
    """The envelope's `recorded_at` (RFC 3339) found after `start`, as epoch seconds (nan when absent)."""
    at = data.find(_RECORDED_AT, start)
    if at < 0:
        return math.nan
    at += len(_RECORDED_AT)
    end = data.find(b'"', at)
    try:
        return datetime.fromisoformat(data[at:end].decode()).timestamp()
    except ValueError:
        return math.nan


_POSITION = b'"position":'
ACK_SLOTS = 1 << 17  # positions kept in the acknowledgement ring (more than a run commits)


def position_of(data: bytes, start: int) -> int:
    """The envelope's `position` found after `start` (-1 when absent)."""
    at = data.find(_POSITION, start)
    if at < 0:
        return -1
    at += len(_POSITION)
    end = at
    while data[end : end + 1].isdigit():
        end += 1
    return int(data[at:end]) if end > at else -1


class Acks:
    """When the writer got each command's result back (its commit acknowledged), by log position: a ring
    in shared memory, written by the writer process, read by the client processes after the run."""

    def __init__(self, mp: Any) -> None:
        self.positions = mp.Array("q", ACK_SLOTS, lock=False)
        self.times = mp.Array("d", ACK_SLOTS, lock=False)

    def record(self, position: int, at: float) -> None:
        slot = position % ACK_SLOTS
        self.positions[slot] = position
        self.times[slot] = at

    def time_of(self, position: int) -> float | None:
        slot = position % ACK_SLOTS
        return self.times[slot] if position > 0 and self.positions[slot] == position else None
