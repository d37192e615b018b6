"""Reads answered again without running the route: an access decision kept per token, beside the read
cache's answer kept per read-model generation.

A catalog read costs little once its answer is kept (infrastructure/eventlog/read_cache.py); what is left
is the work around it: the guard resolving the caller's access, Litestar parsing parameters and building
the response. Both give the same result as long as nothing they depend on moved, so the first time a
caller's read is admitted and answered, the decision is kept under the exact request line and
`Authorization` header that earned it (`KeptReads.remember`, called by `interfaces.http.common.answered`).
The next identical request is answered from the kept decision and the kept answer (the middleware
`kept_reads`), provided that

- the access cache has not moved since (`Authority.version`: any grant, revocation, deactivation, role
  change or ended sign-in voids every kept decision at once in this process);
- the token has not expired;
- the read model has not moved (the read cache still holds the answer in its current generation);
- the request carries no header the route would read besides `Authorization` (no `Charter-Min-Position`,
  no `If-Match`, ...) and does not ask for `consistent` reads: those take the full path;
- the caller's rate limit allows it (the request is counted exactly as on the full path).

The path and query string are part of the key, so the well-formedness and bound checks they passed still
hold. Anything else — a miss, a refusal, tracing on — goes the full way through Litestar, unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass

from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

from infrastructure.telemetry import tracing
from interfaces.http.wellformed import READ_HEADERS

_AUTHORIZATION = b"authorization"
_OTHER_HEADERS = frozenset(READ_HEADERS) - {_AUTHORIZATION}
_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class Admitted:
    """A read once admitted and answered: where its answer is kept, and what the decision depended on."""

    projection: str
    key: Hashable
    route: str
    access_version: int
    expires_at: float
    user_id: str
    tier: str


class KeptReads:
    """Kept decisions of this process, at most `max_entries` (the oldest dropped first)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple[bytes, bytes, bytes], Admitted] = {}

    @staticmethod
    def _line(scope: Scope) -> tuple[bytes, bytes, bytes] | None:
        """(path, query string, Authorization) of a request the kept path may answer; None otherwise."""
        if scope["method"] != "GET" or b"consistent" in scope.get("query_string", b""):
            return None
        token = None
        for name, value in scope["headers"]:
            if name == _AUTHORIZATION:
                token = value
            elif name in _OTHER_HEADERS:
                return None
        if token is None:
            return None
        return (scope["path"].encode("utf-8", "surrogateescape"), scope.get("query_string", b""), token)

    def remember(self, request: Request, projection: str, key: Hashable) -> None:
        """Keep the decision that admitted `request` (answered 200 from `key` of read model `projection`)."""
        scope = request.scope
        authority = request.app.state.runtime.authority
        state = scope.get("state", {})
        claims, access, version = state.get("claims"), state.get("access"), state.get("access_version")
        line = self._line(scope)
        if line is None or claims is None or access is None or version is None or not authority.enabled or self.max_entries <= 0:
            return
        if len(self.entries) >= self.max_entries:
            self.entries.pop(next(iter(self.entries)))
        self.entries[line] = Admitted(
            projection, key, scope.get("path_template") or scope["path"], version, claims.expires_at,
            claims.subject, "admin" if access.allows("*:*") else "user",
        )

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Answer the request from a kept decision and a kept answer; False when it must take the full path."""
        line = self._line(scope)
        if line is None:
            return False
        entry = self.entries.get(line)
        if entry is None:
            return False
        runtime = scope["app"].state.runtime
        authority = runtime.authority
        if entry.access_version != authority.version or entry.expires_at <= time.time():
            self.entries.pop(line, None)
            return False
        found = runtime.read_cache.kept(entry.projection, entry.key) if runtime.read_cache is not None else None
        if found is None:
            return False
        decision = authority.limiter.hit(f"user:{entry.user_id}", entry.tier) if authority.limiter is not None else None
        if decision is not None and not decision.allowed:
            return False  # the full path counts it too and answers 429
        state = scope.setdefault("state", {})
        state["rate_limit"], state["actor"] = decision, entry.user_id
        scope["path_template"] = entry.route
        body = found.body
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *found.raw_headers],
        })
        await send({"type": "http.response.body", "body": body})
        return True


def kept_reads(app: ASGIApp) -> ASGIApp:
    """Middleware (inside `request_context`, so request ids, counts and security headers stay as they are)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not tracing.enabled():
            kept = getattr(scope["app"].state, "kept_reads", None)
            if kept is not None and await kept.answer(scope, send):
                return
        await app(scope, receive, send)

    return middleware
