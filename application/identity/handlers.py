"""Commands and handlers of identity and access: users, roles, permissions, grants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.errors import ConcurrencyError, PreconditionFailed
from application.identity.role_names import claim_name, load_role_name, release_name, role_key_of
from application.ports import Passwords, SessionStore
from application.unit import Loaded, Repository
from domain.identity import admins
from domain.identity.access import ADMIN_ROLE, BUILTIN_ROLES, check_may_change_user, check_may_grant, check_permission
from domain.identity.admins import AdminRegistry
from domain.identity.passwords import PasswordPolicy
from domain.identity.role import STREAM_TYPE as ROLE_STREAM
from domain.identity.role import NAME_STREAM, PERMISSION_STREAM, Permission, Role, RoleName, permission_uuid, role_uuid
from domain.identity.user import RESERVATION_STREAM, EmailReservation, User, email_digest, normalise_email
from domain.identity.user import STREAM_TYPE as USER_STREAM
from domain.identity.errors import UserNotFound, UserExists, RoleNotFound, RoleExists, PermissionExists, PasswordRequired
from domain.identity.errors import RegistrationClosed

ADMINS_STREAM_ID = f"{admins.STREAM_TYPE}:{admins.KEY}"
REGISTRY_ATTEMPTS = 3  # a clash on the admin registry alone is retried (the caller never read it)


# -- commands --------------------------------------------------------------------------------------


class RegisterUser(Command):
    email: str
    password: str
    full_name: str = ""
    active: bool = True


class SignUp(Command):
    """Self-service registration. It answers alike whether or not the address is taken, so that nobody
    learns which addresses have accounts: an existing account is left as it is (nothing is recorded)."""

    email: str
    password: str
    full_name: str = ""


class ActivateUser(Command):
    user_id: str
    reason: str | None = None


class DeactivateUser(Command):
    user_id: str
    reason: str | None = None


class GrantRole(Command):
    user_id: str
    role: str
    site_id: str | None = None
    reason: str | None = None


class RevokeRole(Command):
    user_id: str
    role: str
    site_id: str | None = None
    reason: str | None = None


class CreateRole(Command):
    name: str
    description: str = ""
    permissions: list[str] = []


class UpdateRole(Command):
    role_id: str
    name: str | None = None
    description: str | None = None
    permissions: list[str] | None = None


class DeleteRole(Command):
    role_id: str
    reason: str | None = None


class EnsureAdmin(Command):
    """Make `email` an administrator everywhere: register it when new (a password is then required).
    With `repair` an existing account is also reactivated, granted admin again and, when a password is
    given, given that password (`charter users create-admin`); without, it is left as it is (start-up)."""

    email: str
    password: str | None = None
    full_name: str = "Administrator"
    repair: bool = True


class DefinePermission(Command):
    name: str
    description: str = ""


class EnsureBuiltins(Command):
    """Create the built-in roles and permissions that do not exist yet (run at start-up; idempotent)."""

    permissions: dict[str, str] = {}


@dataclass
class IdentityServices:
    repository: Repository
    passwords: Passwords
    email_key: bytes  # the server key of the e-mail reservation hashes
    policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    registration_open: bool = True  # whether anybody may sign up (SignUp) or only administrators add users
    sessions: SessionStore | None = None  # the sign-ins (refresh-token families): who owns which


def check_password(services: IdentityServices, password: str, email: str | None = None, field_name: str = "password") -> None:
    """The password policy (minimum length, not the e-mail address, not a common password): 400 naming the rule."""
    services.policy.check(password, email, field_name)


async def load_user(services: IdentityServices, user_id: str, ctx: CommandContext) -> Loaded[User]:
    try:
        uid = UUID(user_id)
    except ValueError:
        raise UserNotFound(f"user {user_id} is not known", user_id=user_id) from None
    loaded = await services.repository.load(User, USER_STREAM, str(uid), uid)
    if loaded.aggregate is None:
        raise UserNotFound(f"user {user_id} is not known", user_id=user_id)
    if ctx.expected_version is not None and ctx.expected_version != loaded.version:
        raise PreconditionFailed(loaded.stream_id, ctx.expected_version, loaded.version)
    return loaded


async def load_role(services: IdentityServices, role: str, ctx: CommandContext) -> Loaded[Role]:
    key = await role_key_of(services.repository, role)
    loaded = await services.repository.load(Role, ROLE_STREAM, key, role_uuid(key))
    if loaded.aggregate is None or loaded.aggregate.deleted:
        raise RoleNotFound(f"role {role} is not known", role=role)
    if ctx.expected_version is not None and ctx.expected_version != loaded.version:
        raise PreconditionFailed(loaded.stream_id, ctx.expected_version, loaded.version)
    return loaded


async def save(services: IdentityServices, loaded: Loaded, ctx: CommandContext, command: str, site_id: str | None = None) -> CommandResult:
    result = await services.repository.save(loaded, ctx.metadata(command), ctx.idempotency, site_id=site_id)
    return CommandResult(result.stream_id, result.version, result.position, result.duplicate)


async def save_all(
    services: IdentityServices, ctx: CommandContext, command: str, items: list[tuple[Loaded[Any], str | None]]
) -> CommandResult:
    """Several streams in one append; the result is the first one's."""
    first = (await services.repository.save_all(items, ctx.metadata(command), ctx.idempotency))[0]
    return CommandResult(first.stream_id, first.version, first.position, first.duplicate)


