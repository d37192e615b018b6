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
    when the request names no site), `authenticated` (any valid token). `hidden_without` (scope `site`):
    a caller refused at a site where they do not even hold this permission is answered 404, as for a
    site that does not exist, so a site's existence shows to nobody outside it."""

    permission: str | None
    scope: str = "global"
    site_param: str = "site_id"
    hidden_without: str | None = None


def rule(permission: str, scope: str = "global", site_param: str = "site_id", hidden_without: str | None = None) -> dict[str, Any]:
    return {"rule": Rule(permission, scope, site_param, hidden_without)}


PUBLIC = {"rule": Rule(None)}
AUTHENTICATED = {"rule": Rule(None, "authenticated")}
# The change of a temporary password: any valid token, including the one a reset password signs in with.
PASSWORD_CHANGE = {**AUTHENTICATED, "purpose": "password-change"}
# Probes and scrapes (/health, /ready, /metrics): public, counted in a bucket of their own per address,
# so anonymous API traffic from the same address never gets them refused.
OPERATIONS = {"rule": Rule(None), "rate_limit": "ops"}


def rule_of(handler: BaseRouteHandler) -> Rule | None:
    return handler.opt.get("rule")


def documented(handler: BaseRouteHandler) -> bool:
    """Routes of the API (in the OpenAPI document) must declare a rule; the rest (the OpenAPI pages
    themselves, automatic OPTIONS answers) are public."""
    return isinstance(handler.owner, Controller) and set(getattr(handler, "http_methods", ())) != {"OPTIONS"}


# The event stream takes its credential from the query string too: a browser's EventSource sends no
# headers. `?ticket=` (a stream ticket) always, `?access_token=` only when CHARTER_SSE_QUERY_TOKENS allows it.
QUERY_CREDENTIALS = {"query_credentials": True}
STREAM_FILTERS = ("site_id", "stream_type", "event_type")


def bearer(connection: ASGIConnection, handler: BaseRouteHandler) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "AUTHENTICATION_REQUIRED", "Authorization must be 'Bearer <access token>'")
        return token.strip()
    if not handler.opt.get("query_credentials"):
        return None
    token = connection.query_params.get("access_token")
    if token is not None and not connection.app.state.runtime.settings.sse_query_tokens:
        raise ApiError(
            401, "AUTHENTICATION_REQUIRED",
            "access tokens are not taken from URLs here: POST /api/v1/events/stream-tickets, then open the stream"
            " with ?ticket=", field="access_token",
        )
    return token


def stream_filters(site_id: str | None, stream_type: str | None, event_type: str | None) -> dict[str, list[str] | None]:
    """The filters of a stream as a ticket is bound to them: each one's comma-separated values, sorted."""
    given = {"site_id": site_id, "stream_type": stream_type, "event_type": event_type}
    return {
        name: sorted({v.strip() for v in raw.split(",") if v.strip()}) or None if raw else None
        for name, raw in given.items()
    }


async def redeemed(runtime: Any, connection: ASGIConnection, ticket: str) -> Any:
    """The claims a stream ticket was issued for, once (401 when unknown, used or expired), if the stream
    is opened with the filters it was issued for (else 403: a ticket for one stream opens no other)."""
    query = connection.query_params
    for name in ("ticket", *STREAM_FILTERS):  # one value each: the ticket's filters must be the stream's
        if len(query.getall(name, [])) > 1:
            raise ApiError(400, "VALIDATION_FAILED", f"{name} may be given once with a ticket", field=name)
    found = await runtime.stream_tickets.redeem(ticket)
    if found is None:
        raise ApiError(401, "TICKET_INVALID", "this stream ticket is unknown or was used already; ask for another", field="ticket")
    if found.expired:
        raise ApiError(401, "TICKET_EXPIRED", "this stream ticket expired; ask for another", field="ticket")
    asked = stream_filters(*(query.get(name) for name in STREAM_FILTERS))
    if asked != found.filters:
        raise ApiError(
            403, "TICKET_FILTERS_MISMATCH", "this stream ticket was issued for other filters", field="ticket",
            ticket_filters=found.filters,
        )
    return await verified(runtime.authority, None, found.claims)


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
    state["access_version"] = authority.version  # taken first: what changes during the checks voids the decision
    bucket = handler.opt.get("rate_limit")
    if not authority.enabled:  # benchmarks only: `create_app(settings, authorization=False)`
        await limit(authority, connection, state, ANONYMOUS, bucket)
        return
    try:
        token = bearer(connection, handler)
        ticket = connection.query_params.get("ticket") if token is None and handler.opt.get("query_credentials") else None
        access = ANONYMOUS
        if token is not None or ticket is not None:
            claims = await verified(authority, token) if ticket is None else await redeemed(runtime, connection, ticket)
            if claims.purpose is not None and handler.opt.get("purpose") != claims.purpose:
                raise ApiError(
                    403, "PASSWORD_CHANGE_REQUIRED",
                    "this token may only change the temporary password (POST /api/v1/auth/change-password)",
                )  # fmt: skip
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
    if token is None and ticket is None:
        raise ApiError(401, "AUTHENTICATION_REQUIRED", "sign in first: send 'Authorization: Bearer <access token>'")
    if declared.scope == "authenticated":
        return
    site = site_of(connection, declared) if declared.scope == "site" else None
    if declared.scope == "any-site":
        allowed = access.allows_somewhere(declared.permission)
    else:
        allowed = access.allows(declared.permission, site)
    if not allowed and site and declared.hidden_without and not access.allows(declared.hidden_without, site):
        raise ApiError(404, "SITE_NOT_FOUND", f"site {site} is not known", site_id=site)
    if not allowed:
        details: dict[str, Any] = {"required_permission": declared.permission}
        if site:
            details["site_id"] = site
        where = f" at site {site}" if site else ""
        raise ApiError(403, "FORBIDDEN", f"permission {declared.permission}{where} is required", **details)


async def verified(authority: Any, token: str | None, claims: Any = None) -> Any:
    """The token's claims (or the claims a stream ticket carried), if the token is valid and unexpired, its
    user active and its sign-in not revoked; else 401."""
    if claims is None:
        try:
            claims = await authority.tokens.verify(token)
        except AuthenticationFailed as exc:
            raise ApiError(401, exc.code, exc.message) from None
    elif claims.expires_at <= time.time():
        raise ApiError(401, "TOKEN_INVALID", "the access token this stream ticket was issued to has expired; sign in again")
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
