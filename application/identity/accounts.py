"""Accounts people run themselves, and their administration: passwords (changed by the user, reset by an
administrator), the display name, and the sign-in history (signed in, signed out, sessions ended).

Every one of these is an event of the user's stream, with the actor in its metadata and the client's
address and User-Agent in its payload; the sign-ins a change ends are revoked after the commit
(application/identity/reactions.py), so their access tokens stop at once."""

from __future__ import annotations

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.identity.handlers import IdentityServices, change_user, may_change, check_password, load_user
from domain.identity.errors import CurrentPasswordWrong, SessionNotFound, WeakPassword
from domain.identity.user import User, client


class ChangePassword(Command):
    """A new password. With `current_password` it is the user's own change (the actor must be the user,
    the current password must match, every other sign-in than `keep_session` ends); without, an
    administrator sets it for good (needs users:manage; every sign-in ends)."""

    user_id: str
    password: str
    current_password: str | None = None
    keep_session: str | None = None
    client_address: str = ""
    user_agent: str = ""


class ResetPassword(Command):
    """A temporary password set by an administrator: the user must change it at the next sign-in, and
    every sign-in of theirs ends now."""

    user_id: str
    password: str
    client_address: str = ""
    user_agent: str = ""


class UpdateProfile(Command):
    """The user's own display name."""

    user_id: str
    full_name: str


class RecordSignIn(Command):
    user_id: str
    session_id: str
    client_address: str = ""
    user_agent: str = ""


class RecordSignOut(Command):
    user_id: str
    session_id: str
    client_address: str = ""
    user_agent: str = ""


class EndSessions(Command):
    """End one sign-in of a user (`session_id`), or all of them but `keep_session` (`session_id` None).
    The actor is an administrator (users:manage) or the user themself."""

    user_id: str
    session_id: str | None = None
    keep_session: str | None = None
    reason: str | None = None
    client_address: str = ""
    user_agent: str = ""


def _is_self(ctx: CommandContext, user_id: str) -> bool:
    return ctx.actor == user_id


async def change_password(cmd: ChangePassword, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    user = (await load_user(services, cmd.user_id, ctx)).aggregate
    own = cmd.current_password is not None
    if own:
        if not _is_self(ctx, cmd.user_id):
            raise CurrentPasswordWrong("only the user may change their password with the current one", field="current_password")
        if not await services.passwords.verify(user.password_hash, cmd.current_password or ""):
            raise CurrentPasswordWrong("the current password is wrong", field="current_password")
    field_name = "new_password" if own else "password"
    check_password(services, cmd.password, user.email, field_name)
    if own and await services.passwords.verify(user.password_hash, cmd.password):
        raise WeakPassword("the new password must differ from the current one", field=field_name, rule="not_current")
    password_hash = await services.passwords.hash(cmd.password)
    where = client(cmd.client_address, cmd.user_agent)

    def change(user: User) -> None:
        if not own:
            may_change(ctx, "users:manage", user)
        user.change_password(password_hash, (cmd.keep_session or "") if own else "", where)

    return await change_user(services, ctx, "ChangePassword", cmd.user_id, change)


async def reset_password(cmd: ResetPassword, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    user = (await load_user(services, cmd.user_id, ctx)).aggregate
    check_password(services, cmd.password, user.email, "temporary_password")
    password_hash = await services.passwords.hash(cmd.password)
    where = client(cmd.client_address, cmd.user_agent)

    def change(user: User) -> None:
        may_change(ctx, "users:manage", user)
        user.reset_password(password_hash, where)

    return await change_user(services, ctx, "ResetPassword", cmd.user_id, change)


async def update_profile(cmd: UpdateProfile, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    def change(user: User) -> None:
        if not _is_self(ctx, cmd.user_id):
            may_change(ctx, "users:manage", user)
        user.rename(cmd.full_name)

    return await change_user(services, ctx, "UpdateProfile", cmd.user_id, change)


async def record_sign_in(cmd: RecordSignIn, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    where = client(cmd.client_address, cmd.user_agent)
    return await change_user(services, ctx, "RecordSignIn", cmd.user_id, lambda user: user.sign_in(cmd.session_id, where))


async def record_sign_out(cmd: RecordSignOut, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    where = client(cmd.client_address, cmd.user_agent)
    return await change_user(services, ctx, "RecordSignOut", cmd.user_id, lambda user: user.sign_out(cmd.session_id, where))


async def end_sessions(cmd: EndSessions, ctx: CommandContext, services: IdentityServices) -> CommandResult:
    if cmd.session_id is not None:
        owner = await services.sessions.owner(cmd.session_id) if services.sessions is not None else None
        if owner != cmd.user_id:
            raise SessionNotFound(f"user {cmd.user_id} has no sign-in {cmd.session_id}", session_id=cmd.session_id)
    where = client(cmd.client_address, cmd.user_agent)

    def change(user: User) -> None:
        if not _is_self(ctx, cmd.user_id):
            may_change(ctx, "users:manage", user)
        if cmd.session_id is not None:
            user.revoke_session(cmd.session_id, where, cmd.reason)
        else:
            user.revoke_sessions(where, cmd.keep_session or "", cmd.reason)

    return await change_user(services, ctx, "EndSessions", cmd.user_id, change)


HANDLERS = {
    ChangePassword: change_password,
    ResetPassword: reset_password,
    UpdateProfile: update_profile,
    RecordSignIn: record_sign_in,
    RecordSignOut: record_sign_out,
    EndSessions: end_sessions,
}