async def find_user_id(services: IdentityServices, email: str) -> str | None:
    """The id of the user registered with `email`, from its reservation stream (None when unknown)."""
    digest = email_digest(services.email_key, email)
    loaded = await services.repository.load(
        EmailReservation, RESERVATION_STREAM, digest, EmailReservation.create_id(digest)
    )
    return loaded.aggregate.user_id if loaded.aggregate else None


async def _register(
    services: IdentityServices, ctx: CommandContext, command: str, email: str, password: str, full_name: str,
    active: bool = True, then: Callable[[User], None] | None = None,
) -> CommandResult:
    """A new user (random id) and its e-mail reservation in one append: a taken address refuses both."""
    email = normalise_email(email)
    check_password(services, password, email)
    password_hash = await services.passwords.hash(password)
    digest = email_digest(services.email_key, email)
    for attempt in range(1, REGISTRY_ATTEMPTS + 1):
        user = User(email=email, full_name=full_name.strip(), password_hash=password_hash, active=active)
        if then is not None:
            then(user)
        fresh = services.repository.new(USER_STREAM, str(user.id))
        fresh.aggregate = user
        reservation = services.repository.new(RESERVATION_STREAM, digest)
        reservation.aggregate = EmailReservation(digest=digest, user_id=str(user.id))
        items = [(fresh, None), (reservation, None), *await _admins_following(services, user, False)]
        try:
            results = await services.repository.save_all(items, ctx.metadata(command), ctx.idempotency)
        except ConcurrencyError as exc:
            if exc.details.get("stream_id") == ADMINS_STREAM_ID and attempt < REGISTRY_ATTEMPTS:
                continue  # another administrator came or went meanwhile
            raise UserExists(f"a user with e-mail {email} already exists", field="email") from None
        first = results[0]
        return CommandResult(first.stream_id, first.version, first.position, first.duplicate)
    raise AssertionError("unreachable")


