"""Re-authentication at signing: a password against the user's argon2 hash, or a fresh access token."""

from __future__ import annotations

import time

import pytest

from domain.identity.user import User
from domain.sites.errors import ReauthenticationFailed
from infrastructure.identity.tokens import Argon2Passwords, TokenService
from infrastructure.identity.reauthentication import SignerReauthentication
from tests.unit.sites.fakes import MemoryRepository

SIGNING_KEY = "a signing key for these tests only"


@pytest.fixture
async def setup() -> tuple[SignerReauthentication, str, TokenService, list[float]]:
    passwords = Argon2Passwords()
    repository = MemoryRepository()
    user = User(email="ann@example.com", full_name="Ann", password_hash=await passwords.hash("correct horse"), active=True)
    fresh = repository.new("user", str(user.id))
    fresh.aggregate = user
    await repository.save(fresh, {})
    tokens = TokenService(SIGNING_KEY, access_ttl=3600)
    now = [time.time()]
    reauth = SignerReauthentication(repository, passwords, tokens, dummy_hash=await passwords.hash("dummy"),
                                    clock=lambda: now[0])
    return reauth, str(user.id), tokens, now


class TestPassword:
    async def test_the_right_password_confirms(self, setup) -> None:
        reauth, user_id, _, _ = setup

        await reauth.confirm(user_id, "correct horse", None)

    @pytest.mark.parametrize("password", ["wrong", "", "correct horse "])
    async def test_a_wrong_password_is_refused(self, setup, password: str) -> None:
        reauth, user_id, _, _ = setup

        with pytest.raises(ReauthenticationFailed):
            await reauth.confirm(user_id, password, None)

    async def test_an_unknown_user_is_refused(self, setup) -> None:
        reauth, _, _, _ = setup

        with pytest.raises(ReauthenticationFailed):
            await reauth.confirm("3f2b1c9e-0000-4000-8000-000000000000", "correct horse", None)


class TestAccessToken:
    async def test_a_token_issued_a_moment_ago_confirms(self, setup) -> None:
        reauth, user_id, tokens, _ = setup
        token, _ = tokens.issue(user_id, [])

        await reauth.confirm(user_id, None, token)

    async def test_a_token_issued_more_than_five_minutes_ago_is_refused(self, setup) -> None:
        reauth, user_id, tokens, now = setup
        token, _ = tokens.issue(user_id, [])
        now[0] += 301

        with pytest.raises(ReauthenticationFailed):
            await reauth.confirm(user_id, None, token)

    async def test_another_users_token_is_refused(self, setup) -> None:
        reauth, user_id, tokens, _ = setup
        token, _ = tokens.issue("someone-else", [])

        with pytest.raises(ReauthenticationFailed):
            await reauth.confirm(user_id, None, token)

    async def test_a_forged_token_is_refused(self, setup) -> None:
        reauth, user_id, _, _ = setup
        forged, _ = TokenService("another key").issue(user_id, [])

        with pytest.raises(ReauthenticationFailed):
            await reauth.confirm(user_id, None, forged)

    async def test_nothing_given_is_refused(self, setup) -> None:
        reauth, user_id, _, _ = setup

        with pytest.raises(ReauthenticationFailed):
            await reauth.confirm(user_id, None, None)
