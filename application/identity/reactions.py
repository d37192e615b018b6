"""What follows a committed identity event, whichever interface ran the command: a deactivated user's
sign-ins end, and this process's access cache learns grants, revocations and role changes at once
(other replicas read them from the read model at their next refresh, within a second). A new or reset
password and an ended session end sign-ins the same way.

Registered with the bus as `Reactions.register(REACTIONS, AccessServices(...))`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from application.ports import AccessCache, RefreshTokenStore
from domain.identity.role import Role
from domain.identity.user import User


@dataclass
class AccessServices:
    refresh_tokens: RefreshTokenStore
    cache: AccessCache


async def end_sign_ins(event: Any, user: User, services: AccessServices) -> None:
    """A deactivated user's refresh tokens are revoked; its access tokens stop at once."""
    await services.refresh_tokens.revoke_user(str(user.id))
    services.cache.deactivated(str(user.id))


async def end_other_sign_ins(event: Any, user: User, services: AccessServices) -> None:
    """A new password (kept: the sign-in that changed it, if any) or a reset: the other sign-ins end."""
    ended = await services.refresh_tokens.revoke_user(str(user.id), keep=getattr(event, "kept_session", "") or None)
    services.cache.end_sessions(*ended)


async def end_sign_in(event: Any, user: User, services: AccessServices) -> None:
    await services.refresh_tokens.revoke_family(event.session_id)
    services.cache.end_sessions(event.session_id)


async def allow_again(event: Any, user: User, services: AccessServices) -> None:
    services.cache.activated(str(user.id))


async def add_grant(event: Any, user: User, services: AccessServices) -> None:
    services.cache.granted(str(user.id), event.role, event.site_id)


async def remove_grant(event: Any, user: User, services: AccessServices) -> None:
    services.cache.revoked(str(user.id), event.role, event.site_id)


async def role_permissions(event: Any, role: Role, services: AccessServices) -> None:
    """A role's permissions as it has them after the commit (a deleted role grants nothing)."""
    services.cache.role_changed(role.key, None if role.deleted else list(role.permissions))


REACTIONS = {
    User.Deactivated: [end_sign_ins],
    User.Activated: [allow_again],
    User.PasswordChanged: [end_other_sign_ins],
    User.PasswordReset: [end_other_sign_ins],
    User.SessionsRevoked: [end_other_sign_ins],
    User.SessionRevoked: [end_sign_in],
    User.RoleGranted: [add_grant],
    User.RoleRevoked: [remove_grant],
    Role.Created: [role_permissions],
    Role.PermissionAdded: [role_permissions],
    Role.PermissionRemoved: [role_permissions],
    Role.Deleted: [role_permissions],
}
