"""Who may call what: one declared rule per route, checked by one guard; rate limits per token and IP."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from litestar import Controller
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from application.identity.signin import AuthenticationFailed
from domain.identity.access import Access
from infrastructure.telemetry import metrics
from interfaces.http.clients import TrustedProxies
from interfaces.http.errors import ApiError

ANONYMOUS = Access(user_id=None)
NO_PROXIES = TrustedProxies()


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
# Probes and scrapes (/health, /ready, /metrics): public, counted in a bucket of their own per address,
# so anonymous API traffic from the same address never gets them refused.
OPERATIONS = {"rule": Rule(None), "rate_limit": "ops"}


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


def client_address(connection: ASGIConnection) -> str:
    """The caller's address (X-Forwarded-For only from trusted proxies), worked out once per request."""
    state = connection.scope.setdefault("state", {})
    address = state.get("client_address")
    if address is None:
        peer = connection.client.host if connection.client else None
        forwarded = [v.decode("latin-1") for k, v in connection.scope["headers"] if k == b"x-forwarded-for"]
        proxies = connection.app.state.runtime.authority.proxies or NO_PROXIES
        address = state["client_address"] = proxies.client(peer, forwarded)
    return address


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
    bucket = handler.opt.get("rate_limit")
    if not authority.enabled:  # benchmarks only: `create_app(settings, authorization=False)`
        await limit(authority, connection, state, ANONYMOUS, bucket)
        return
    try:
        token = bearer(connection)
        access = ANONYMOUS
        if token is not None:
            claims = await verified(authority, token)
            grants = authority.current_grants(claims)
            if any(role not in authority.roles for role, _ in grants) and authority.stale(0.05):
                await authority.refresh()  # a role created a moment ago
                grants = authority.current_grants(claims)
            access = authority.access_for(claims.subject, grants)
            state["actor"] = claims.subject
            state["claims"] = claims
    except ApiError:
        # A refused token is anonymous traffic: it counts against the caller's address, so guessing
        # tokens is limited like any other unauthenticated request (429 once the bucket is empty).
        await limit(authority, connection, state, ANONYMOUS, bucket)
        raise
    state["access"] = access
    await limit(authority, connection, state, access, bucket)
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


async def verified(authority: Any, token: str) -> Any:
    """The token's claims, if it is valid, its user active and its sign-in not revoked; else 401."""
    try:
        claims = await authority.tokens.verify(token)
    except AuthenticationFailed as exc:
        raise ApiError(401, exc.code, exc.message) from None
    if not authority.is_active(claims.subject):
        raise ApiError(401, "USER_INACTIVE", "this account is deactivated")
    if authority.session_revoked(claims):
        raise ApiError(401, "SESSION_REVOKED", "this sign-in has ended (signed out, or its refresh token was reused); sign in again")
    return claims


def still_allowed(connection: ASGIConnection, permission: str) -> tuple[bool, set[str] | None]:
    """For long-lived responses (SSE): is the caller still allowed, and which sites may it see now?
    False once the token expired, its sign-in was revoked, the user was deactivated or lost the permission."""
    authority = connection.app.state.runtime.authority
    if not authority.enabled:
        return True, None
    claims = connection.scope.get("state", {}).get("claims")
    if (
        claims is None
        or claims.expires_at <= time.time()
        or not authority.is_active(claims.subject)
        or authority.session_revoked(claims)
    ):
        return False, set()
    access = authority.access_for(claims.subject, authority.current_grants(claims))
    if not access.allows_somewhere(permission):
        return False, set()
    return True, access.sites_for(permission)


def access_of(connection: ASGIConnection) -> Access:
    return connection.scope.get("state", {}).get("access", ANONYMOUS)


def visible_sites(connection: ASGIConnection, permission: str) -> set[str] | None:
    """Sites whose data the caller may see under `permission`; None: all of them."""
    runtime = connection.app.state.runtime
    if not runtime.authority.enabled:
        return None
    return access_of(connection).sites_for(permission)


async def limit(authority: Any, connection: ASGIConnection, state: dict[str, Any], access: Access, bucket: str | None = None) -> None:
    """Count the request against its caller's bucket (its user, else its address; probes apart): 429 when empty."""
    limiter = authority.limiter
    if limiter is None:
        return
    if bucket == "ops":
        key, tier = f"ops:{client_address(connection)}", "ops"
    elif access.user_id is not None:
        key = f"user:{access.user_id}"
        tier = "admin" if access.allows("*:*") else "user"
    else:
        key = f"ip:{client_address(connection)}"
        tier = "anonymous"
    decision = limiter.hit(key, tier)
    state["rate_limit"] = decision
    if not decision.allowed:
        metrics.RATE_LIMITED.labels(tier).inc()
        raise ApiError(
            429,
            "RATE_LIMITED",
            f"too many requests: {decision.limit} per {limiter.window}s; retry after {decision.retry_after}s",
            limit=decision.limit,
            retry_after=decision.retry_after,
        )
