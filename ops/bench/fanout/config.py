"""What one `charter bench fanout` run is asked to do, what its phases (1)-(3) found, and its targets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

P99_TARGET_MS = 50.0
KIB_PER_CLIENT_TARGET = 30.0
RELAY_RATIO_TARGET = 0.8
TARGET_RATE = 500.0
TARGET_CLIENTS = 1000


@dataclass
class FanoutConfig:
    clients: int
    rate: float
    seconds: float
    warmup: float
    idle_seconds: float
    client_processes: int
    plugins: int
    server_projectors: bool
    relay_in: str  # "server" (as `charter serve` runs it) or "writer" (a worker process beside the API)
    profile: Path | None
    server_workers: int = 1  # worker processes of the Charter server (`charter serve --workers N`)


@dataclass
class FanoutResult:
    memory: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    profile_top: str | None = None


def auto_client_processes(clients: int) -> int:
    """Client processes for `clients` SSE clients when --client-processes is not given."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if clients < 200:
        return 1
    return max(1, min(4, cpus // 2))
