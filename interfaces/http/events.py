"""The event log for auditors (`GET /api/v1/events`) and the live stream (`GET /api/v1/events/stream`, SSE)."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, Parameter
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Send

from application.envelope import EventEnvelope
from interfaces.runtime import Delivered, EventHub, Filter
from interfaces.http import dependencies as services
from interfaces.http.bodies import JSON_BODY, json_body_size
from interfaces.http.common import page_params
from interfaces.http.dependencies import LiveFeed
from interfaces.http.errors import ApiError
from interfaces.http.schemas import Page, StreamTicket, StreamTicketRequest
from interfaces.http.security import QUERY_CREDENTIALS, rule, still_allowed, stream_filters, visible_sites
from interfaces.runtime import Authority, StreamTickets
from interfaces.serving import direct_body_writer
from projections import event_log


def as_utc(moment: datetime | None) -> datetime | None:
    """A time without an offset is taken as UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def _values(raw: str | None) -> set[str] | None:
    return {v.strip() for v in raw.split(",") if v.strip()} if raw else None


class Visibility:
    """The sites a caller may see (None: all, global events included); an open stream updates it."""

    def __init__(self, sites: set[str] | None) -> None:
        self.sites = sites


def event_filter(
    site_id: str | None, stream_type: str | None, event_type: str | None, visible: Visibility | None = None
) -> Filter | None:
    """Match on comma-separated values of each field; `global` as a site matches events of no site.
    None when nothing is filtered (the caller then shares the hub's frames)."""
    sites, types, events = _values(site_id), _values(stream_type), _values(event_type)
    if sites is None and types is None and events is None and (visible is None or visible.sites is None):
        return None

    def matches(d: Delivered) -> bool:
        if visible is not None and visible.sites is not None and d.site_id not in visible.sites:
            return False
        if sites is not None and (d.site_id or "global") not in sites:
            return False
        if types is not None and d.stream_type not in types:
            return False
        return events is None or d.event_type in events

    return matches


def resume_point(request: Request, query: int | None) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or raw.strip() == "":
        return query
    if not re.fullmatch(r"\s*[0-9]{1,19}\s*", raw):
        raise ApiError(400, "VALIDATION_FAILED", "Last-Event-ID must be a JetStream sequence number", field="Last-Event-ID")
    return int(raw)


STREAM_PATH = "/api/v1/events/stream"
Ticket = Parameter(
    description="a stream ticket (POST /api/v1/events/stream-tickets), for browsers whose EventSource cannot send"
    " Authorization; single use, opens the stream with the filters it was issued for",
)


