"""Browser clients: CORS from the settings, stream tickets instead of tokens in URLs, request ids and
`WWW-Authenticate` on every answer, an OpenAPI document with its sign-in scheme, and a real headless
Chromium opening the docs offline and an EventSource page from an allowed origin.

One live server (uvicorn, relay and event hub, a database and JetStream stream of its own) allows the
origin of `pages`, a small page server; `other_pages` is an origin it does not allow.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.browser import CHROMIUM, MISSING, Chromium, Pages
from tests.e2e.access_kit import account_with, send
from tests.e2e.conftest import LiveServer, live_server, make_settings
from tests.e2e.plugin_kit import PLUGINS, assert_error, installed, manifest, unique_id

TICKETS = "/api/v1/events/stream-tickets"
STREAM = "/api/v1/events/stream"
EXPOSED = {"etag", "charter-position", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "x-request-id"}
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=MISSING)


@pytest.fixture(scope="module")
def pages() -> AsyncIterator[Pages]:
    served = Pages()
    yield served
    served.close()


@pytest.fixture(scope="module")
def other_pages() -> AsyncIterator[Pages]:
    served = Pages()
    yield served
    served.close()


@pytest.fixture(scope="module")
async def server(databases, nats_url, jetstream_streams, tmp_path_factory, pages: Pages) -> AsyncIterator[LiveServer]:
    stream = jetstream_streams.new("browser")
    settings = make_settings(
        await databases.create("browser"), tmp_path_factory.mktemp("charter-browser"), nats_url=nats_url,
        nats_stream=stream.name, nats_subject_prefix=stream.prefix, sse_heartbeat=1.0, cors_origins=pages.origin,
    )
    async with live_server(settings) as live:
        yield live


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=10) as client:
        yield client


async def ticket_for(http: httpx.AsyncClient, **filters: str) -> dict[str, Any]:
    response = await http.post(TICKETS, json=filters)
    assert response.status_code == 201, response.text
    return response.json()


async def first_bytes(http: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[int, bytes, httpx.Headers]:
    """Open a stream (without the client's Authorization header) and read its first chunk."""
    request = http.build_request("GET", url, **kwargs)
    request.headers.pop("authorization", None)
    response = await http.send(request, stream=True)
    try:
        chunk = await asyncio.wait_for(response.aiter_raw().__anext__(), 10)
    finally:
        await response.aclose()
    return response.status_code, chunk, response.headers


# -- CORS -------------------------------------------------------------------------------------------


class TestCors:
    async def test_a_preflight_from_an_allowed_origin_is_answered(self, http, pages) -> None:
        response = await send(http, "OPTIONS", PLUGINS, anonymous=True, headers={
            "Origin": pages.origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        })

        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == pages.origin
        assert {"authorization", "content-type", "idempotency-key"} <= {
            h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
        }
        assert "POST" in response.headers["access-control-allow-methods"]
        assert response.headers["access-control-max-age"] == "600"
        assert response.headers["x-request-id"]

    async def test_a_preflight_from_another_origin_is_refused_in_the_envelope(self, http, other_pages) -> None:
        response = await send(http, "OPTIONS", PLUGINS, anonymous=True, headers={
            "Origin": other_pages.origin, "Access-Control-Request-Method": "GET",
        })

        error = assert_error(response, 403, "CORS_REFUSED", field="Origin")
        assert "access-control-allow-origin" not in response.headers
        assert error["request_id"] == response.headers["x-request-id"]

    async def test_a_preflight_asking_for_a_header_not_allowed_is_refused(self, http, pages) -> None:
        response = await send(http, "OPTIONS", PLUGINS, anonymous=True, headers={
            "Origin": pages.origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-not-allowed",
        })

        assert_error(response, 403, "CORS_REFUSED", field="headers")

    async def test_an_allowed_origin_may_read_the_headers_a_client_needs(self, http, pages) -> None:
        response = await http.get(PLUGINS, headers={"Origin": pages.origin})

        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == pages.origin
        exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
        assert EXPOSED <= exposed, exposed

    async def test_another_origin_gets_no_cors_headers(self, http, other_pages) -> None:
        response = await http.get(PLUGINS, headers={"Origin": other_pages.origin})

        assert "access-control-allow-origin" not in response.headers

    async def test_by_default_no_origin_is_allowed(self, client, pages) -> None:
        preflight = await send(client, "OPTIONS", PLUGINS, anonymous=True, headers={
            "Origin": pages.origin, "Access-Control-Request-Method": "GET",
        })
        actual = await client.get(PLUGINS, headers={"Origin": pages.origin})

        assert "access-control-allow-origin" not in preflight.headers
        assert "access-control-allow-origin" not in actual.headers


# -- request ids and WWW-Authenticate ----------------------------------------------------------------


class TestEveryAnswerNamesItsRequest:
    @pytest.mark.parametrize(("method", "path", "status"), [("GET", "/no/such/route", 404), ("PATCH", PLUGINS, 405), ("GET", "/health", 200)])
    async def test_router_answers_too(self, client, method: str, path: str, status: int) -> None:
        response = await client.request(method, path)

        assert response.status_code == status
        request_id = response.headers["x-request-id"]
        assert len(response.headers.get_list("x-request-id")) == 1
        if status >= 400:
            assert response.json()["error"]["request_id"] == request_id

    async def test_a_safe_request_id_is_kept(self, client) -> None:
        response = await client.get("/no/such/route", headers={"X-Request-Id": "trace-me.1"})

        assert response.headers["x-request-id"] == "trace-me.1"
        assert response.json()["error"]["request_id"] == "trace-me.1"


class TestWwwAuthenticate:
    async def test_without_a_token(self, client) -> None:
        response = await send(client, "GET", PLUGINS, anonymous=True)

        assert_error(response, 401, "AUTHENTICATION_REQUIRED")
        assert response.headers["www-authenticate"] == 'Bearer realm="charter"'

    async def test_with_a_refused_token(self, client) -> None:
        response = await send(client, "GET", PLUGINS, token="not-a-token")

        assert_error(response, 401, "TOKEN_INVALID")
        assert response.headers["www-authenticate"] == 'Bearer realm="charter", error="invalid_token"'

    async def test_with_a_refused_ticket(self, client) -> None:
        response = await send(client, "GET", STREAM, anonymous=True, params={"ticket": "cst_" + "a" * 43})

        assert_error(response, 401, "TICKET_INVALID", field="ticket")
        assert response.headers["www-authenticate"] == 'Bearer realm="charter", error="invalid_token"'


# -- the OpenAPI document ----------------------------------------------------------------------------


class TestOpenApiSignIn:
    @pytest.fixture
    async def document(self, client) -> dict[str, Any]:
        return (await client.get("/schema/openapi.json")).json()

    def operations(self, document: dict[str, Any]):
        for item in document["paths"].values():
            for method, operation in item.items():
                if method in ("get", "put", "post", "delete", "patch"):
                    yield operation

    async def test_a_bearer_scheme_is_required_by_default(self, document) -> None:
        assert document["components"]["securitySchemes"]["bearer"] == {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": document["components"]["securitySchemes"]["bearer"]["description"],
        }
        assert document["security"] == [{"bearer": []}]

    async def test_public_routes_say_so_and_the_others_ask_for_the_token(self, document) -> None:
        public = {op["operationId"] for op in self.operations(document) if op["security"] == []}

        assert public == {"login", "refreshToken", "register", "health", "ready", "metrics", "auditPublicKey"}
        assert all(op["security"] in ([], [{"bearer": []}]) for op in self.operations(document))

    async def test_401s_describe_www_authenticate_and_every_error_the_request_id(self, document) -> None:
        for operation in self.operations(document):
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert "X-Request-Id" in response["headers"], (operation["operationId"], status)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], operation["operationId"]

    async def test_errors_name_the_codes_of_their_operation(self, document) -> None:
        by_id = {op["operationId"]: op for op in self.operations(document)}

        assert "PLUGIN_NOT_FOUND" in by_id["getPlugin"]["responses"]["404"]["description"]
        assert "EXTENSION_NOT_ACTIVE" in by_id["deactivateExtension"]["responses"]["404"]["description"]
        assert "TICKET_INVALID" in by_id["streamEvents"]["responses"]["401"]["description"]
        assert "TICKET_FILTERS_MISMATCH" in by_id["streamEvents"]["responses"]["403"]["description"]
        assert "TICKET" not in by_id["listPlugins"]["responses"]["401"]["description"]

    async def test_the_stream_documents_its_ticket_and_the_ticket_route_its_body(self, document) -> None:
        stream = document["paths"][STREAM]["get"]
        tickets = document["paths"][TICKETS]["post"]

        assert "ticket" in {p["name"] for p in stream["parameters"]}
        assert set(tickets["responses"]) >= {"201", "400", "401", "403", "429"}
        assert tickets["requestBody"]["required"] is False


