"""Browsers on other origins: Litestar's own CORS support, configured by the CHARTER_CORS_* settings
(no origin allowed unless named), with the headers a script needs to read exposed."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.config.cors import CORSConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# What a page's script may read from an answer: versions, positions, rate limits, when to come back, the
# request id to quote, whether a write was replayed, where a new resource is, why a token was refused.
EXPOSED_HEADERS = [
    "ETag",
    "Charter-Position",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "X-Request-Id",
    "Idempotent-Replayed",
    "Location",
    "WWW-Authenticate",
]


def _listed(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def cors_config(origins: str, methods: str, headers: str, credentials: bool, max_age: int) -> CORSConfig | None:
    """The CORS configuration, or None (no CORS headers at all) when no origin is allowed."""
    allowed = _listed(origins)
    if not allowed:
        return None
    return CORSConfig(
        allow_origins=allowed,
        allow_methods=[m.upper() for m in _listed(methods)],  # type: ignore[misc]
        allow_headers=_listed(headers),
        allow_credentials=credentials,
        expose_headers=EXPOSED_HEADERS,
        max_age=max_age,
    )


def _preflight(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "OPTIONS":
        return False
    names = {k for k, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


def refused_preflights_as_envelopes(app: ASGIApp) -> ASGIApp:
    """Litestar refuses a preflight (an origin, method or header not allowed) with `400 Disallowed CORS
    <what>` in plain text; Charter answers every error in its envelope, so that answer is re-worded as
    `403 CORS_REFUSED` naming what was refused. A browser fails the preflight either way."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if not _preflight(scope):
            await app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 400:
                held["start"] = message
                return
            if "start" in held and message["type"] == "http.response.body":
                what = bytes(message.get("body", b"")).decode("utf-8", "replace").removeprefix("Disallowed CORS ").strip()
                body = msgspec.json.encode({
                    "error": {
                        "code": "CORS_REFUSED",
                        "message": f"this cross-origin request is not allowed (CHARTER_CORS_*): {what or 'origin'}",
                        "details": {"field": what.split(",")[0].strip() or "Origin", "refused": what},
                        "request_id": scope.get("state", {}).get("request_id"),
                    }
                })
                start = held.pop("start")
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
                headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({**start, "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        await app(scope, receive, rewrite)

    return wrapper