async def register_user(cmd: RegisterUser, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    return await _register(services, ctx, "RegisterUser", cmd.email, cmd.password, cmd.full_name, cmd.active)


async def _admins_following(services: IdentityServices, user: User, was_admin: bool) -> list[tuple[Loaded[Any], None]]:
    """The admin registry, brought in line with `user` when this change makes or unmakes an administrator
    (to be appended with the user's stream); nothing otherwise."""
    if user.is_admin == was_admin:
        return []
    loaded = await services.repository.load(AdminRegistry, admins.STREAM_TYPE, admins.KEY, AdminRegistry.create_id())
    if loaded.aggregate is None:
        loaded.aggregate = AdminRegistry()
    if was_admin:  # an administrator made before the registry existed is counted before leaving it
        loaded.aggregate.follow(str(user.id), True)
    loaded.aggregate.follow(str(user.id), user.is_admin)
    return [(loaded, None)]


async def change_user(
    services: IdentityServices,
    ctx: CommandContext,
    command: str,
    user_id: str,
    change: Callable[[User], None],
    site_id: str | None = None,
) -> CommandResult:
    """Load a user, apply `change` (policy checks, then one aggregate method), append the user's events
    and, when an administrator comes or goes, the admin registry's, in one transaction."""
    for attempt in range(1, REGISTRY_ATTEMPTS + 1):
        loaded = await load_user(services, user_id, ctx)
        was_admin = loaded.aggregate.is_admin
        change(loaded.aggregate)
        items = [(loaded, site_id), *await _admins_following(services, loaded.aggregate, was_admin)]
        try:
            results = await services.repository.save_all(items, ctx.metadata(command), ctx.idempotency)
        except ConcurrencyError as exc:
            if exc.details.get("stream_id") == ADMINS_STREAM_ID and attempt < REGISTRY_ATTEMPTS:
                continue  # another administrator came or went meanwhile: decide again on the new registry
            raise
        first = results[0]
        return CommandResult(first.stream_id, first.version, first.position, first.duplicate)
    raise AssertionError("unreachable")


def may_change(ctx: CommandContext, permission: str, user: User) -> None:
    if ctx.access is not None:
        check_may_change_user(ctx.access, permission, user.holds_global_role)


async def sign_up(cmd: SignUp, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    if not services.registration_open:
        raise RegistrationClosed("self-registration is closed; ask an administrator")
    register = RegisterUser(email=cmd.email, password=cmd.password, full_name=cmd.full_name)
    try:
        return await register_user(register, ctx, services)  # the password is hashed either way: same time
    except UserExists:  # nothing recorded; the answer (202) is the same as for a new account
        return CommandResult(f"{RESERVATION_STREAM}:{email_digest(services.email_key, cmd.email)}", 0, None)


async def activate_user(cmd: ActivateUser, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    def change(user: User) -> None:
        may_change(ctx, "users:manage", user)
        user.activate(cmd.reason)

    return await change_user(services, ctx, "ActivateUser", cmd.user_id, change)


async def deactivate_user(cmd: DeactivateUser, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    def change(user: User) -> None:
        may_change(ctx, "users:manage", user)
        user.deactivate(cmd.reason)

    return await change_user(services, ctx, "DeactivateUser", cmd.user_id, change)


async def _role_permissions(services: IdentityServices, key: str) -> list[str]:
    """A role's permissions as its stream has them (a deleted or unknown role: none)."""
    loaded = await services.repository.load(Role, ROLE_STREAM, key, role_uuid(key))
    return list(loaded.aggregate.permissions) if loaded.aggregate else []


def _may_grant(ctx: CommandContext, user: User, role: str, permissions: list[str], site_id: str | None) -> None:
    if ctx.access is not None:
        check_may_change_user(ctx.access, "roles:grant", user.holds_global_role)
        check_may_grant(ctx.access, role, permissions, site_id)


async def grant_role(cmd: GrantRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    role = (await load_role(services, cmd.role, CommandContext())).aggregate

    def change(user: User) -> None:
        _may_grant(ctx, user, role.key, role.permissions, cmd.site_id)
        user.grant_role(role.key, cmd.site_id, cmd.reason)

    return await change_user(services, ctx, "GrantRole", cmd.user_id, change, site_id=cmd.site_id)


async def revoke_role(cmd: RevokeRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    key = await role_key_of(services.repository, cmd.role)
    permissions = await _role_permissions(services, key)

    def change(user: User) -> None:
        _may_grant(ctx, user, key, permissions, cmd.site_id)
        user.revoke_role(key, cmd.site_id, cmd.reason)

    return await change_user(services, ctx, "RevokeRole", cmd.user_id, change, site_id=cmd.site_id)


async def ensure_admin(cmd: EnsureAdmin, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    def make_admin(user: User) -> None:
        user.activate()
        user.grant_role(ADMIN_ROLE, None)

    user_id = await find_user_id(services, cmd.email)
    if user_id is None:
        if not cmd.password:
            raise PasswordRequired(f"{cmd.email} has no account yet: give a password for it", field="password")
        try:
            return await _register(services, ctx, "EnsureAdmin", cmd.email, cmd.password, cmd.full_name, then=make_admin)
        except UserExists:  # registered meanwhile (another replica starting): repair that one
            user_id = await find_user_id(services, cmd.email)
    if not cmd.repair:
        return CommandResult(f"{USER_STREAM}:{user_id}", 0, None)
    password_hash = None
    if cmd.password:
        check_password(services, cmd.password, cmd.email)
        password_hash = await services.passwords.hash(cmd.password)

    def repair(user: User) -> None:
        make_admin(user)
        if password_hash is not None:
            user.change_password(password_hash)

    return await change_user(services, ctx, "EnsureAdmin", user_id, repair)


async def _change_role(
    services: IdentityServices,
    ctx: CommandContext,
    command: str,
    decide: Callable[[], Awaitable[list[tuple[Loaded[Any], None]]]],
) -> CommandResult:
    """Append what `decide` made of the role (first) and of the names it claims or releases, in one
    transaction. A name claimed or released meanwhile by another command (a stream the caller never
    read, so no reason for 412) has the command decided again: the name is then taken, or free."""
    for attempt in range(1, REGISTRY_ATTEMPTS + 1):
        items = await decide()
        try:
            return await save_all(services, ctx, command, items)
        except ConcurrencyError as exc:
            if str(exc.details.get("stream_id", "")).startswith(f"{NAME_STREAM}:") and attempt < REGISTRY_ATTEMPTS:
                continue
            raise
    raise AssertionError("unreachable")


async def create_role(cmd: CreateRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    """A role and the claim of its name in one append: of two creates of one name, one fails."""
    fresh = services.repository.new(ROLE_STREAM, cmd.name)

    async def decide() -> list[tuple[Loaded[Any], None]]:
        fresh.aggregate = Role.create(cmd.name, cmd.description, cmd.permissions)
        return [(fresh, None), (await claim_name(services.repository, cmd.name, cmd.name), None)]

    try:
        return await _change_role(services, ctx, "CreateRole", decide)
    except ConcurrencyError as exc:
        if exc.details.get("stream_id") != fresh.stream_id:
            raise
        raise RoleExists(f"a role was created as {cmd.name} before; pick another name", field="name") from None


async def update_role(cmd: UpdateRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    async def decide() -> list[tuple[Loaded[Any], None]]:
        loaded = await load_role(services, cmd.role_id, ctx)
        role = loaded.aggregate
        names: list[tuple[Loaded[Any], None]] = []
        if cmd.name is not None and cmd.name != role.name:
            names = [(await claim_name(services.repository, cmd.name, role.key), None)]
            names += await release_name(services.repository, role.name, role.key)
            role.rename(cmd.name)
        if cmd.description is not None:
            role.describe(cmd.description)
        if cmd.permissions is not None:
            for permission in cmd.permissions:
                check_permission(permission)
            for permission in sorted(set(cmd.permissions) - set(role.permissions)):
                role.add_permission(permission)
            for permission in sorted(set(role.permissions) - set(cmd.permissions)):
                role.remove_permission(permission)
        return [(loaded, None), *names]

    return await _change_role(services, ctx, "UpdateRole", decide)


async def delete_role(cmd: DeleteRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    """The role goes; the name it had is freed (the one it was created with stays its own)."""

    async def decide() -> list[tuple[Loaded[Any], None]]:
        loaded = await load_role(services, cmd.role_id, ctx)
        loaded.aggregate.delete(cmd.reason)
        return [(loaded, None), *await release_name(services.repository, loaded.aggregate.name, loaded.aggregate.key)]

    return await _change_role(services, ctx, "DeleteRole", decide)


async def define_permission(cmd: DefinePermission, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    fresh = services.repository.new(PERMISSION_STREAM, cmd.name)
    fresh.aggregate = Permission.define(cmd.name, cmd.description)
    try:
        return await save(services, fresh, ctx, "DefinePermission")
    except ConcurrencyError:
        raise PermissionExists(f"permission {cmd.name} is already defined", field="name") from None


async def ensure_builtins(cmd: EnsureBuiltins, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    last = CommandResult("role:*", 0, None)
    for name, (description, permissions) in BUILTIN_ROLES.items():
        claimed = await load_role_name(services.repository, name)
        if claimed.aggregate is not None:
            continue  # exists already
        claimed.aggregate = RoleName(name=name, role_key=name)
        fresh = services.repository.new(ROLE_STREAM, name)
        fresh.aggregate = Role.create(name, description, permissions)
        try:
            last = await save_all(services, ctx, "EnsureBuiltins", [(fresh, None), (claimed, None)])
        except ConcurrencyError as exc:
            if exc.details.get("stream_id") != fresh.stream_id:
                continue  # claimed meanwhile (another replica starting)
            # a built-in role made before names were claimed: claim its name now
            claimed.aggregate = RoleName(name=name, role_key=name)
            try:
                last = await save(services, claimed, ctx, "EnsureBuiltins")
            except ConcurrencyError:
                continue
    for name, description in sorted(cmd.permissions.items()):
        # Looked for first: an append refused as a duplicate still takes (and loses) global positions, so
        # appending blindly would leave a gap in `position` at every start for every known permission.
        known = await services.repository.load(Permission, PERMISSION_STREAM, name, permission_uuid(name))
        if known.version:
            continue
        known.aggregate = Permission.define(name, description)
        try:
            last = await save(services, known, ctx, "EnsureBuiltins")
        except ConcurrencyError:
            continue  # defined meanwhile (another replica starting)
    return last


HANDLERS = {
    RegisterUser: register_user,
    SignUp: sign_up,
    ActivateUser: activate_user,
    DeactivateUser: deactivate_user,
    GrantRole: grant_role,
    RevokeRole: revoke_role,
    CreateRole: create_role,
    UpdateRole: update_role,
    DeleteRole: delete_role,
    DefinePermission: define_permission,
    EnsureBuiltins: ensure_builtins,
    EnsureAdmin: ensure_admin,
}
