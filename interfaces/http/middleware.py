"""Request context: a request id on every request, bound to the logs, echoed back, and counted; the
security headers on every response."""

from __future__ import annotations

import re
import time
import uuid

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


def request_context(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if tracing.enabled():  # the server span (ended with the body), named by route template
                    name_server_span(scope, request_id)
                extra = [(b"x-request-id", request_id.encode())]
                decision = scope["state"].get("rate_limit")
                if decision is not None:
                    extra += [
                        (b"x-ratelimit-limit", str(decision.limit).encode()),
                        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
                        (b"x-ratelimit-reset", str(decision.reset).encode()),
                    ]
                    if not decision.allowed:
                        extra.append((b"retry-after", str(decision.retry_after).encode()))
                retry_after = scope["state"].get("retry_after")  # set by a refusal that says when to come back
                if retry_after is not None and not any(k.lower() == b"retry-after" for k, _ in extra):
                    extra.append((b"retry-after", str(retry_after).encode()))
                sent = message.get("headers", [])
                present = {k.lower() for k, _ in sent}
                secure = _DOCS_HEADERS if scope["path"].startswith(DOCS_PATH) else _API_HEADERS
                extra += [(k, v) for k, v in secure if k not in present]
                message["headers"] = [*sent, *extra]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(method, route).observe(elapsed)
            log.info("request", method=method, path=scope["path"], status=status, ms=round(elapsed * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware
