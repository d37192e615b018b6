"""What the HTTP layer asks of tamper evidence: the sealer's public key, and a bounded online verification."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from infrastructure.audit.online import Progress, RangeNotFound, verify_log
from infrastructure.audit.signing import Signer
from infrastructure.audit.verify import Report

__all__ = ["AuditService", "PublicKey", "RangeNotFound", "VerificationBusy"]


class VerificationBusy(Exception):
    """This process is already verifying (one at a time: each holds a snapshot and a CPU)."""


@dataclass(frozen=True)
class PublicKey:
    algorithm: str
    public_key_pem: str
    fingerprint: str


class AuditService:
    def __init__(self, pool: asyncpg.Pool, signer: Signer) -> None:
        self.pool, self.signer = pool, signer
        self._running = asyncio.Lock()

    def public_key(self) -> PublicKey:
        return PublicKey("ed25519", self.signer.public_pem, self.signer.fingerprint)

    async def verify(self, from_checkpoint: int, max_events: int | None) -> tuple[Report, Progress]:
        """The log from just after checkpoint `from_checkpoint` (0: the start), at least `max_events` events
        of it (stopping at a page's end; None: to the end), checked against this server's key."""
        if self._running.locked():
            raise VerificationBusy("a verification is already running in this process")
        async with self._running, self.pool.acquire() as conn:
            return await verify_log(conn, self.signer.public, from_checkpoint=from_checkpoint, max_events=max_events)
