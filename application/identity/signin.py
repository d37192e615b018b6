"""Signing in, refreshing and signing out: the use cases behind `/api/v1/auth` (and any other interface).

A sign-in is a refresh-token family; every access token it yields names it (`sid`), so ending the sign-in
(logout, a stolen refresh token presented twice, a deactivated account) ends its access tokens at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.identity import accounts
from application.identity.handlers import IdentityServices, find_user_id
from application.ports import AccessCache, LoginThrottle, Passwords, RefreshTokenStore, SignInFailures, TokenIssuer
from domain.errors import DomainError
from domain.identity.errors import CurrentPasswordWrong
from domain.identity.user import STREAM_TYPE as USER_STREAM
from domain.identity.user import Client, User, client

Execute = Callable[[Command, CommandContext], Awaitable[CommandResult]]

INVALID_CREDENTIALS = "unknown user or wrong password"


class AuthenticationFailed(Exception):
    """The caller is not who it claims to be (401): wrong password, bad or revoked token, deactivated account."""

    def __init__(self, message: str, code: str = "AUTHENTICATION_FAILED") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RefreshTokenReused(AuthenticationFailed):
    """A rotated refresh token came back: its sign-in (`family_id`) is revoked, access tokens included."""

    def __init__(self, family_id: str) -> None:
        super().__init__("refresh token was already used; every token of this sign-in is now revoked", "REFRESH_TOKEN_REUSED")
        self.family_id = family_id


class CredentialsMissing(DomainError):
    code = "VALIDATION_FAILED"


class SignInThrottled(Exception):
    """Too many failed sign-ins for this account or address: try again in `retry_after` seconds (429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; retry after {retry_after}s")
        self.message = str(self)
        self.retry_after = retry_after


class PasswordChangeRequired(Exception):
    """The password was right but is a temporary one (an administrator reset it): it must be changed first,
    with `token`, good only for `POST /auth/change-password` and for `expires_in` seconds (403)."""

    def __init__(self, token: str, expires_in: int) -> None:
        super().__init__("this password was reset by an administrator: change it before signing in")
        self.message = str(self)
        self.token = token
        self.expires_in = expires_in


class NoFailures:
    """The security log when none is configured (unit tests)."""

    async def failed(self, account: str, user_id: str | None, client: Client, reason: str) -> None:
        return None


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token lives


def deactivated() -> AuthenticationFailed:
    return AuthenticationFailed("this account is deactivated", "USER_INACTIVE")


@dataclass
class SignIn:
    """Sign-in, refresh and logout over the ports: the users' streams (through `identity`), password hashes,
    the token signer, the refresh-token store, the failed sign-in throttle and this process's access cache.
    `dummy_hash` is checked for an unknown account, so that its answer takes as long as a known one's."""

    identity: IdentityServices
    passwords: Passwords
    tokens: TokenIssuer
    refresh_tokens: RefreshTokenStore
    throttle: LoginThrottle
    sessions: AccessCache
    dummy_hash: str
    execute: Execute | None = None  # the command bus; None: the account handlers are run directly
    failures: SignInFailures = NoFailures()

    async def login(self, who: str | None, password: str, address: str, user_agent: str = "") -> IssuedTokens:
        """Tokens of a new sign-in for the account `who` (an e-mail address) and its password, recorded in
        the user's stream (User.SignedIn). A failure is recorded in the security log, never as an event."""
        if not who or not password:
            raise CredentialsMissing("username (or email) and password are required", field="username")
        where = client(address, user_agent)
        attempt = await self.throttle.attempt(who, address)
        if attempt.retry_after:
            await self.failures.failed(who, None, where, "throttled")
            raise SignInThrottled(attempt.retry_after)
        try:
            user_id = await find_user_id(self.identity, who)
        except DomainError:  # not an e-mail address: it answers as an unknown account
            user_id = None
        user = await self.user(user_id) if user_id else None
        # An unknown account costs the same argon2 check as a known one: the time tells nothing.
        password_hash = user.password_hash if user is not None else self.dummy_hash
        if not await self.passwords.verify(password_hash, password) or user is None:
            await self.failures.failed(who, str(user.id) if user else None, where, "invalid_credentials")
            raise AuthenticationFailed(INVALID_CREDENTIALS, "INVALID_CREDENTIALS")
        await self.throttle.succeeded(attempt)
        if not user.active:
            await self.failures.failed(who, str(user.id), where, "inactive")
            raise deactivated()
        if user.password_change_required:
            raise PasswordChangeRequired(*self.tokens.issue_password_change(str(user.id)))
        family = uuid.uuid4().hex
        await self._record(accounts.RecordSignIn(str(user.id), family, where.address, where.user_agent), str(user.id))
        return await self._issue(user, family, client=where)

    async def change_password(
        self, user_id: str, current: str, new: str, session: str | None, address: str, user_agent: str = ""
    ) -> CommandResult:
        """The user's own new password: the current one is checked under the failed sign-in backoff (a
        guess here costs what a guess at login costs); every other sign-in ends."""
        user = await self.user(user_id)
        if user is None:
            raise AuthenticationFailed("this account no longer exists", "AUTHENTICATION_FAILED")
        where = client(address, user_agent)
        attempt = await self.throttle.attempt(user.email, address)
        if attempt.retry_after:
            raise SignInThrottled(attempt.retry_after)
        command = accounts.ChangePassword(
            user_id=user_id, password=new, current_password=current, keep_session=session,
            client_address=where.address, user_agent=where.user_agent,
        )  # fmt: skip
        try:
            result = await self._record(command, user_id)
        except CurrentPasswordWrong:
            await self.failures.failed(user.email, user_id, where, "wrong_current_password")
            raise
        except DomainError:  # refused after the current password was found right (the policy): no failure
            await self.throttle.succeeded(attempt)
            raise
        await self.throttle.succeeded(attempt)
        return result

    async def _record(self, command: Command, actor: str) -> CommandResult:
        ctx = CommandContext(actor=actor)
        if self.execute is not None:
            return await self.execute(command, ctx)
        return await accounts.HANDLERS[type(command)](command, ctx, self.identity)  # type: ignore[operator]

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        """Rotate a refresh token: new tokens of the same sign-in. A token presented a second time is
        taken as stolen: its whole sign-in ends, here at once."""
        try:
            grant, fresh = await self.refresh_tokens.rotate(refresh_token)
        except RefreshTokenReused as exc:
            self.sessions.end_sessions(exc.family_id)
            raise
        user = await self.user(grant.user_id)
        if user is None or not user.active:
            await self.refresh_tokens.revoke(fresh)
            self.sessions.end_sessions(grant.family_id)
            raise deactivated()
        return await self._issue(user, grant.family_id, refresh=fresh)

    async def logout(
        self, refresh_token: str, issuer: str | None, session: str | None, user_id: str | None = None,
        address: str = "", user_agent: str = "",
    ) -> None:
        """End the caller's sign-in (`session`, from its access token when this server issued it) and the
        one `refresh_token` belongs to (normally the same): refresh and access tokens stop working. The
        caller's own sign-in ending is recorded in its stream (User.SignedOut)."""
        own = session if session and issuer == self.tokens.issuer else None
        if own:
            await self.refresh_tokens.revoke_family(own)
        given = await self.refresh_tokens.revoke(refresh_token)
        self.sessions.end_sessions(own, given)
        ended = own or given
        if ended and user_id and await self.user(user_id) is not None:
            where = client(address, user_agent)
            await self._record(accounts.RecordSignOut(user_id, ended, where.address, where.user_agent), user_id)

    async def user(self, user_id: str) -> User | None:
        """The user as its stream has it now (None when `user_id` names nobody)."""
        try:
            uid = UUID(user_id)
        except ValueError:
            return None
        loaded = await self.identity.repository.load(User, USER_STREAM, str(uid), uid)
        return loaded.aggregate

    async def _issue(
        self, user: User, family: str | None = None, refresh: str | None = None, client: Client | None = None
    ) -> IssuedTokens:
        family = family or uuid.uuid4().hex
        grants = [(g.role, g.site_id) for g in user.grants]
        access, ttl = self.tokens.issue(str(user.id), grants, user.email, session=family)
        if refresh is None:
            refresh = await self.refresh_tokens.issue(str(user.id), family, client)
        return IssuedTokens(access, refresh, ttl)
