"""Accounts against in-memory fakes: the password policy's rules, the account commands (given a user →
command → events or a refusal), the reactions that end sign-ins, and sign-in recording its history."""

from __future__ import annotations

from uuid import UUID

import pytest

from application.bus import ReactingRepository, Reactions
from application.context import CommandContext
from application.identity.accounts import ChangePassword, EndSessions, ResetPassword, UpdateProfile
from application.identity.accounts import HANDLERS as ACCOUNT_HANDLERS
from application.identity.handlers import RegisterUser, register_user
from application.identity.reactions import REACTIONS, AccessServices
from application.identity.signin import AuthenticationFailed, PasswordChangeRequired, SignIn
from domain.identity.errors import CurrentPasswordWrong, SessionNotFound, WeakPassword
from domain.identity.passwords import PasswordPolicy
from domain.identity.user import MAX_USER_AGENT, User, client
from tests.unit.identity.sign_in_fakes import (
    FakeAccessCache,
    FakeFailures,
    FakePasswords,
    FakeRefreshTokens,
    FakeThrottle,
    FakeTokens,
    InMemoryRepository,
    identity_services,
)

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"
NEW = "a new passphrase here"


class TestPasswordPolicy:
    policy = PasswordPolicy(min_length=10, common=frozenset({"qwertyuiop1"}))

    @pytest.mark.parametrize(
        ("password", "rule"), [("short", "min_length"), ("QWERTYUIOP1", "not_common"), ("ADA@example.com", "not_email"), ("ada@Example.com", "not_email")]
    )
    def test_each_rule_refuses_naming_itself_and_the_field(self, password: str, rule: str) -> None:
        with pytest.raises(WeakPassword) as refused:
            self.policy.check(password, EMAIL, "new_password")
        assert refused.value.details["rule"] == rule and refused.value.details["field"] == "new_password"

    def test_a_password_passing_every_rule_is_accepted(self) -> None:
        self.policy.check("ada's long passphrase", EMAIL)

    def test_the_local_part_alone_is_refused_when_long_enough(self) -> None:
        with pytest.raises(WeakPassword):
            PasswordPolicy(min_length=3).check("Ada", EMAIL)


def test_client_strings_are_printable_and_bounded() -> None:
    where = client("192.0.2.1\n", "x\x00y" + "z" * 1000)
    assert where.address == "192.0.2.1" and len(where.user_agent) == MAX_USER_AGENT and where.user_agent.startswith("xy")


@pytest.fixture
def world():
    repository = InMemoryRepository()
    identity = identity_services(repository)
    refresh_tokens, cache, failures = FakeRefreshTokens(), FakeAccessCache(), FakeFailures()
    identity.sessions = refresh_tokens
    reactions = Reactions()
    reactions.register(REACTIONS, AccessServices(refresh_tokens, cache))
    identity.repository = ReactingRepository(repository, reactions)
    sign_in = SignIn(
        identity, identity.passwords, FakeTokens(), refresh_tokens, FakeThrottle(), cache, "hashed:nobody", failures=failures
    )
    return sign_in


async def account(sign_in: SignIn) -> str:
    result = await register_user(RegisterUser(email=EMAIL, password=PASSWORD), CommandContext(), sign_in.identity)
    return result.stream_id.split(":", 1)[1]


async def run(sign_in: SignIn, command, actor: str):
    return await ACCOUNT_HANDLERS[type(command)](command, CommandContext(actor=actor), sign_in.identity)


async def events(sign_in: SignIn, user_id: str) -> list[str]:
    stream = sign_in.identity.repository.inner.streams[f"user:{user_id}"]
    return [type(e).__qualname__ for e in stream]


