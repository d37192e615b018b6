"""This process's copy of who may do what: roles and their permissions, each user's grants, deactivated
users and revoked sign-ins. Loaded once from the identity read model at its projection's cursor, then kept
up by folding the access events committed after that cursor (each second, in the never-skip global
order), so a refresh costs what changed, not how many users and grants exist; updated at once by the
identity reactions after a commit here (`application/identity/reactions.py`). Revoked sign-ins come from
the refresh tokens table (the last token lifetime's only)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from application.ports import StoredEvent
from domain.identity.access import Access, Grant, resolve_access
from infrastructure.eventlog.global_order import read_global
from infrastructure.identity.tokens import revoked_families
from projections.identity.projection import NAME as PROJECTION
from projections.identity.projection import SCHEMA
from projections.identity.queries import role_permissions

ACCESS_STREAMS = frozenset({"user", "role"})
FOLLOW_BATCH = 1000


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
        self.cursor: tuple[int, int] | None = None  # the last access event folded in (None: nothing loaded yet)
        self._changed: asyncio.Future[None] | None = None
        self.version = 0  # moves at every change of anyone's access: decisions kept under an older one are void

    def changes(self) -> asyncio.Future[None]:
        """Done at the next change of anyone's access (a revoked grant or sign-in, a deactivation, a role's
        permissions): long-lived responses wait on it to re-check their caller."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    def _notify(self) -> None:
        self.version += 1  # every access decision taken before this one is void
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
        """Catch up with the access events committed since the last refresh (the first one loads the identity
        read model at its projection's cursor), and with the sign-ins revoked lately. Its cost follows what
        changed, not how many users and grants there are."""
        if self.cursor is None:
            changed = await self._load()
        else:
            changed = await self._follow()
        # Access tokens live `access_ttl` seconds: older revocations concern no live token (60 s for clock skew).
        keep = self.tokens.access_ttl + 60
        revoked = await revoked_families(self.pool, keep)
        horizon = time.time() - keep
        sessions = {sid: at for sid, at in self.revoked_sessions.items() if at > horizon}
        sessions.update(revoked)  # a revocation is never undone, so the union is right whatever the order
        changed = changed or not set(revoked) <= set(self.revoked_sessions)
        self.revoked_sessions = sessions
        self.refreshed_at = time.monotonic()
        if changed:
            self._notify()

    async def _load(self) -> bool:
        """Everything, from the identity read model and its cursor read in one snapshot."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            at = await conn.fetchrow(
                "SELECT transaction_id::text::bigint AS tx, position FROM checkpoints WHERE name = $1", PROJECTION
            )
            roles = await role_permissions(conn)
            rows = await conn.fetch(
                f"SELECT u.user_id, u.is_active, extract(epoch FROM u.grants_changed_at) AS changed,"
                f" g.role_key, NULLIF(g.site_id, '') AS site_id"
                f" FROM {SCHEMA}.users u LEFT JOIN {SCHEMA}.user_grants g USING (user_id)"
            )
        grants: dict[str, list[tuple[str, str | None]]] = {}
        inactive = set()
        for row in rows:
            held = grants.setdefault(row["user_id"], [])
            self.changed_at[row["user_id"]] = max(float(row["changed"] or 0), self.changed_at.get(row["user_id"], 0.0))
            if row["role_key"] is not None:
                held.append((row["role_key"], row["site_id"]))
            if not row["is_active"]:
                inactive.add(row["user_id"])
        self.roles, self.grants, self.inactive = roles, grants, inactive
        self.cursor = (at["tx"], at["position"]) if at else (0, 0)
        return True

    async def _follow(self) -> bool:
        """The access events after the cursor, in the never-skip global order, folded into the caches."""
        changed = False
        async with self.pool.acquire() as conn:
            while True:
                events = await read_global(conn, self.cursor, FOLLOW_BATCH)
                for event in events:
                    if event.stream_type in ACCESS_STREAMS:
                        changed = self.fold(event) or changed
                if events:
                    self.cursor = (events[-1].transaction_id, events[-1].position)
                if len(events) < FOLLOW_BATCH:
                    return changed

    def fold(self, e: StoredEvent) -> bool:
        """One access event into the caches (as the identity projection folds it into its rows); True when
        it changed anyone's access. The after-commit reactions may have applied it already: folding is
        idempotent."""
        key, p = e.stream_id.split(":", 1)[1], e.payload
        at = e.recorded_at.timestamp()
        match e.event_type:
            case "User.Registered":
                self.grants.setdefault(key, [])
                if not p["active"]:
                    self.inactive.add(key)
                return not p["active"]
            case "User.Activated":
                self.inactive.discard(key)
            case "User.Deactivated":
                self.inactive.add(key)
            case "User.RoleGranted":
                grant = (p["role"], p["site_id"] or None)
                held = self.grants.get(key, [])
                if grant not in held:
                    self.grants[key] = [*held, grant]
                self.changed_at[key] = max(self.changed_at.get(key, 0.0), at)
            case "User.RoleRevoked":
                grant = (p["role"], p["site_id"] or None)
                self.grants[key] = [g for g in self.grants.get(key, []) if g != grant]
                self.changed_at[key] = max(self.changed_at.get(key, 0.0), at)
            case "Role.Created":
                self.roles[key] = sorted(set(p["permissions"]))
            case "Role.PermissionAdded" if key in self.roles:
                self.roles[key] = sorted({*self.roles[key], p["permission"]})
            case "Role.PermissionRemoved" if key in self.roles:
                self.roles[key] = [x for x in self.roles[key] if x != p["permission"]]
            case "Role.Deleted":
                self.roles.pop(key, None)
            case _:
                return False
        return True
