"""Hostile input on `POST /api/v1/events/stream-tickets` and on `?ticket=`: every bad field answers 4xx
naming it, never a 500; a ticket opens nothing but its own stream, once; a ticket cannot be used to ask
for another one, nor on any other route."""

from __future__ import annotations

import pytest

from tests.e2e.access_kit import send
from tests.e2e.plugin_kit import PLUGINS, assert_error

TICKETS = "/api/v1/events/stream-tickets"
STREAM = "/api/v1/events/stream"


async def ticket(client, **filters: str) -> str:
    response = await client.post(TICKETS, json=filters)
    assert response.status_code == 201, response.text
    return response.json()["ticket"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stream_type": "p" * 1025}, "stream_type"),
        ({"site_id": ["a"]}, "site_id"),
        ({"event_type": 5}, "event_type"),
        ({"stream_type": "plugin\u0000"}, "stream_type"),
        ({"ticket": "mine"}, "ticket"),  # unknown field
        ({"access_token": "x"}, "access_token"),
    ],
)
async def test_a_bad_field_is_refused_by_name(client, body, field) -> None:
    response = await client.post(TICKETS, json=body)

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["details"].get("field") == field, response.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{", "application/json"), (b"[]", "application/json"), (b'{"stream_type": "a"' + b" " * (1024 * 1024 + 1) + b"}", "application/json"),
     (b"\xff\xfe", "application/json"), (b"stream_type=plugin", "application/x-www-form-urlencoded")],
)
async def test_malformed_bodies_answer_4xx(client, content: bytes, content_type: str) -> None:
    response = await client.post(TICKETS, content=content, headers={"content-type": content_type})

    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()


async def test_a_ticket_is_issued_only_to_a_signed_in_caller(client) -> None:
    anonymous = await send(client, "POST", TICKETS, anonymous=True, json={})
    with_a_ticket = await send(client, "POST", TICKETS, anonymous=True, json={}, params={"ticket": await ticket(client)})

    assert_error(anonymous, 401, "AUTHENTICATION_REQUIRED")
    assert_error(with_a_ticket, 401, "AUTHENTICATION_REQUIRED")  # a ticket opens the stream, nothing else


async def test_a_ticket_is_no_credential_for_other_routes(client) -> None:
    response = await send(client, "GET", PLUGINS, anonymous=True, params={"ticket": await ticket(client)})

    assert_error(response, 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize(
    "value",
    ["", "cst_", "x" * 1024, "cst_" + "A" * 43 + "%00", "cst_../../etc/passwd", "' OR 1=1 --", "cst_" + "é" * 43],
)
async def test_forged_tickets_are_refused_never_a_server_error(client, value: str) -> None:
    response = await send(client, "GET", STREAM, anonymous=True, params={"ticket": value})

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] in ("TICKET_INVALID", "VALIDATION_FAILED")


async def test_a_ticket_given_twice_in_the_query_is_refused(client) -> None:
    one, two = await ticket(client), await ticket(client)

    response = await client.get(f"{STREAM}?ticket={one}&ticket={two}", headers={"authorization": ""})

    assert 400 <= response.status_code < 500, response.text


async def test_a_used_ticket_stays_used(client) -> None:
    issued = await ticket(client)
    first = await send(client, "GET", STREAM, anonymous=True, params={"ticket": issued})  # past the guard: no NATS here
    again = [await send(client, "GET", STREAM, anonymous=True, params={"ticket": issued}) for _ in range(3)]

    assert_error(first, 503, "FANOUT_UNAVAILABLE")
    for response in again:
        assert_error(response, 401, "TICKET_INVALID", field="ticket")


async def test_the_filters_of_a_ticket_are_the_ones_asked_for_not_the_url(client) -> None:
    issued = await ticket(client, site_id="site-a")

    widened = await send(client, "GET", STREAM, anonymous=True, params={"ticket": issued, "site_id": "site-a,site-b"})

    assert_error(widened, 403, "TICKET_FILTERS_MISMATCH", field="ticket")
