"""Backoff on failed sign-ins, per account and per client address, shared by every replica through PostgreSQL.

Every attempt is charged as a failure *before* the password is checked (in one transaction holding the
keys' rows), and given back when the password was right. So concurrent guesses cannot all slip in before
the first failure is written: once a key has had its free failures, each further attempt must wait
`base * 2**(extra failures - 1)` seconds (at most `cap`) after the last one. Unlike the request rate
limiter, which syncs counts every 250 ms, failures are written at once: each attempt costs an argon2
check (~50 ms) anyway, and a guess must never get past a replica that has not heard of the others yet.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg

from application.ports import Attempt

ATTEMPT = """
WITH keys AS (SELECT unnest($1::text[]) AS key)
INSERT INTO login_failures (key, failures, last_failure) SELECT key, 0, $2 FROM keys
ON CONFLICT (key) DO NOTHING
"""
LOCK = "SELECT key, failures, last_failure FROM login_failures WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE"
CHARGE = "UPDATE login_failures SET failures = $2, last_failure = $3 WHERE key = $1"


def backoff(failures: int, free: int, base: float, cap: float) -> float:
    """Seconds to wait after the last of `failures`: none while within the free ones, then doubling."""
    if failures <= free:
        return 0.0
    return min(cap, base * 2 ** min(failures - free - 1, 64))


def account_key(email: str) -> str:
    """An account's key whether or not it exists (a digest: attempted addresses are not kept in clear)."""
    return "account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def address_key(address: str) -> str:
    return f"ip:{address}"


@dataclass(frozen=True)
class Policy:
    free_per_account: int = 5
    free_per_address: int = 30
    base: float = 1.0
    cap: float = 900.0
    memory: float = 3600.0  # seconds after its last failure that a key starts afresh

    def free(self, key: str) -> int:
        return self.free_per_account if key.startswith("account:") else self.free_per_address


class LoginThrottle:
    def __init__(self, pool: asyncpg.Pool, policy: Policy) -> None:
        self.pool = pool
        self.policy = policy
        self._next_cleanup = 0.0

    async def attempt(self, account: str, address: str) -> Attempt:
        """Charge one failure to the account and to the client address, unless one of them must still wait.
        (A refusal costs one short transaction, no argon2 check; floods are bounded by the anonymous rate
        limit first.)"""
        return await self.charge(account_key(account), address_key(address))

    async def charge(self, *keys: str) -> Attempt:
        """Charge one failure to each key, unless one of them must still wait."""
        now = time.time()
        moment = datetime.fromtimestamp(now, timezone.utc)
        forget = moment - timedelta(seconds=self.policy.memory)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(ATTEMPT, sorted(keys), moment)  # one lock order for every attempt
            rows = await conn.fetch(LOCK, list(keys))
            wait = 0.0
            for row in rows:
                if row["last_failure"] < forget:
                    continue
                delay = backoff(row["failures"], self.policy.free(row["key"]), self.policy.base, self.policy.cap)
                until = row["last_failure"].timestamp() + delay
                if delay and until > now:
                    wait = max(wait, until - now)
            if wait > 0:
                return Attempt(keys, math.ceil(wait))
            for row in rows:
                failures = 0 if row["last_failure"] < forget else row["failures"]
                await conn.execute(CHARGE, row["key"], failures + 1, moment)
        if now > self._next_cleanup:
            self._next_cleanup = now + 60
            await self.pool.execute("DELETE FROM login_failures WHERE last_failure < $1", forget)
        return Attempt(keys)

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the account starts afresh; an address gets its charge back."""
        accounts = [k for k in attempt.keys if k.startswith("account:")]
        others = [k for k in attempt.keys if not k.startswith("account:")]
        async with self.pool.acquire() as conn, conn.transaction():
            if accounts:
                await conn.execute("DELETE FROM login_failures WHERE key = ANY($1::text[])", accounts)
            if others:
                await conn.execute(
                    "UPDATE login_failures SET failures = greatest(failures - 1, 0) WHERE key = ANY($1::text[])", others
                )
