"""Stream tickets: how a browser opens the event stream without putting its access token in a URL.

`EventSource` cannot send an Authorization header. A signed-in page asks for a ticket
(`POST /api/v1/events/stream-tickets`, with its token in the header as usual) and opens
`/api/v1/events/stream?ticket=...`. A ticket is random (256 bits), used once, valid for
`CHARTER_STREAM_TICKET_TTL` seconds (30), and bound to the caller (the claims of the token that asked for
it: the stream ends when that token would have) and to the filters it was asked for.

Tickets live in PostgreSQL (`stream_tickets`, migration 0010), not in one process's memory, so any
replica redeems what another issued; only a SHA-256 digest is stored (a ticket is as good as a token for
30 s; the digest is not), and the one `DELETE ... RETURNING` that redeems a ticket makes its second use
impossible, on any replica, however close together two uses come. The database's clock decides expiry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infrastructure.identity.tokens import Claims

PREFIX = "cst_"  # "Charter stream ticket": recognisable in a leaked URL or by a secret scanner
SHAPE = re.compile(r"cst_[A-Za-z0-9_-]{43}")
SWEEP_AFTER = 60  # seconds past its expiry an unused ticket is deleted by the next issue


@dataclass(frozen=True)
class Redeemed:
    """What a ticket was issued for; `expired` when it came too late (it is gone either way)."""

    claims: Claims
    filters: dict[str, Any]
    expired: bool


def digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


def _claims_record(claims: Claims) -> dict[str, Any]:
    return {
        "subject": claims.subject,
        "grants": [[role, site] for role, site in claims.grants],
        "issuer": claims.issuer,
        "expires_at": claims.expires_at,
        "name": claims.name,
        "token_id": claims.token_id,
        "grants_at": claims.grants_at,
        "session_id": claims.session_id,
    }


def _claims_of(record: dict[str, Any]) -> Claims:
    return Claims(
        subject=record["subject"],
        grants=[(role, site) for role, site in record["grants"]],
        issuer=record["issuer"],
        expires_at=int(record["expires_at"]),
        name=record.get("name"),
        token_id=record.get("token_id"),
        grants_at=float(record.get("grants_at") or 0.0),
        session_id=record.get("session_id"),
    )


class StreamTickets:
    """Issues and redeems stream tickets in the `stream_tickets` table."""

    def __init__(self, pool: Any, ttl: float = 30.0) -> None:
        self.pool = pool
        self.ttl = ttl

    async def issue(self, claims: Claims, filters: dict[str, Any]) -> tuple[str, datetime]:
        """A new ticket for `claims` and `filters`, and when it expires. Expired tickets nobody used are
        swept by the same statement."""
        ticket = PREFIX + secrets.token_urlsafe(32)
        expires_at = await self.pool.fetchval(
            "WITH swept AS (DELETE FROM stream_tickets WHERE expires_at < now() - make_interval(secs => $6))"
            " INSERT INTO stream_tickets (digest, subject, claims, filters, expires_at)"
            " VALUES ($1, $2, $3::jsonb, $4::jsonb, now() + make_interval(secs => $5)) RETURNING expires_at",
            digest(ticket),
            claims.subject,
            _claims_record(claims),  # the pool's jsonb codec encodes (infrastructure.eventlog.eventstore)
            filters,
            float(self.ttl),
            float(SWEEP_AFTER),
        )
        return ticket, expires_at

    async def redeem(self, ticket: str) -> Redeemed | None:
        """The ticket's claims and filters, deleting it: None when it is unknown or was used already."""
        if not SHAPE.fullmatch(ticket):
            return None
        row = await self.pool.fetchrow(
            "DELETE FROM stream_tickets WHERE digest = $1 RETURNING claims, filters, expires_at <= now() AS expired",
            digest(ticket),
        )
        if row is None:
            return None
        return Redeemed(_claims_of(row["claims"]), row["filters"], row["expired"])
