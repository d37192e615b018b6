"""What every phase of `charter bench append` returns, and how a phase run by threads or tasks is driven
through its warm-up and measured window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ops.bench.common import Meter


@dataclass
class PhaseResult:
    key: str
    name: str  # short, for tables
    title: str
    method: str
    unit: str
    rate: float  # operations per second over the measured window
    operations: int
    seconds: float
    clients: int
    errors: int = 0
    first_error: str | None = None
    latency_ms: dict[str, float] | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # cores used in the window: this process, the machine
    extra: dict[str, Any] = field(default_factory=dict)


def drive_sync(meter: Meter, count: Callable[[], int], stop: Any, measuring: Any = None) -> tuple[int, float]:
    """Warm up, measure, then tell the workers to stop; returns (operations, seconds) of the window.
    `measuring` (an Event, for workers in other processes) is set while the window is open."""
    meter.restart_clock()
    warm_until = time.monotonic() + meter.warmup
    while time.monotonic() < warm_until:
        time.sleep(0.2)
        meter.tick(count())
    meter.begin(count())
    if measuring is not None:
        measuring.set()
    end_at = time.monotonic() + meter.seconds
    while (left := end_at - time.monotonic()) > 0:
        time.sleep(min(0.2, left))
        meter.tick(count())
    result = meter.end(count())
    if measuring is not None:
        measuring.clear()
    stop.set()
    return result


async def drive_async(meter: Meter, count: Callable[[], int]) -> tuple[int, float]:
    meter.restart_clock()
    warm_until = time.monotonic() + meter.warmup
    while time.monotonic() < warm_until:
        await asyncio.sleep(0.2)
        meter.tick(count())
    meter.begin(count())
    end_at = time.monotonic() + meter.seconds
    while (left := end_at - time.monotonic()) > 0:
        await asyncio.sleep(min(0.2, left))
        meter.tick(count())
    return meter.end(count())
