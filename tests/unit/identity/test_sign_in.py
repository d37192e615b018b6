"""Sign-in, refresh and logout (application/identity/signin.py) against in-memory fakes of every port:
given the accounts and tokens there are → a use case → tokens, or a refusal, and what the ports were told."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from application.context import CommandContext
from application.identity.handlers import DeactivateUser, GrantRole, RegisterUser, CreateRole
from application.identity.handlers import create_role, deactivate_user, grant_role, register_user
from application.identity.signin import AuthenticationFailed, CredentialsMissing, RefreshTokenReused, SignIn, SignInThrottled
from tests.unit.identity.sign_in_fakes import (
    FakeAccessCache,
    FakePasswords,
    FakeRefreshTokens,
    FakeThrottle,
    FakeTokens,
    InMemoryRepository,
    identity_services,
)

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"
ADDRESS = "192.0.2.7"
DUMMY = "hashed:not a password of anyone"
SYSTEM = CommandContext()


@dataclass
class World:
    sign_in: SignIn
    passwords: FakePasswords
    tokens: FakeTokens
    refresh_tokens: FakeRefreshTokens
    throttle: FakeThrottle
    cache: FakeAccessCache

    async def account(self, email: str = EMAIL, active: bool = True) -> str:
        result = await register_user(RegisterUser(email=email, password=PASSWORD, active=active), SYSTEM, self.sign_in.identity)
        return result.stream_id.split(":", 1)[1]


@pytest.fixture
def world() -> World:
    identity = identity_services(InMemoryRepository())
    passwords = FakePasswords()
    identity.passwords = passwords
    made = World(None, passwords, FakeTokens(), FakeRefreshTokens(), FakeThrottle(), FakeAccessCache())  # type: ignore[arg-type]
    made.sign_in = SignIn(identity, passwords, made.tokens, made.refresh_tokens, made.throttle, made.cache, DUMMY)
    return made


class TestLogin:
    async def test_the_right_password_yields_tokens_of_a_new_sign_in(self, world: World) -> None:
        user_id = await world.account()

        issued = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)

        [token] = world.tokens.issued
        assert token == {"subject": user_id, "grants": [], "name": EMAIL, "session": token["session"]}
        assert world.refresh_tokens.tokens[issued.refresh_token].family_id == token["session"]
        assert (issued.access_token, issued.expires_in) == ("access-1", 900)
        assert world.throttle.attempts == [(EMAIL, ADDRESS)]
        assert len(world.throttle.succeeded_with) == 1

    async def test_the_address_is_found_in_any_case(self, world: World) -> None:
        await world.account()

        issued = await world.sign_in.login(EMAIL.upper(), PASSWORD, ADDRESS)

        assert issued.access_token

    async def test_the_tokens_carry_the_users_grants(self, world: World) -> None:
        user_id = await world.account()
        identity = world.sign_in.identity
        await create_role(CreateRole(name="reviewer", permissions=["plugins:read"]), SYSTEM, identity)
        await grant_role(GrantRole(user_id=user_id, role="reviewer", site_id="lyon"), SYSTEM, identity)

        await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)

        assert world.tokens.issued[0]["grants"] == [("reviewer", "lyon")]

    async def test_a_wrong_password_is_refused_and_stays_charged(self, world: World) -> None:
        await world.account()

        with pytest.raises(AuthenticationFailed) as refused:
            await world.sign_in.login(EMAIL, "wrong password", ADDRESS)

        assert refused.value.code == "INVALID_CREDENTIALS"
        assert world.throttle.succeeded_with == []
        assert world.tokens.issued == [] and world.refresh_tokens.tokens == {}

    @pytest.mark.parametrize("who", ["nobody@example.com", "no-at-sign"], ids=["unknown", "not-an-address"])
    async def test_an_unknown_account_costs_a_check_of_the_dummy_hash_and_answers_alike(self, world: World, who: str) -> None:
        await world.account()

        with pytest.raises(AuthenticationFailed) as refused:
            await world.sign_in.login(who, PASSWORD, ADDRESS)

        assert (refused.value.code, refused.value.message) == ("INVALID_CREDENTIALS", "unknown user or wrong password")
        assert world.passwords.verified == [(DUMMY, PASSWORD)]

    async def test_a_throttled_attempt_is_refused_before_any_password_check(self, world: World) -> None:
        await world.account()
        world.throttle.wait = 12

        with pytest.raises(SignInThrottled) as throttled:
            await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)

        assert throttled.value.retry_after == 12
        assert world.passwords.verified == []

    async def test_a_deactivated_account_is_refused_once_its_password_was_right(self, world: World) -> None:
        await world.account(active=False)

        with pytest.raises(AuthenticationFailed) as refused:
            await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)

        assert refused.value.code == "USER_INACTIVE"
        assert len(world.throttle.succeeded_with) == 1  # the password was right: the account starts afresh
        assert world.tokens.issued == []

    @pytest.mark.parametrize(("who", "password"), [(None, PASSWORD), ("", PASSWORD), (EMAIL, "")])
    async def test_missing_credentials_are_bad_input(self, world: World, who: str | None, password: str) -> None:
        with pytest.raises(CredentialsMissing) as missing:
            await world.sign_in.login(who, password, ADDRESS)

        assert missing.value.code == "VALIDATION_FAILED" and missing.value.details == {"field": "username"}
        assert world.throttle.attempts == []


class TestRefresh:
    async def test_rotates_the_token_within_the_same_sign_in(self, world: World) -> None:
        await world.account()
        first = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)

        second = await world.sign_in.refresh(first.refresh_token)

        family = world.tokens.issued[0]["session"]
        assert world.tokens.issued[1]["session"] == family
        assert second.refresh_token != first.refresh_token
        assert world.refresh_tokens.live(family) == [second.refresh_token]

    async def test_a_reused_token_ends_the_sign_in_here_at_once(self, world: World) -> None:
        await world.account()
        first = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)
        await world.sign_in.refresh(first.refresh_token)

        with pytest.raises(RefreshTokenReused) as reused:
            await world.sign_in.refresh(first.refresh_token)

        family = world.tokens.issued[0]["session"]
        assert reused.value.code == "REFRESH_TOKEN_REUSED"
        assert world.cache.calls == [("end_sessions", family)]
        assert world.refresh_tokens.live(family) == []

    async def test_an_unknown_token_is_refused(self, world: World) -> None:
        with pytest.raises(AuthenticationFailed) as refused:
            await world.sign_in.refresh("made-up")

        assert refused.value.code == "REFRESH_TOKEN_INVALID"

    async def test_a_deactivated_users_token_is_refused_and_its_sign_in_ended(self, world: World) -> None:
        user_id = await world.account()
        first = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)
        await deactivate_user(DeactivateUser(user_id=user_id), SYSTEM, world.sign_in.identity)

        with pytest.raises(AuthenticationFailed) as refused:
            await world.sign_in.refresh(first.refresh_token)

        family = world.tokens.issued[0]["session"]
        assert refused.value.code == "USER_INACTIVE"
        assert world.refresh_tokens.live(family) == []  # the token rotation just made is revoked too
        assert world.cache.calls == [("end_sessions", family)]
        assert len(world.tokens.issued) == 1


class TestLogout:
    async def test_ends_the_callers_sign_in_and_the_one_of_the_given_token(self, world: World) -> None:
        await world.account()
        mine = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)
        other = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)
        session, other_session = (t["session"] for t in world.tokens.issued)

        await world.sign_in.logout(other.refresh_token, "charter", session)

        assert world.refresh_tokens.live(session) == [] and world.refresh_tokens.live(other_session) == []
        assert world.cache.calls == [("end_sessions", session, other_session)]
        assert mine.refresh_token not in [t for t, i in world.refresh_tokens.tokens.items() if not i.revoked]

    async def test_a_session_named_by_another_issuers_token_is_not_ours_to_end(self, world: World) -> None:
        await world.account()
        mine = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)
        session = world.tokens.issued[0]["session"]
        other = await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)

        await world.sign_in.logout(other.refresh_token, "https://idp.example.com", session)

        assert world.refresh_tokens.live(session) == [mine.refresh_token]
        assert world.cache.calls == [("end_sessions", None, world.tokens.issued[1]["session"])]

    async def test_an_unknown_refresh_token_still_ends_the_callers_sign_in(self, world: World) -> None:
        await world.account()
        await world.sign_in.login(EMAIL, PASSWORD, ADDRESS)
        session = world.tokens.issued[0]["session"]

        await world.sign_in.logout("made-up", "charter", session)

        assert world.refresh_tokens.live(session) == []
        assert world.cache.calls == [("end_sessions", session, None)]


class TestUser:
    async def test_answers_the_user_as_its_stream_has_it(self, world: World) -> None:
        user_id = await world.account()

        user = await world.sign_in.user(user_id)

        assert user is not None and (user.email, user.active) == (EMAIL, True)

    @pytest.mark.parametrize("user_id", ["not-a-uuid", "6f1c1f9e-4d5b-4c0e-9a53-4b7f7f1d2c11"])
    async def test_nobody_for_an_unknown_or_malformed_id(self, world: World, user_id: str) -> None:
        assert await world.sign_in.user(user_id) is None
