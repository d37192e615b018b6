"""Fixed-window rate limits shared by every replica through PostgreSQL.

Each process counts locally and, every `sync_interval`, adds its counts to the shared row of each key
in one statement, learning the cluster-wide totals back. A decision uses the last known total plus
what this process counted since: exact within one process, shared across processes within one sync.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg
import structlog

from infrastructure.eventlog.availability import DATABASE, is_unavailable

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # epoch seconds when the window ends
    retry_after: int


class RateLimiter:
    def __init__(self, pool: asyncpg.Pool, limits: dict[str, int], window: int = 60, sync_interval: float = 0.25) -> None:
        self.pool = pool
        self.limits = limits
        self.window = window
        self.sync_interval = sync_interval
        self._window_start = 0
        self._unsent: dict[str, int] = defaultdict(int)
        self._known: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._cleaned = 0

    def _roll(self, now: float) -> int:
        start = int(now // self.window * self.window)
        if start != self._window_start:
            self._window_start = start
            self._unsent.clear()
            self._known.clear()
        return start

    def hit(self, key: str, tier: str) -> Decision:
        now = time.time()
        start = self._roll(now)
        limit = self.limits[tier]
        self._unsent[key] += 1
        used = self._known.get(key, 0) + self._unsent[key]
        reset = start + self.window
        allowed = used <= limit
        return Decision(allowed, limit, max(0, limit - used), reset, 0 if allowed else max(1, int(reset - now)))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sync_forever(), name="rate-limit-sync")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            started = time.monotonic()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the limiter degrades to per-process counting while the database is away
                if is_unavailable(exc) or DATABASE.down:  # mid-outage errors come in many shapes
                    DATABASE.failed(exc, "rate-limit sync", started)
                else:
                    log.warning("rate-limit sync failed", error=repr(exc))
            else:
                DATABASE.succeeded(started)

    async def sync(self) -> None:
        if not self._unsent:
            return
        start = self._window_start
        sent = dict(self._unsent)  # stays counted locally until the shared totals include it
        window = datetime.fromtimestamp(start, timezone.utc)
        rows = await self.pool.fetch(
            "INSERT INTO rate_limits (key, window_start, hits) SELECT k, $3, h FROM unnest($1::text[], $2::int[]) AS t(k, h)"
            " ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + excluded.hits"
            " RETURNING key, hits",
            list(sent),
            list(sent.values()),
            window,
        )
        if start != self._window_start:
            return  # the window rolled over meanwhile
        for key, hits in sent.items():
            left = self._unsent[key] - hits
            if left > 0:
                self._unsent[key] = left
            else:
                del self._unsent[key]
        for row in rows:
            self._known[row["key"]] = row["hits"]
        if self._cleaned != start:  # once per window and process: drop the windows that ended
            self._cleaned = start
            await self.pool.execute("DELETE FROM rate_limits WHERE window_start < $1", window)
