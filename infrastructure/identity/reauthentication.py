"""Re-authentication at signing (application/sites/ports.py `Reauthentication`): the signer's password,
checked against the argon2 hash in their user stream, or an access token of theirs issued less than
`max_age` seconds ago (its `iat` claim), verified as every access token is."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from application.unit import Repository
from domain.identity.user import STREAM_TYPE as USER_STREAM
from domain.identity.user import User
from domain.sites.errors import ReauthenticationFailed
from infrastructure.identity.tokens import Argon2Passwords, AuthenticationFailed, Claims, TokenService

MAX_AGE = 300.0  # seconds: "an access token issued less than 5 minutes ago"
CLOCK_SKEW = 30.0  # an `iat` this far in the future is still accepted (replicas' clocks differ a little)
REFUSED = "re-authenticate to sign: your password, or an access token issued less than 5 minutes ago"


class SignerReauthentication:
    def __init__(
        self,
        repository: Repository,
        passwords: Argon2Passwords,
        tokens: TokenService,
        *,
        dummy_hash: str,
        max_age: float = MAX_AGE,
        revoked: Callable[[Claims], bool] = lambda _claims: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repository = repository
        self.passwords = passwords
        self.tokens = tokens
        self.dummy_hash = dummy_hash  # checked when the user has no hash: every refusal costs the same
        self.max_age = max_age
        self.revoked = revoked
        self.clock = clock

    async def confirm(self, user_id: str, password: str | None, access_token: str | None) -> None:
        if password is not None:
            if await self._password_holds(user_id, password):
                return
        elif access_token is not None:
            if await self._token_is_fresh(user_id, access_token):
                return
        raise ReauthenticationFailed(REFUSED)

    async def _password_holds(self, user_id: str, password: str) -> bool:
        try:
            uid = UUID(user_id)
        except ValueError:
            return False
        user = (await self.repository.load(User, USER_STREAM, str(uid), uid)).aggregate
        stored = user.password_hash if user is not None and user.active else self.dummy_hash
        return await self.passwords.verify(stored, password) and user is not None and user.active

    async def _token_is_fresh(self, user_id: str, token: str) -> bool:
        try:
            claims = await self.tokens.verify(token)
        except AuthenticationFailed:
            return False
        issued = claims.raw.get("iat")
        if claims.subject != user_id or claims.purpose is not None or not isinstance(issued, (int, float)) or self.revoked(claims):
            return False
        age = self.clock() - float(issued)
        return -CLOCK_SKEW <= age < self.max_age
