"""Stream tickets in PostgreSQL: issued by one replica, redeemed by another, once, however close together
two uses come; only a digest at rest; late tickets refused and swept."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import pytest

from infrastructure.eventlog.eventstore import create_pool
from infrastructure.identity.stream_tickets import StreamTickets
from infrastructure.identity.tokens import Claims

FILTERS = {"site_id": None, "stream_type": ["plugin"], "event_type": None}


def claims(subject: str = "user-1") -> Claims:
    return Claims(
        subject=subject, grants=[("viewer", None), ("site-admin", "site-a")], issuer="charter",
        expires_at=int(time.time()) + 600, name="Ada", token_id="jti-1", grants_at=123.5, session_id="sid-1",
    )


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[StreamTickets, StreamTickets]]:
    """Two replicas' ticket stores: separate pools on one database."""
    one, two = await create_pool(database_url), await create_pool(database_url)
    try:
        yield StreamTickets(one), StreamTickets(two)
    finally:
        await one.close()
        await two.close()


async def test_a_ticket_issued_by_one_replica_is_redeemed_by_another_with_its_caller_and_filters(replicas) -> None:
    issuing, redeeming = replicas
    ticket, expires_at = await issuing.issue(claims(), FILTERS)

    found = await redeeming.redeem(ticket)

    assert found is not None and not found.expired
    assert found.claims == claims()
    assert found.filters == FILTERS
    assert 25 < expires_at.timestamp() - time.time() <= 30.5


async def test_of_many_uses_at_once_on_two_replicas_exactly_one_gets_in(replicas) -> None:
    one, two = replicas
    ticket, _ = await one.issue(claims(), FILTERS)

    results = await asyncio.gather(*(replica.redeem(ticket) for replica in (one, two) * 8))

    assert sum(r is not None for r in results) == 1


async def test_only_a_digest_of_the_ticket_is_stored(replicas) -> None:
    tickets, _ = replicas
    ticket, _ = await tickets.issue(claims("digest-user"), FILTERS)

    rows = await tickets.pool.fetch("SELECT digest, subject, claims::text AS claims, filters::text AS filters FROM stream_tickets")

    assert all(ticket not in f"{r['claims']}{r['filters']}{r['subject']}" for r in rows)
    assert hashlib.sha256(ticket.encode()).digest() in {bytes(r["digest"]) for r in rows}


async def test_a_late_ticket_is_refused_as_expired_and_gone(replicas) -> None:
    tickets, _ = replicas
    tickets.ttl = 0.05
    ticket, _ = await tickets.issue(claims(), FILTERS)
    await asyncio.sleep(0.2)

    found = await tickets.redeem(ticket)

    assert found is not None and found.expired
    assert await tickets.redeem(ticket) is None


async def test_unused_tickets_are_swept_a_minute_after_they_expired(replicas) -> None:
    tickets, _ = replicas
    ticket, _ = await tickets.issue(claims(), FILTERS)
    digest = hashlib.sha256(ticket.encode()).digest()
    async with tickets.pool.acquire() as conn:
        await conn.execute("UPDATE stream_tickets SET expires_at = now() - interval '2 minutes' WHERE digest = $1", digest)

    await tickets.issue(claims(), FILTERS)

    assert await tickets.pool.fetchval("SELECT count(*) FROM stream_tickets WHERE digest = $1", digest) == 0


@pytest.mark.parametrize("forged", ["", "cst_", "cst_" + "a" * 42, "x" * 47, "cst_" + "a" * 42 + "!", "cst_" + "é" * 43])
async def test_what_is_not_a_ticket_is_unknown_without_a_query(replicas, forged: str) -> None:
    tickets, _ = replicas

    assert await tickets.redeem(forged) is None
