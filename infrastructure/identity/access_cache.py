"""This process's copy of who may do what: roles and their permissions, each user's grants, deactivated
users and revoked sign-ins, read from the identity read model (and the refresh tokens table) every second
and updated at once by the identity reactions after a commit (`application/identity/reactions.py`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from domain.identity.access import Access, Grant, resolve_access
from infrastructure.identity.tokens import revoked_families
from projections.identity.projection import SCHEMA
from projections.identity.queries import role_permissions


class Authority:
    """Everything the guard needs, per process: token checks, the role -> permissions cache, inactive
    users, revoked sign-ins and the rate limiter (the `AccessCache` port the identity reactions update). Caches refresh from the read model (and the refresh
    tokens table) every `refresh_every` seconds; open streams wait on `changes()` to re-check at once."""

    def __init__(
        self,
        tokens: Any,
        limiter: Any,
        enabled: bool = True,
        refresh_every: float = 1.0,
        proxies: Any = None,
        pool: Any = None,
    ) -> None:
        self.tokens = tokens
        self.limiter = limiter
        self.enabled = enabled
        self.refresh_every = refresh_every
        self.proxies = proxies  # the HTTP layer's trusted proxies (None: trust none)
        self.pool = pool
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

    def activated(self, user_id: str) -> None:
        self.inactive.discard(user_id)
        self._notify()

    def deactivated(self, user_id: str) -> None:
        self.inactive.add(user_id)
        self._notify()

    def role_changed(self, role: str, permissions: list[str] | None) -> None:
        if permissions is None:
            self.roles.pop(role, None)
        else:
            self.roles[role] = list(permissions)
        self._notify()

    def access_for(self, subject: str, grants: list[tuple[str, str | None]]) -> Access:
        return resolve_access(subject, [Grant(role, site) for role, site in grants], self.roles)

    def stale(self, seconds: float) -> bool:
        return time.monotonic() - self.refreshed_at > seconds

    def is_active(self, subject: str) -> bool:
        return subject not in self.inactive

    async def refresh(self) -> None:
        pool = self.pool
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
