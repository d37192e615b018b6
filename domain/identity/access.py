"""Access rules: permissions are `resource:action`, roles bundle them, a grant is global or at one site."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from domain.identity.errors import InvalidPermission, InvalidRoleName, InvalidSiteId, EscalationForbidden, UserProtected

PERMISSION = re.compile(r"^(\*|[a-z][a-z0-9_.-]{0,62}):(\*|[a-z][a-z0-9_.-]{0,62})$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")
SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

READ_PLUGINS = ["plugins:read"]
ADMIN_ROLE = "admin"
# Held only when granted by name or through `*:*` (the admin role), never through `plugins:*`.
EXPLICIT = frozenset({"plugins:declassify"})

BUILTIN_ROLES: dict[str, tuple[str, list[str]]] = {
    ADMIN_ROLE: ("Everything, everywhere", ["*:*"]),
    "plugin-admin": (
        "Installs, updates, configures and operates plugins",
        ["plugins:*", "events:read", "audit:read"],
    ),
    "site-admin": (
        "Administers the sites they are granted",
        [*READ_PLUGINS, "sites:*", "extensions:*", "tasks:*", "events:read", "audit:read", "users:read"],
    ),
    "quality-focal": ("Signs off quality aspects", [*READ_PLUGINS, "sites:read", "signoffs:*", "audit:read"]),
    "compliance-officer": (
        "Signs off compliance and reads compliance reports",
        [*READ_PLUGINS, "sites:read", "signoffs:*", "audit:read", "reports:read", "events:read"],
    ),
    "auditor": (
        "Reads everything that is recorded, changes nothing",
        [*READ_PLUGINS, "sites:read", "audit:read", "events:read", "reports:read", "users:read", "roles:read"],
    ),
    "viewer": ("Reads the catalog", [*READ_PLUGINS, "sites:read"]),
}


def check_permission(name: str) -> None:
    if not PERMISSION.fullmatch(name):
        raise InvalidPermission(
            f"permission {name!r} must read resource:action (lowercase, '*' as a wildcard)", field="permission"
        )


def check_role_name(name: str) -> None:
    if not ROLE_NAME.fullmatch(name):
        raise InvalidRoleName(f"role name {name!r} must be lowercase letters, digits, '-' or '_'", field="name")


def check_site_id(site_id: str) -> None:
    if not SITE_ID.fullmatch(site_id) or site_id == "global":
        raise InvalidSiteId(f"site id {site_id!r} is not valid", field="site_id")


def grants(permission: str, required: str) -> bool:
    """Does `permission` (possibly with wildcards) cover the `required` permission?"""
    if required in EXPLICIT and permission not in (required, "*:*"):
        return False
    have_res, have_act = permission.split(":", 1)
    need_res, need_act = required.split(":", 1)
    return have_res in ("*", need_res) and have_act in ("*", need_act)


@dataclass(frozen=True)
class Grant:
    role: str
    site_id: str | None = None  # None: everywhere


@dataclass
class Access:
    """What one caller may do: permissions held everywhere and permissions held at given sites."""

    user_id: str | None
    everywhere: frozenset[str] = frozenset()
    at_site: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def allows(self, required: str, site_id: str | None = None) -> bool:
        """Allowed everywhere, or at `site_id` when one is named."""
        if any(grants(p, required) for p in self.everywhere):
            return True
        return site_id is not None and any(grants(p, required) for p in self.at_site.get(site_id, ()))

    def allows_somewhere(self, required: str) -> bool:
        return self.allows(required) or any(
            any(grants(p, required) for p in perms) for perms in self.at_site.values()
        )

    def sites_for(self, required: str) -> set[str] | None:
        """Sites where `required` is held; None when held everywhere (no restriction)."""
        if self.allows(required):
            return None
        return {site for site, perms in self.at_site.items() if any(grants(p, required) for p in perms)}

    def permissions(self) -> dict[str, list[str]]:
        view = {"*": sorted(self.everywhere)}
        view.update({site: sorted(perms) for site, perms in sorted(self.at_site.items())})
        return view


def resolve_access(user_id: str | None, held: Iterable[Grant], roles: Mapping[str, Iterable[str]]) -> Access:
    """Effective permissions from grants and the current permissions of each role (unknown roles give none)."""
    everywhere: set[str] = set()
    at_site: dict[str, set[str]] = {}
    for grant in held:
        perms = set(roles.get(grant.role, ()))
        if grant.site_id is None:
            everywhere |= perms
        else:
            at_site.setdefault(grant.site_id, set()).update(perms)
    return Access(user_id, frozenset(everywhere), {s: frozenset(p) for s, p in at_site.items()})


# -- who may change whose access (pure policies) -----------------------------------------------------


def check_may_grant(grantor: Access, role: str, permissions: Iterable[str], site_id: str | None) -> None:
    """Nobody hands out (or takes away) more than they hold: every permission of the role must be covered
    by what the grantor holds where the grant applies (everywhere, or at that site). `admin` is granted
    and revoked only by those who hold everything everywhere (not by an admin of one site)."""
    where = f" at site {site_id}" if site_id else " everywhere"
    if role == ADMIN_ROLE and not grantor.allows("*:*"):
        raise EscalationForbidden(
            "only an administrator of every site may grant or revoke admin", role=role, site_id=site_id
        )
    missing = sorted(p for p in set(permissions) if not grantor.allows(p, site_id))
    if missing:
        raise EscalationForbidden(
            f"role {role} carries permissions you do not hold{where}: {', '.join(missing)}",
            role=role,
            site_id=site_id,
            missing_permissions=missing,
        )


def check_may_change_user(actor: Access, permission: str, holds_global_role: bool) -> None:
    """A user holding a role everywhere is changed (activated, deactivated, granted, revoked, given a new
    password) only by someone holding `permission` everywhere, never by an administrator of one site."""
    if holds_global_role and not actor.allows(permission):
        raise UserProtected(
            f"this user holds a role everywhere: changing them needs {permission} everywhere",
            required_permission=permission,
        )
