"""Request context: a request id on every request (unknown routes included), bound to the logs, echoed
back, and counted; the security headers on every response; query secrets (`access_token`, `ticket`) never
logged or traced."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace

from infrastructure.telemetry import metrics, tracing

log = structlog.get_logger("charter.http")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

DOCS_PATH = "/schema"  # the OpenAPI document and its pages (interfaces.app)
# Nothing of the API may be framed, sniffed into another type or leak its URL to another site. API
# answers load nothing at all; the documentation pages load scripts, styles and images from Charter only
# (their inline start-up script needs 'unsafe-inline').
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)


def security_headers(path: str) -> dict[str, str]:
    return {**SECURITY_HEADERS, "content-security-policy": DOCS_CSP} if path.startswith(DOCS_PATH) else SECURITY_HEADERS


_API_HEADERS = [(k.encode(), v.encode()) for k, v in security_headers("/").items()]
_DOCS_HEADERS = [(k.encode(), v.encode()) for k, v in security_headers(DOCS_PATH).items()]


def name_server_span(scope: Scope, request_id: str) -> None:
    """Litestar's OpenTelemetry plugin starts the span before routing; it is named once routed."""
    route = scope.get("path_template") or "unmatched"
    span = trace.get_current_span()
    span.update_name(f"{scope['method']} {route}")
    span.set_attributes({"http.route": route, "charter.request_id": request_id})


# Query parameters that carry a credential: their values never reach a log line or a span.
SECRET_PARAMETERS = frozenset({"access_token", "ticket"})
REDACTED = "[redacted]"


def redacted_query(raw: bytes | str) -> str:
    """The query string with the values of `SECRET_PARAMETERS` replaced (the rest as sent)."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if not any(name in text for name in SECRET_PARAMETERS):
        return text
    pairs = parse_qsl(text, keep_blank_values=True)
    return urlencode([(k, REDACTED if k in SECRET_PARAMETERS else v) for k, v in pairs], safe="[],")


def redact_span_url(span: Any, scope: Scope) -> None:
    """Server request hook of the OpenTelemetry plugin: the URL attributes the ASGI instrumentation took
    from the query string lose the credentials in it."""
    query = scope.get("query_string") or b""
    if not query or not any(name.encode() in query for name in SECRET_PARAMETERS):
        return
    clean = redacted_query(query)
    attributes = getattr(span, "attributes", None) or {}
    for key in ("http.url", "url.full", "http.target"):
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(key, f"{value.split('?', 1)[0]}?{clean}")
    if "url.query" in attributes:
        span.set_attribute("url.query", clean)


def request_ids(app: ASGIApp) -> ASGIApp:
    """Outermost: every answer, the router's own 404/405 and refused CORS preflights included, gets a
    request id (the caller's `X-Request-Id` when it is safe, else a new one) in its `X-Request-Id` header
    and its error envelope, and the security headers. Requests that reach a route are logged and counted
    by `request_context`; the others are here."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["server_send"] = send  # the server's own send: the SSE stream writes to its transport (serving.direct_body_writer)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = message.get("headers", [])
                present = {k.lower() for k, _ in sent}
                secure = _DOCS_HEADERS if scope["path"].startswith(DOCS_PATH) else _API_HEADERS
                extra = [(k, v) for k, v in secure if k not in present]
                if b"x-request-id" not in present:
                    extra.append((b"x-request-id", request_id.encode()))
                message["headers"] = [*sent, *extra]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            if not state.get("routed"):
                elapsed = time.perf_counter() - started
                metrics.HTTP_REQUESTS.labels(scope["method"], "unmatched", str(status)).inc()
                metrics.HTTP_LATENCY.labels(scope["method"], "unmatched").observe(elapsed)
                log.info("request", method=scope["method"], path=scope["path"], query=redacted_query(scope.get("query_string", b"")),
                         status=status, ms=round(elapsed * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id")

    return wrapper


def request_context(app: ASGIApp) -> ASGIApp:
    """Route middleware: rate-limit and retry headers, the server span's name, the request's metrics and
    its log line (the request id comes from `request_ids`, which runs outside routing)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["routed"] = True
        request_id = state.get("request_id") or uuid.uuid4().hex
        state["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if tracing.enabled():  # the server span (ended with the body), named by route template
                    name_server_span(scope, request_id)
                extra = []
                decision = state.get("rate_limit")
                if decision is not None:
                    extra += [
                        (b"x-ratelimit-limit", str(decision.limit).encode()),
                        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
                        (b"x-ratelimit-reset", str(decision.reset).encode()),
                    ]
                    if not decision.allowed:
                        extra.append((b"retry-after", str(decision.retry_after).encode()))
                retry_after = state.get("retry_after")  # set by a refusal that says when to come back
                if retry_after is not None and not any(k.lower() == b"retry-after" for k, _ in extra):
                    extra.append((b"retry-after", str(retry_after).encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await app(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(method, route).observe(elapsed)
            log.info("request", method=method, path=scope["path"], query=redacted_query(scope.get("query_string", b"")),
                     status=status, ms=round(elapsed * 1000, 2))

    return middleware
