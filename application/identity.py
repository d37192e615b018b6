"""Commands and handlers of identity and access: users, roles, permissions, grants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.errors import ConcurrencyError, PreconditionFailed
from application.unit import Loaded, Repository
from domain.access import BUILTIN_ROLES, check_permission
from domain.errors import DomainError
from domain.role import STREAM_TYPE as ROLE_STREAM
from domain.role import PERMISSION_STREAM, Permission, Role, role_uuid
from domain.user import STREAM_TYPE as USER_STREAM
from domain.user import User, normalise_email, user_uuid


class UserNotFound(DomainError):
    code = "USER_NOT_FOUND"


class UserExists(DomainError):
    code = "USER_ALREADY_EXISTS"


class RoleNotFound(DomainError):
    code = "ROLE_NOT_FOUND"


class RoleExists(DomainError):
    code = "ROLE_ALREADY_EXISTS"


class PermissionExists(DomainError):
    code = "PERMISSION_ALREADY_EXISTS"


class WeakPassword(DomainError):
    code = "VALIDATION_FAILED"


class Passwords(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...


class RoleDirectory(Protocol):
    """Read-side answers: which role key currently carries a name."""

    async def key_of(self, name_or_key: str) -> str | None: ...


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


class DeactivateUser(Command):
    user_id: str
    reason: str | None = None


class ChangePassword(Command):
    user_id: str
    password: str


class GrantRole(Command):
    user_id: str
    role: str
    site_id: str | None = None


class RevokeRole(Command):
    user_id: str
    role: str
    site_id: str | None = None


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
    roles: RoleDirectory
    min_password_length: int = 8


def check_password(services: IdentityServices, password: str) -> None:
    if len(password) < services.min_password_length:
        raise WeakPassword(
            f"password must have at least {services.min_password_length} characters", field="password"
        )


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
    key = await services.roles.key_of(role) or role
    loaded = await services.repository.load(Role, ROLE_STREAM, key, role_uuid(key))
    if loaded.aggregate is None or loaded.aggregate.deleted:
        raise RoleNotFound(f"role {role} is not known", role=role)
    if ctx.expected_version is not None and ctx.expected_version != loaded.version:
        raise PreconditionFailed(loaded.stream_id, ctx.expected_version, loaded.version)
    return loaded


async def save(services: IdentityServices, loaded: Loaded, ctx: CommandContext, command: str, site_id: str | None = None) -> CommandResult:
    result = await services.repository.save(loaded, ctx.metadata(command), ctx.idempotency, site_id=site_id)
    return CommandResult(result.stream_id, result.version, result.position, result.duplicate)


async def register_user(cmd: RegisterUser, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    email = normalise_email(cmd.email)
    check_password(services, cmd.password)
    uid = user_uuid(email)
    fresh = services.repository.new(USER_STREAM, str(uid))
    password_hash = await services.passwords.hash(cmd.password)
    fresh.aggregate = User(email=email, full_name=cmd.full_name.strip(), password_hash=password_hash, active=cmd.active)
    try:
        return await save(services, fresh, ctx, "RegisterUser")
    except ConcurrencyError:
        raise UserExists(f"a user with e-mail {email} already exists", field="email") from None


async def sign_up(cmd: SignUp, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    register = RegisterUser(email=cmd.email, password=cmd.password, full_name=cmd.full_name)
    try:
        return await register_user(register, ctx, services)  # the password is hashed either way: same time
    except UserExists:
        return CommandResult(f"{USER_STREAM}:{user_uuid(normalise_email(cmd.email))}", 0, None)


async def activate_user(cmd: ActivateUser, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    loaded = await load_user(services, cmd.user_id, ctx)
    loaded.aggregate.activate()
    return await save(services, loaded, ctx, "ActivateUser")


async def deactivate_user(cmd: DeactivateUser, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    loaded = await load_user(services, cmd.user_id, ctx)
    loaded.aggregate.deactivate(cmd.reason)
    return await save(services, loaded, ctx, "DeactivateUser")


async def change_password(cmd: ChangePassword, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    check_password(services, cmd.password)
    loaded = await load_user(services, cmd.user_id, ctx)
    loaded.aggregate.change_password(await services.passwords.hash(cmd.password))
    return await save(services, loaded, ctx, "ChangePassword")


async def grant_role(cmd: GrantRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    role = await load_role(services, cmd.role, CommandContext())
    loaded = await load_user(services, cmd.user_id, ctx)
    loaded.aggregate.grant_role(role.aggregate.key, cmd.site_id)
    return await save(services, loaded, ctx, "GrantRole", site_id=cmd.site_id)


async def revoke_role(cmd: RevokeRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    key = await services.roles.key_of(cmd.role) or cmd.role
    loaded = await load_user(services, cmd.user_id, ctx)
    loaded.aggregate.revoke_role(key, cmd.site_id)
    return await save(services, loaded, ctx, "RevokeRole", site_id=cmd.site_id)


async def create_role(cmd: CreateRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    if await services.roles.key_of(cmd.name):
        raise RoleExists(f"a role named {cmd.name} already exists", field="name")
    fresh = services.repository.new(ROLE_STREAM, cmd.name)
    fresh.aggregate = Role.create(cmd.name, cmd.description, cmd.permissions)
    try:
        return await save(services, fresh, ctx, "CreateRole")
    except ConcurrencyError:
        raise RoleExists(f"a role was created as {cmd.name} before; pick another name", field="name") from None


async def update_role(cmd: UpdateRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    loaded = await load_role(services, cmd.role_id, ctx)
    role = loaded.aggregate
    if cmd.name is not None and cmd.name != role.name:
        if await services.roles.key_of(cmd.name):
            raise RoleExists(f"a role named {cmd.name} already exists", field="name")
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
    return await save(services, loaded, ctx, "UpdateRole")


async def delete_role(cmd: DeleteRole, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    loaded = await load_role(services, cmd.role_id, ctx)
    loaded.aggregate.delete()
    return await save(services, loaded, ctx, "DeleteRole")


async def define_permission(cmd: DefinePermission, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    fresh = services.repository.new(PERMISSION_STREAM, cmd.name)
    fresh.aggregate = Permission.define(cmd.name, cmd.description)
    try:
        return await save(services, fresh, ctx, "DefinePermission")
    except ConcurrencyError:
        raise PermissionExists(f"permission {cmd.name} is already defined", field="name") from None


async def ensure_builtins(cmd: EnsureBuiltins, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    last = CommandResult("role:*", 0, None)
    wanted = [(ROLE_STREAM, name, lambda d=d, p=p, n=name: Role.create(n, d, p)) for name, (d, p) in BUILTIN_ROLES.items()]
    wanted += [(PERMISSION_STREAM, n, lambda n=n, d=d: Permission.define(n, d)) for n, d in sorted(cmd.permissions.items())]
    for stream_type, key, make in wanted:
        fresh = services.repository.new(stream_type, key)
        fresh.aggregate = make()
        try:
            last = await save(services, fresh, ctx, "EnsureBuiltins")
        except ConcurrencyError:
            continue  # exists already
    return last


HANDLERS = {
    RegisterUser: register_user,
    SignUp: sign_up,
    ActivateUser: activate_user,
    DeactivateUser: deactivate_user,
    ChangePassword: change_password,
    GrantRole: grant_role,
    RevokeRole: revoke_role,
    CreateRole: create_role,
    UpdateRole: update_role,
    DeleteRole: delete_role,
    DefinePermission: define_permission,
    EnsureBuiltins: ensure_builtins,
}