class EventController(Controller):
    path = "/api/v1/events"
    tags = ["events"]
    dependencies = services.EVENTS
    guards = [json_body_size]

    @get("/", operation_id="listEvents", opt=rule("events:read", "any-site"), summary="The event log, filtered and paginated, for auditors")
    async def list_events(
        self,
        request: Request,
        events: NamedDependency[event_log.EventLogQueries],
        site_id: FromQuery[str | None] = None,
        stream: FromQuery[str | None] = None,
        stream_type: FromQuery[str | None] = None,
        event_type: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        after_position: FromQuery[int | None] = None,
        skip: FromQuery[int] = 0,
        limit: FromQuery[int] = 50,
        sort_order: FromQuery[str] = "asc",
    ) -> Page[EventEnvelope]:
        page_params(skip, limit, "position", sort_order, {"position": "position"})
        since, until = as_utc(since), as_utc(until)
        if since and until and since > until:
            raise ApiError(400, "VALIDATION_FAILED", "since must not be after until", field="since")
        query = event_log.EventQuery(
            site_id, stream, stream_type, event_type, actor, since, until, after_position,
            visible_sites=visible_sites(request, "events:read"),
        )
        total, items = await events.list(query, skip, limit, sort_order == "desc")
        return Page(total=total, skip=skip, limit=limit, items=items, has_more=skip + len(items) < total)

    @post(
        "/stream-tickets",
        operation_id="createStreamTicket",
        opt=rule("events:read", "any-site"),
        status_code=201,
        summary="A single-use ticket (30 s) to open the event stream with these filters, for an EventSource",
        cache_control=CacheControlHeader(no_store=True),  # a credential: kept in no cache
        **JSON_BODY,
    )
    async def create_stream_ticket(
        self, request: Request, tickets: NamedDependency[StreamTickets], data: JSONBody[StreamTicketRequest | None] = None
    ) -> StreamTicket:
        claims = request.scope.get("state", {}).get("claims")
        if claims is None:  # authorization switched off (benchmarks): there is no caller to bind a ticket to
            raise ApiError(401, "AUTHENTICATION_REQUIRED", "a stream ticket is issued to a signed-in caller")
        body = data or StreamTicketRequest()
        filters = stream_filters(body.site_id, body.stream_type, body.event_type)
        ticket, expires_at = await tickets.issue(claims, filters)
        query = {name: ",".join(values) for name, values in filters.items() if values}
        url = f"{STREAM_PATH}?{urlencode({**query, 'ticket': ticket})}"
        return StreamTicket(ticket=ticket, expires_at=expires_at, expires_in=tickets.ttl, url=url)

    @get(
        "/stream",
        operation_id="streamEvents",
        opt={**rule("events:read", "any-site"), **QUERY_CREDENTIALS},
        summary="Live events as Server-Sent Events; resume with Last-Event-ID (a JetStream sequence)",
        media_type="text/event-stream",
    )
    async def stream(
        self,
        request: Request,
        live: NamedDependency[LiveFeed],
        authority: NamedDependency[Authority],
        site_id: FromQuery[str | None] = None,
        stream_type: FromQuery[str | None] = None,
        event_type: FromQuery[str | None] = None,
        last_event_id: FromQuery[int | None] = None,
        ticket: Annotated[str | None, Ticket] = None,
    ) -> LiveEvents:
        hub = live.hub
        if hub is None or not hub.ready.is_set():
            raise ApiError(503, "FANOUT_UNAVAILABLE", "the live event stream is not available (NATS not configured or not reachable yet)")
        after = resume_point(request, last_event_id)
        visibility = Visibility(visible_sites(request, "events:read"))
        matches = event_filter(site_id, stream_type, event_type, visibility)
        session = LiveSession(hub, authority, request, matches, visibility, after, live.heartbeat)
        return LiveEvents(session, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class LiveSession:
    """One SSE client: what it missed first (from JetStream or memory), then the live feed, which the hub
    writes to the connection itself; heartbeats and access checks every `heartbeat` seconds."""

    def __init__(
        self, hub: EventHub, authority: Authority, request: Request, matches: Filter | None, visibility: Visibility,
        after: int | None, heartbeat: float,
    ) -> None:
        self.hub, self.request, self.matches, self.visibility, self.heartbeat = hub, request, matches, visibility, heartbeat
        self.authority, self.after = authority, after

    async def run(self, send: Send, receive: Receive) -> None:
        hub = self.hub
        sub, held, missing = hub.subscribe(self.matches, self.after)

        def write(data: bytes) -> Coroutine[Any, Any, None]:
            return send({"type": "http.response.body", "body": data, "more_body": True})  # one frame less per write

        disconnected = asyncio.ensure_future(_disconnect(receive))
        try:
            await write(b"retry: 2000\n: connected\n\n")
            if missing is not None:
                async for batch in hub.replay(missing[0], missing[1], self.matches):
                    if disconnected.done():
                        return
                    await write(b"".join(d.frame for d in batch))
            if held:
                await write(b"".join(d.frame for d in held))
            del held
            # The response has started: from now on events go to the transport itself when it can take them.
            ended = sub.attach(write, direct_body_writer(self.request.scope.get("state", {}).get("server_send")))
            authority = self.authority
            loop = asyncio.get_running_loop()
            beat = loop.time() + self.heartbeat
            while True:
                # Woken by a heartbeat, or at once when anyone's access changes (a revoked grant or sign-in).
                waiting = {disconnected, ended, authority.changes()} if authority.enabled else {disconnected, ended}
                timeout = max(0.0, beat - loop.time())
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if disconnected in done:
                    return
                if ended in done:
                    if not sub.broken:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                allowed, sites = still_allowed(self.request, "events:read")
                if not allowed or (self.matches is None and sites is not None):
                    # token expired, sign-in revoked, user deactivated or access narrowed: come back with a fresh filter
                    sub.end(b"retry: 5000\n: access changed; reconnect (sign in again if refused)\n\n")
                    continue
                self.visibility.sites = sites
                if loop.time() >= beat:
                    sub.send(b": heartbeat\n\n")
                    beat = loop.time() + self.heartbeat
        finally:
            disconnected.cancel()
            hub.unsubscribe(sub)


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _LiveEventsBody(ASGIStreamingResponse):
    __slots__ = ("session",)

    session: LiveSession

    async def send_body(self, send: Send, receive: Receive) -> None:
        await self.session.run(send, receive)


class LiveEvents(Stream):
    """A text/event-stream response whose body is a `LiveSession`: the hub writes events to the
    connection directly instead of through one async generator per client."""

    def __init__(self, session: LiveSession, *, headers: dict[str, str]) -> None:
        super().__init__((), media_type="text/event-stream", headers=headers)
        self.session = session

    def to_asgi_response(  # type: ignore[override]
        self, app: Any, request: Request, *, background: Any = None, cookies: Any = None, encoded_headers: Any = None,
        headers: dict[str, str] | None = None, is_head_response: bool = False, media_type: Any = None,
        status_code: int | None = None, type_encoders: Any = None,
    ) -> ASGIResponse:
        body = _LiveEventsBody(
            background=self.background or background,
            content_length=0,
            cookies=self.cookies if cookies is None else itertools.chain(self.cookies, cookies),
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers={**headers, **self.headers} if headers is not None else self.headers,
            is_head_response=is_head_response,
            iterator=(),
            media_type="text/event-stream",
            status_code=self.status_code or status_code,
        )
        body.session = self.session
        return body
