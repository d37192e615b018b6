"""(4) The guard alone: `interfaces.http.security.authorize` called in the bench process, with and
without authorization, free of the noise of the load phases."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from ops.bench.auth import HOST, PATH, VIEWER_EMAIL


def guard_cost(iterations: int = 5_000, repeats: int = 3) -> dict[str, float]:
    """Microseconds per call of the guard itself (`interfaces.http.security.authorize`) on the benchmarked
    route, in this process: with authorization and the viewer's (already verified, cached) token, and with
    authorization off and no token, each minus building the request object. The best of `repeats` runs,
    so other load on the machine hardly shows. This is what authorization adds to a request, apart from
    the Authorization header's bytes on the wire."""
    from types import SimpleNamespace

    from litestar import Request

    from domain.identity.access import BUILTIN_ROLES
    from infrastructure.identity.tokens import TokenService
    from infrastructure.identity.ratelimit import RateLimiter
    from infrastructure.settings import Settings
    from interfaces.app import create_app
    from infrastructure.identity.access_cache import Authority
    from interfaces.http.security import authorize

    app = create_app(Settings(database_url="postgresql://unused/unused", log_level="warning", log_json=False))
    handler = next(
        h for r in app.routes for h in getattr(r, "route_handlers", []) if getattr(h, "operation_id", None) == "listPlugins"
    )
    tokens = TokenService(uuid.uuid4().hex)
    token, _ = tokens.issue(str(uuid.uuid4()), [("viewer", None)], VIEWER_EMAIL)
    path, _, query = PATH.partition("?")

    def authority(enabled: bool) -> Any:
        limiter = RateLimiter(None, {"anonymous": 10**9, "user": 10**9, "admin": 10**9})  # type: ignore[arg-type]
        found = Authority(tokens, limiter, enabled=enabled)
        found.roles = {name: list(perms) for name, (_, perms) in BUILTIN_ROLES.items()}
        return SimpleNamespace(authority=found, pool=None)

    def request(with_token: bool) -> Any:
        headers = [(b"host", f"{HOST}:8000".encode()), (b"accept", b"application/json"), (b"user-agent", b"charter-bench-auth")]
        if with_token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope = {
            "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": query.encode(), "headers": headers, "path_params": {},
            "client": (HOST, 50000), "server": (HOST, 8000), "app": app, "litestar_app": app,
            "route_handler": handler, "state": {},
        }
        made = Request(scope)
        _ = made.headers  # parsed (and cached in the scope) by the handler anyway: not the guard's cost
        return made

    async def per_call(enabled: bool) -> float:
        app.state.runtime = authority(enabled)
        await authorize(request(enabled), handler)  # the token's verification is cached from now on, as in a server
        # The requests are made before the clock starts: only the guard is timed (subtracting a separately
        # timed loop that makes them went negative on a busy machine).
        made = [request(enabled) for _ in range(iterations)]
        started = time.perf_counter()
        for each in made:
            await authorize(each, handler)
        return (time.perf_counter() - started) / iterations * 1e6

    async def measure() -> dict[str, float]:
        on, off = [], []
        for _ in range(repeats):
            on.append(await per_call(True))
            off.append(await per_call(False))
        return {
            "authorized_us": round(min(on), 2),
            "disabled_us": round(min(off), 2),
            "extra_us": round(min(on) - min(off), 2),
            "calls": iterations,
        }

    return asyncio.run(measure())
