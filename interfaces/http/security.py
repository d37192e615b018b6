"""Who may call what: one declared rule per route, checked by one guard; rate limits per token and IP."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from litestar import Controller
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from domain.identity.access import Access, Grant, resolve_access
from infrastructure.identity.tokens import AuthenticationFailed, revoked_families
from infrastructure.telemetry import metrics
from interfaces.http.clients import TrustedProxies
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
        address = state["client_address"] = connection.app.state.runtime.authority.proxies.client(peer, forwarded)
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
        await authority.limit(connection, state, ANONYMOUS, bucket)
        return
    try:
        token = bearer(connection)
        access = ANONYMOUS
        if token is not None:
            claims = await verified(authority, token)
            grants = authority.current_grants(claims)
            if any(role not in authority.roles for role, _ in grants) and authority.stale(0.05):
                await authority.refresh(runtime.pool)  # a role created a moment ago
                grants = authority.current_grants(claims)
            access = authority.access_for(claims.subject, grants)
            state["actor"] = claims.subject
            state["claims"] = claims
    except ApiError:
        # A refused token is anonymous traffic: it counts against the caller's address, so guessing
        # tokens is limited like any other unauthenticated request (429 once the bucket is empty).
        await authority.limit(connection, state, ANONYMOUS, bucket)
        raise
    state["access"] = access
    await authority.limit(connection, state, access, bucket)
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


async def verified(authority: "Authority", token: str) -> Any:
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


class Authority:
    """Everything the guard needs, per process: token checks, the role -> permissions cache, inactive
    users, revoked sign-ins and the rate limiter. Caches refresh from the read model (and the refresh
    tokens table) every `refresh_every` seconds; open streams wait on `changes()` to re-check at once."""

    def __init__(
        self,
        tokens: Any,
        limiter: Any,
        enabled: bool = True,
        refresh_every: float = 1.0,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.tokens = tokens
        self.limiter = limiter
        self.enabled = enabled
        self.refresh_every = refresh_every
        self.proxies = proxies or TrustedProxies()
        self.roles: dict[str, list[str]] = {}
        self.inactive: set[str] = set()
        self.grants: dict[str, list[tuple[str, str | None]]] = {}
        self.changed_at: dict[str, float] = {}  # when each user's grants last changed (epoch seconds)
        self.revoked_sessions: dict[str, float] = {}  # sign-in (`sid`) -> when it was revoked (epoch seconds)
        self.refreshed_at = 0.0
        self._seen: tuple[Any, ...] = ()  # what the last refresh read, to tell whether anything changed
        self._changed: asyncio.Future[None] | None = None

    def changes(self) -> asyncio.Future[None]:
        """Done at the next change of anyone's access (a revoked grant or sign-in, a deactivation, a role's
        permissions): long-lived responses wait on it to re-check their caller."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def session_revoked(self, claims: Any) -> bool:
        return claims.session_id is not None and claims.issuer == self.tokens.issuer and claims.session_id in self.revoked_sessions

    def end_sessions(self, *session_ids: str | None) -> None:
        """Sign-ins just revoked here (already committed): their access tokens stop working on this replica
        at once, on the others at their next refresh (they read the revocation from the database)."""
        now = time.time()
        for sid in session_ids:
            if sid:
                self.revoked_sessions[sid] = now
        self._notify()

    def current_grants(self, claims: Any) -> list[tuple[str, str | None]]:
        """A local user's grants as they are now: the token's, unless the grants changed after the token
        read them (a revoked grant stops counting at once on this replica, within a second on the others).
        An external issuer's token speaks for itself."""
        if claims.issuer == self.tokens.issuer and self.changed_at.get(claims.subject, 0.0) > claims.grants_at:
            return self.grants.get(claims.subject, [])
        return claims.grants

    def granted(self, user_id: str, role: str, site_id: str | None) -> None:
        held = self.grants.get(user_id, [])
        if (role, site_id) not in held:
            self.grants[user_id] = [*held, (role, site_id)]
        self.changed_at[user_id] = time.time()
        self._notify()

    def revoked(self, user_id: str, role: str, site_id: str | None) -> None:
        self.grants[user_id] = [g for g in self.grants.get(user_id, []) if g != (role, site_id)]
        self.changed_at[user_id] = time.time()
        self._notify()

    def access_for(self, subject: str, grants: list[tuple[str, str | None]]) -> Access:
        return resolve_access(subject, [Grant(role, site) for role, site in grants], self.roles)

    def stale(self, seconds: float) -> bool:
        return time.monotonic() - self.refreshed_at > seconds

    def is_active(self, subject: str) -> bool:
        return subject not in self.inactive

    async def refresh(self, pool: Any) -> None:
        from projections.identity.projection import SCHEMA
        from projections.identity.queries import role_permissions

        self.roles = await role_permissions(pool)
        rows = await pool.fetch(
            f"SELECT u.user_id, u.is_active, extract(epoch FROM u.grants_changed_at) AS changed,"
            f" g.role_key, NULLIF(g.site_id, '') AS site_id"
            f" FROM {SCHEMA}.users u LEFT JOIN {SCHEMA}.user_grants g USING (user_id)"
        )
        grants: dict[str, list[tuple[str, str | None]]] = {}
        changed: dict[str, float] = {}
        inactive = set()
        for row in rows:
            held = grants.setdefault(row["user_id"], [])
            changed[row["user_id"]] = max(float(row["changed"] or 0), self.changed_at.get(row["user_id"], 0.0))
            if row["role_key"] is not None:
                held.append((row["role_key"], row["site_id"]))
            if not row["is_active"]:
                inactive.add(row["user_id"])
        # Access tokens live `access_ttl` seconds: older revocations concern no live token (60 s for clock skew).
        keep = self.tokens.access_ttl + 60
        revoked = await revoked_families(pool, keep)
        horizon = time.time() - keep
        sessions = {sid: at for sid, at in self.revoked_sessions.items() if at > horizon}
        sessions.update(revoked)  # a revocation is never undone, so the union is right whatever the order
        seen = (self.roles, changed, inactive, set(revoked))  # a grant change moves its user's `changed`
        self.grants, self.inactive, self.changed_at, self.revoked_sessions = grants, inactive, changed, sessions
        self.refreshed_at = time.monotonic()
        if seen != self._seen:
            self._seen = seen
            self._notify()

    async def limit(self, connection: ASGIConnection, state: dict[str, Any], access: Access, bucket: str | None = None) -> None:
        if self.limiter is None:
            return
        if bucket == "ops":
            key, tier = f"ops:{client_address(connection)}", "ops"
        elif access.user_id is not None:
            key = f"user:{access.user_id}"
            tier = "admin" if access.allows("*:*") else "user"
        else:
            key = f"ip:{client_address(connection)}"
            tier = "anonymous"
        decision = self.limiter.hit(key, tier)
        state["rate_limit"] = decision
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(tier).inc()
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"too many requests: {decision.limit} per {self.limiter.window}s; retry after {decision.retry_after}s",
                limit=decision.limit,
                retry_after=decision.retry_after,
            )