# -- stream tickets ----------------------------------------------------------------------------------


class TestStreamTickets:
    async def test_a_ticket_opens_its_stream_once(self, http) -> None:
        issued = await http.post(TICKETS, json={"stream_type": "plugin"})
        ticket = issued.json()
        assert issued.status_code == 201 and "no-store" in issued.headers["cache-control"]
        assert ticket["ticket"].startswith("cst_") and ticket["expires_in"] == 30
        assert ticket["url"] == f"{STREAM}?stream_type=plugin&ticket={ticket['ticket']}"

        status, chunk, headers = await first_bytes(http, ticket["url"])
        again = await send(http, "GET", ticket["url"], anonymous=True)

        assert status == 200 and chunk.startswith(b"retry: 2000"), chunk
        assert headers["content-type"].startswith("text/event-stream")
        assert_error(again, 401, "TICKET_INVALID", field="ticket")
        assert again.headers["www-authenticate"] == 'Bearer realm="charter", error="invalid_token"'

    @pytest.mark.parametrize("query", [{"stream_type": "site"}, {}, {"stream_type": "plugin,site"}, {"stream_type": "plugin", "site_id": "a"}])
    async def test_a_ticket_opens_no_stream_with_other_filters(self, http, query: dict[str, str]) -> None:
        ticket = await ticket_for(http, stream_type="plugin")

        response = await send(http, "GET", STREAM, anonymous=True, params={**query, "ticket": ticket["ticket"]})

        error = assert_error(response, 403, "TICKET_FILTERS_MISMATCH", field="ticket")
        assert error["details"]["ticket_filters"] == {"site_id": None, "stream_type": ["plugin"], "event_type": None}

    async def test_the_same_filters_in_another_order_are_the_same_filters(self, http) -> None:
        ticket = await ticket_for(http, event_type="Installed,Enabled")

        status, _, _ = await first_bytes(http, STREAM, params={"event_type": "Enabled, Installed", "ticket": ticket["ticket"]})

        assert status == 200

    async def test_a_late_ticket_is_refused(self, http, server) -> None:
        tickets = server.runtime.stream_tickets
        tickets.ttl = 0.1
        try:
            ticket = await ticket_for(http)
        finally:
            tickets.ttl = 30.0
        await asyncio.sleep(0.3)

        response = await send(http, "GET", ticket["url"], anonymous=True)

        assert_error(response, 401, "TICKET_EXPIRED", field="ticket")

    async def test_a_ticket_dies_with_the_sign_in_it_was_issued_to(self, http, server) -> None:
        user = await account_with(http, ("auditor", None), prefix="ticket-owner")
        issued = await send(http, "POST", TICKETS, token=user.access_token, json={})
        assert issued.status_code == 201, issued.text
        ticket = issued.json()
        logout = await send(http, "POST", "/api/v1/auth/logout", token=user.access_token, json={"refresh_token": user.refresh_token})
        assert logout.status_code in (200, 204), logout.text

        response = await send(http, "GET", ticket["url"], anonymous=True)

        assert_error(response, 401, "SESSION_REVOKED")

    async def test_a_ticket_sees_what_its_caller_may_see(self, http) -> None:
        """A caller holding events:read at one site only: its ticket's stream carries that site's events."""
        user = await account_with(http, ("site-admin", "browser-site-a"), prefix="ticket-site")
        mine = await send(http, "POST", TICKETS, token=user.access_token, json={"site_id": "browser-site-a"})
        assert mine.status_code == 201, mine.text

        status, chunk, _ = await first_bytes(http, mine.json()["url"])

        assert status == 200 and chunk.startswith(b"retry:")

    async def test_no_ticket_for_a_caller_who_may_not_read_events(self, http) -> None:
        user = await account_with(http, prefix="ticket-nobody")

        response = await send(http, "POST", TICKETS, token=user.access_token, json={})

        assert_error(response, 403, "FORBIDDEN")

    async def test_a_ticket_is_kept_only_as_a_digest(self, http, server) -> None:
        ticket = await ticket_for(http, stream_type="plugin")

        rows = await server.runtime.pool.fetch("SELECT digest::text || subject || claims::text || filters::text AS row FROM stream_tickets")

        assert rows and all(ticket["ticket"] not in r["row"] for r in rows)