class TestSignInHistory:
    async def test_a_sign_in_is_recorded_with_its_session_address_and_agent(self, world: SignIn) -> None:
        user_id = await account(world)

        await world.login(EMAIL, PASSWORD, "192.0.2.7", "tests/1")

        stream = world.identity.repository.inner.streams[f"user:{user_id}"]
        signed_in = stream[-1]
        assert type(signed_in).__qualname__ == "User.SignedIn"
        assert (signed_in.client_address, signed_in.user_agent) == ("192.0.2.7", "tests/1")
        assert signed_in.session_id == world.refresh_tokens.tokens["refresh-1"].family_id

    async def test_a_failed_sign_in_records_no_event_but_a_security_log_entry(self, world: SignIn) -> None:
        user_id = await account(world)
        before = await events(world, user_id)

        with pytest.raises(AuthenticationFailed):
            await world.login(EMAIL, "wrong", "192.0.2.7")

        assert await events(world, user_id) == before
        assert world.failures.recorded == [(EMAIL, user_id, "invalid_credentials")]

    async def test_a_reset_password_answers_a_change_token_instead_of_tokens(self, world: SignIn) -> None:
        user_id = await account(world)
        await run(world, ResetPassword(user_id=user_id, password="temporary one"), "admin")

        with pytest.raises(PasswordChangeRequired) as required:
            await world.login(EMAIL, "temporary one", "192.0.2.7")

        assert required.value.token.startswith("password-change-")
        await world.change_password(user_id, "temporary one", NEW, None, "192.0.2.7")
        assert (await world.login(EMAIL, NEW, "192.0.2.7")).access_token


class TestChangePassword:
    async def test_the_current_password_must_match(self, world: SignIn) -> None:
        user_id = await account(world)
        with pytest.raises(CurrentPasswordWrong):
            await world.change_password(user_id, "not it", NEW, None, "192.0.2.7")
        assert world.failures.recorded[-1][2] == "wrong_current_password"

    async def test_every_other_session_ends_and_this_one_stays(self, world: SignIn) -> None:
        user_id = await account(world)
        mine = await world.login(EMAIL, PASSWORD, "a")
        other = await world.login(EMAIL, PASSWORD, "b")
        kept = world.refresh_tokens.tokens[mine.refresh_token].family_id
        ended = world.refresh_tokens.tokens[other.refresh_token].family_id

        await world.change_password(user_id, PASSWORD, NEW, kept, "a")

        assert world.refresh_tokens.live(kept) and not world.refresh_tokens.live(ended)
        assert ("end_sessions", ended) in world.sessions.calls
        assert (await events(world, user_id))[-1] == "User.PasswordChanged"

    async def test_the_new_password_must_differ_from_the_current_one(self, world: SignIn) -> None:
        user_id = await account(world)
        with pytest.raises(WeakPassword) as refused:
            await run(world, ChangePassword(user_id=user_id, password=PASSWORD, current_password=PASSWORD), user_id)
        assert refused.value.details["rule"] == "not_current"

    async def test_with_the_current_password_only_the_user_may_change_it(self, world: SignIn) -> None:
        user_id = await account(world)
        with pytest.raises(CurrentPasswordWrong):
            await run(world, ChangePassword(user_id=user_id, password=NEW, current_password=PASSWORD), "someone-else")


class TestSessions:
    async def test_ending_a_session_of_someone_else_is_not_found(self, world: SignIn) -> None:
        user_id = await account(world)
        with pytest.raises(SessionNotFound):
            await run(world, EndSessions(user_id=user_id, session_id="family-unknown"), "admin")

    async def test_ending_one_session_revokes_its_family_after_the_commit(self, world: SignIn) -> None:
        user_id = await account(world)
        issued = await world.login(EMAIL, PASSWORD, "a")
        family = world.refresh_tokens.tokens[issued.refresh_token].family_id

        await run(world, EndSessions(user_id=user_id, session_id=family, reason="lost"), "admin")

        assert not world.refresh_tokens.live(family)
        assert ("end_sessions", family) in world.sessions.calls
        assert (await events(world, user_id))[-1] == "User.SessionRevoked"

    async def test_a_reset_ends_every_session(self, world: SignIn) -> None:
        user_id = await account(world)
        issued = await world.login(EMAIL, PASSWORD, "a")
        family = world.refresh_tokens.tokens[issued.refresh_token].family_id

        await run(world, ResetPassword(user_id=user_id, password="temporary one"), "admin")

        assert not world.refresh_tokens.live(family)


async def test_the_display_name_is_trimmed_and_unchanged_names_record_nothing(world: SignIn) -> None:
    user_id = await account(world)
    await run(world, UpdateProfile(user_id=user_id, full_name=" Ada L. "), user_id)
    await run(world, UpdateProfile(user_id=user_id, full_name="Ada L."), user_id)
    assert (await events(world, user_id)).count("User.Renamed") == 1
    loaded = await world.identity.repository.load(User, "user", user_id, UUID(user_id))
    assert loaded.aggregate.full_name == "Ada L."
