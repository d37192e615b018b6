"""The security log of failed sign-ins: a counter per reason and a table bounded by age and by rows.

Failed sign-ins are not events: anybody may fail to sign in, and the event log is append-only forever,
so an anonymous caller must not be able to grow it. Here a row costs one insert; at most once a minute
the rows older than `retention` and those past the newest `max_rows` are deleted. (Anonymous traffic is
rate-limited per address first, and failed sign-ins back off per account and address.)"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import structlog

from domain.identity.user import Client
from infrastructure.identity.signin import account_key
from infrastructure.telemetry import metrics

log = structlog.get_logger(__name__)

INSERT = (
    "INSERT INTO signin_failures (account_key, user_id, client_address, user_agent, reason) VALUES ($1, $2, $3, $4, $5)"
)
TRIM = """
DELETE FROM signin_failures WHERE at < $1
   OR id < (SELECT id FROM signin_failures ORDER BY id DESC OFFSET $2 LIMIT 1)
"""


class SecurityLog:
    def __init__(self, pool: asyncpg.Pool, retention: timedelta, max_rows: int, trim_every: float = 60.0) -> None:
        self.pool = pool
        self.retention = retention
        self.max_rows = max(1, max_rows)
        self.trim_every = trim_every
        self._next_trim = 0.0

    async def failed(self, account: str, user_id: str | None, client: Client, reason: str) -> None:
        """Count and keep one failure (the account as a digest: a mistyped password in the username field
        must not be kept in clear)."""
        metrics.SIGNIN_FAILURES.labels(reason).inc()
        try:
            await self.pool.execute(INSERT, account_key(account), user_id, client.address, client.user_agent, reason)
            if time.monotonic() > self._next_trim:
                self._next_trim = time.monotonic() + self.trim_every
                await self.trim()
        except (asyncpg.PostgresError, OSError) as exc:  # the refusal still answers; the counter has it
            log.warning("security log write failed", error=type(exc).__name__)

    async def trim(self) -> int:
        """Delete what is past the retention or the row bound; the number of rows deleted."""
        horizon = datetime.now(timezone.utc) - self.retention
        status = await self.pool.execute(TRIM, horizon, self.max_rows - 1)
        return int(status.split()[-1])

    async def recent(self, user_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest failures (of one account when `user_id` is given), newest first."""
        rows = await self.pool.fetch(
            "SELECT at, user_id, client_address, user_agent, reason FROM signin_failures"
            " WHERE ($1::text IS NULL OR user_id = $1) ORDER BY id DESC LIMIT $2",
            user_id,
            limit,
        )
        return [dict(r) for r in rows]
