"""Who may call what: one declared rule per route, checked by one guard; rate limits per token and IP."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from litestar import Controller
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from domain.access import Access, Grant, resolve_access
from infrastructure.auth import AuthenticationFailed
from interfaces.http.errors import ApiError

ANONYMOUS = Access(user_id=None)


@dataclass(frozen=True)
class Rule:
    """`permission` None: public. Scopes: `global` (held everywhere), `any-site` (held somewhere; results
    are then limited to the caller's sites), `site` (held at the site named by `site_param`, or everywhere
    when the request names no site), `authenticated` (any valid token)."""

    permission: str | None
    scope: str = "global"
    site_param: str = "site_id"


def rule(permission: str, scope: str = "global", site_param: str = "site_id") -> dict[str, Any]:
    return {"rule": Rule(permission, scope, site_param)}


PUBLIC = {"rule": Rule(None)}
AUTHENTICATED = {"rule": Rule(None, "authenticated")}


def rule_of(handler: BaseRouteHandler) -> Rule | None:
    return handler.opt.get("rule")


def documented(handler: BaseRouteHandler) -> bool:
    """Routes of the API (in the OpenAPI document) must declare a rule; the rest (the OpenAPI pages
    themselves, automatic OPTIONS answers) are public."""
    return isinstance(handler.owner, Controller) and set(getattr(handler, "http_methods", ())) != {"OPTIONS"}


def bearer(connection: ASGIConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "AUTHENTICATION_REQUIRED", "Authorization must be 'Bearer <access token>'")
        return token.strip()
    # EventSource cannot send headers: the event stream also takes the token as a query parameter.
    if connection.scope.get("path", "").endswith("/events/stream"):
        return connection.query_params.get("access_token")
    return None


def site_of(connection: ASGIConnection, rule: Rule) -> str | None:
    if rule.site_param in connection.path_params:
        return str(connection.path_params[rule.site_param])
    values = connection.query_params.getall(rule.site_param, [])
    if len(values) > 1:
        raise ApiError(400, "VALIDATION_FAILED", f"{rule.site_param} may be given once", field=rule.site_param)
    return values[0] if values and values[0] else None


async def authorize(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The guard on every route of the app."""
    runtime = connection.app.state.runtime
    authority = runtime.authority
    declared = rule_of(handler)
    if declared is None:
        if documented(handler):
            raise ApiError(403, "FORBIDDEN", "this route declares no access rule, so nobody may call it")
        declared = Rule(None)
    state = connection.scope.setdefault("state", {})
    if not authority.enabled:  # benchmarks only: `create_app(settings, authorization=False)`
        await authority.limit(connection, state, ANONYMOUS)
        return
    token = bearer(connection)
    access = ANONYMOUS
    if token is not None:
        try:
            claims = await authority.tokens.verify(token)
        except AuthenticationFailed as exc:
            raise ApiError(401, exc.code, exc.message) from None
        if not authority.is_active(claims.subject):
            raise ApiError(401, "USER_INACTIVE", "this account is deactivated")
        if any(role not in authority.roles for role, _ in claims.grants) and authority.stale(0.05):
            await authority.refresh(runtime.pool)  # a role created a moment ago
        access = authority.access_for(claims.subject, claims.grants)
        state["actor"] = claims.subject
    state["access"] = access
    await authority.limit(connection, state, access)
    if declared.permission is None and declared.scope != "authenticated":
        return
    if token is None:
        raise ApiError(401, "AUTHENTICATION_REQUIRED", "sign in first: send 'Authorization: Bearer <access token>'")
    if declared.scope == "authenticated":
        return
    site = site_of(connection, declared) if declared.scope == "site" else None
    if declared.scope == "any-site":
        allowed = access.allows_somewhere(declared.permission)
    else:
        allowed = access.allows(declared.permission, site)
    if not allowed:
        details: dict[str, Any] = {"required_permission": declared.permission}
        if site:
            details["site_id"] = site
        where = f" at site {site}" if site else ""
        raise ApiError(403, "FORBIDDEN", f"permission {declared.permission}{where} is required", **details)


def access_of(connection: ASGIConnection) -> Access:
    return connection.scope.get("state", {}).get("access", ANONYMOUS)


def visible_sites(connection: ASGIConnection, permission: str) -> set[str] | None:
    """Sites whose data the caller may see under `permission`; None: all of them."""
    runtime = connection.app.state.runtime
    if not runtime.authority.enabled:
        return None
    return access_of(connection).sites_for(permission)


class Authority:
    """Everything the guard needs, per process: token checks, the role -> permissions cache, inactive
    users and the rate limiter. Caches refresh from the read model every `refresh_every` seconds."""

    def __init__(self, tokens: Any, limiter: Any, enabled: bool = True, refresh_every: float = 1.0) -> None:
        self.tokens = tokens
        self.limiter = limiter
        self.enabled = enabled
        self.refresh_every = refresh_every
        self.roles: dict[str, list[str]] = {}
        self.inactive: set[str] = set()
        self.refreshed_at = 0.0

    def access_for(self, subject: str, grants: list[tuple[str, str | None]]) -> Access:
        return resolve_access(subject, [Grant(role, site) for role, site in grants], self.roles)

    def stale(self, seconds: float) -> bool:
        return time.monotonic() - self.refreshed_at > seconds

    def is_active(self, subject: str) -> bool:
        return subject not in self.inactive

    async def refresh(self, pool: Any) -> None:
        from projections.access import SCHEMA
        from projections.access_queries import role_permissions

        self.roles = await role_permissions(pool)
        rows = await pool.fetch(f"SELECT user_id FROM {SCHEMA}.users WHERE NOT is_active")
        self.inactive = {r["user_id"] for r in rows}
        self.refreshed_at = time.monotonic()

    async def limit(self, connection: ASGIConnection, state: dict[str, Any], access: Access) -> None:
        if self.limiter is None:
            return
        if access.user_id is not None:
            key = f"user:{access.user_id}"
            tier = "admin" if access.allows("*:*") else "user"
        else:
            key = f"ip:{connection.client.host if connection.client else 'unknown'}"
            tier = "anonymous"
        decision = self.limiter.hit(key, tier)
        state["rate_limit"] = decision
        if not decision.allowed:
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"too many requests: {decision.limit} per {self.limiter.window}s; retry after {decision.retry_after}s",
                limit=decision.limit,
                retry_after=decision.retry_after,
            )
