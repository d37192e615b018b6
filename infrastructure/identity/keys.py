"""Keys shared by every replica, kept in the database (created on first use)."""

from __future__ import annotations

import secrets

import asyncpg

EMAIL_RESERVATION = "email-reservation"
CONFIGURATION_HASH = "configuration-hash"  # secrets in site configuration hashes (domain/sites/config_hash.py)


async def server_key(pool: asyncpg.Pool, name: str) -> bytes:
    """The key called `name`: 32 random bytes made by whichever replica asks first, then the same for all.
    Kept in the database rather than in settings so that a replica started with other settings can never
    hash e-mail addresses differently (which would let an address be registered twice)."""
    await pool.execute(
        "INSERT INTO server_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, secrets.token_bytes(32)
    )
    return await pool.fetchval("SELECT key FROM server_keys WHERE name = $1", name)