# -- a real browser ----------------------------------------------------------------------------------


EVENT_PAGE = """<!doctype html><html><head><title>events</title></head><body><ul id="events"></ul><script>
const api = %(api)s, token = %(token)s;
(async () => {
  const answer = await fetch(api + "/api/v1/events/stream-tickets", {
    method: "POST", headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: JSON.stringify({stream_type: "plugin"}),
  });
  document.body.dataset.ticketStatus = String(answer.status);
  document.body.dataset.requestId = answer.headers.get("X-Request-Id") || "";
  const ticket = await answer.json();
  const source = new EventSource(api + ticket.url);
  source.onopen = () => { document.body.dataset.open = "yes"; };
  source.addEventListener("Plugin.Installed", (e) => {
    const item = document.createElement("li");
    item.textContent = JSON.parse(e.data).stream_id;
    document.getElementById("events").appendChild(item);
  });
})().catch((e) => { document.body.dataset.failure = String(e); });
</script></body></html>"""


@pytest.fixture(scope="module")
def browser() -> AsyncIterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip(MISSING)
    chromium = Chromium(offline=True)
    yield chromium
    chromium.close()


@needs_chromium
class TestInABrowser:
    async def test_the_docs_page_renders_offline_with_every_operation_and_authorize(self, browser, server) -> None:
        await asyncio.to_thread(browser.open, f"{server.url}/schema/swagger")

        operations = await asyncio.to_thread(browser.wait_for, "document.querySelectorAll('.opblock').length > 20 && document.querySelectorAll('.opblock').length")
        title = await asyncio.to_thread(browser.evaluate, "document.querySelector('.info .title').textContent")
        authorize = await asyncio.to_thread(browser.evaluate, "!!document.querySelector('.btn.authorize')")
        loaded = await asyncio.to_thread(browser.evaluate, "performance.getEntriesByType('resource').map(e => e.name)")

        assert operations > 20 and title.startswith("Charter") and authorize
        assert loaded and all(url.startswith(server.url) for url in loaded), loaded

    async def test_an_event_source_page_from_an_allowed_origin_receives_live_events(self, browser, server, pages, http) -> None:
        token = server.headers["Authorization"].split(" ", 1)[1]
        pages.pages["/events.html"] = EVENT_PAGE % {"api": json.dumps(server.url), "token": json.dumps(token)}
        await asyncio.to_thread(browser.open, f"{pages.origin}/events.html")
        await asyncio.to_thread(browser.wait_for, "document.body.dataset.open || document.body.dataset.failure")
        assert await asyncio.to_thread(browser.evaluate, "document.body.dataset.failure || ''") == ""
        assert await asyncio.to_thread(browser.evaluate, "document.body.dataset.ticketStatus") == "201"
        assert await asyncio.to_thread(browser.evaluate, "document.body.dataset.requestId")  # an exposed header
        await asyncio.sleep(0.3)  # the hub subscribes the stream as it answers; the page sees `open` first

        ids = [unique_id("browser") for _ in range(3)]
        for plugin_id in ids:
            await installed(http, manifest(plugin_id))
        expression = "[...document.querySelectorAll('#events li')].map(li => li.textContent)"
        wanted = [f"plugin:{i}" for i in ids]
        started = time.monotonic()
        received: list[str] = []
        while time.monotonic() - started < 15:
            received = [s for s in await asyncio.to_thread(browser.evaluate, expression) if s in wanted]
            if len(received) == len(wanted):
                break
            await asyncio.sleep(0.1)

        assert received == wanted, (received, browser.console[-10:])
        assert not any("cst_" in line or token in line for line in browser.console), browser.console

    async def test_a_page_from_another_origin_cannot_read_an_answer(self, browser, server, other_pages) -> None:
        other_pages.pages["/probe.html"] = (
            "<!doctype html><html><body><script>fetch(%s + '/health').then(r => { document.body.dataset.result = 'read ' + r.status; },"
            " e => { document.body.dataset.result = 'refused: ' + e; });</script></body></html>" % json.dumps(server.url)
        )
        await asyncio.to_thread(browser.open, f"{other_pages.origin}/probe.html")

        result = await asyncio.to_thread(browser.wait_for, "document.body && document.body.dataset.result")

        assert result.startswith("refused"), result
