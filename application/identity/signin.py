"""Signing in, refreshing and signing out: the use cases behind `/api/v1/auth` (and any other interface).

A sign-in is a refresh-token family; every access token it yields names it (`sid`), so ending the sign-in
(logout, a stolen refresh token presented twice, a deactivated account) ends its access tokens at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from uuid import UUID

from application.identity.handlers import IdentityServices, find_user_id
from application.ports import AccessCache, LoginThrottle, Passwords, RefreshTokenStore, TokenIssuer
from domain.errors import DomainError
from domain.identity.user import STREAM_TYPE as USER_STREAM
from domain.identity.user import User

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

    async def login(self, who: str | None, password: str, address: str) -> IssuedTokens:
        """Tokens of a new sign-in for the account `who` (an e-mail address) and its password."""
        if not who or not password:
            raise CredentialsMissing("username (or email) and password are required", field="username")
        attempt = await self.throttle.attempt(who, address)
        if attempt.retry_after:
            raise SignInThrottled(attempt.retry_after)
        try:
            user_id = await find_user_id(self.identity, who)
        except DomainError:  # not an e-mail address: it answers as an unknown account
            user_id = None
        user = await self.user(user_id) if user_id else None
        # An unknown account costs the same argon2 check as a known one: the time tells nothing.
        password_hash = user.password_hash if user is not None else self.dummy_hash
        if not await self.passwords.verify(password_hash, password) or user is None:
            raise AuthenticationFailed(INVALID_CREDENTIALS, "INVALID_CREDENTIALS")
        await self.throttle.succeeded(attempt)
        if not user.active:
            raise deactivated()
        return await self._issue(user)

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

    async def logout(self, refresh_token: str, issuer: str | None, session: str | None) -> None:
        """End the caller's sign-in (`session`, from its access token when this server issued it) and the
        one `refresh_token` belongs to (normally the same): refresh and access tokens stop working."""
        own = session if session and issuer == self.tokens.issuer else None
        if own:
            await self.refresh_tokens.revoke_family(own)
        given = await self.refresh_tokens.revoke(refresh_token)
        self.sessions.end_sessions(own, given)

    async def user(self, user_id: str) -> User | None:
        """The user as its stream has it now (None when `user_id` names nobody)."""
        try:
            uid = UUID(user_id)
        except ValueError:
            return None
        loaded = await self.identity.repository.load(User, USER_STREAM, str(uid), uid)
        return loaded.aggregate

    async def _issue(self, user: User, family: str | None = None, refresh: str | None = None) -> IssuedTokens:
        family = family or uuid.uuid4().hex
        grants = [(g.role, g.site_id) for g in user.grants]
        access, ttl = self.tokens.issue(str(user.id), grants, user.email, session=family)
        if refresh is None:
            refresh = await self.refresh_tokens.issue(str(user.id), family)
        return IssuedTokens(access, refresh, ttl)
