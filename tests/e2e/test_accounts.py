"""Accounts through HTTP: changing one's password (and each refusal), the display name, an administrator's
password reset and the change it forces, sessions listed and ended (their access tokens refused at once),
the sign-in history in the user's stream with the right actor, last_login_at, and failed sign-ins kept
out of the event log."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.e2e.access_kit import (
    AUTH,
    EVENTS,
    PASSWORD,
    USERS,
    account_with,
    admin_id,
    assert_denied,
    assert_error,
    create_user,
    grant,
    login,
    me,
    send,
    sign_in,
    unique_email,
)

NEW_PASSWORD = "a brand new passphrase"
AGENT = {"User-Agent": "accounts-e2e/1.0"}


async def change_password(client: Any, token: str, current: str, new: str) -> Any:
    body = {"current_password": current, "new_password": new}
    return await send(client, "POST", f"{AUTH}/change-password", json=body, token=token, headers=AGENT)


async def history(client: Any, user_id: str) -> list[dict[str, Any]]:
    """The user's sign-in history, oldest first, as the administrator reads it."""
    response = await send(client, "GET", f"{USERS}/{user_id}/audit-trail", params={"history": "true", "sort_order": "asc"})
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def event_count(client: Any) -> int:
    """The events of the log a request could have caused (not what the server writes by itself meanwhile:
    the sealer's checkpoints, scheduled task runs)."""
    total = 0
    for stream_type in ("user", "role", "permission", "plugin", "site"):
        response = await send(client, "GET", EVENTS, params={"limit": 1, "stream_type": stream_type})
        assert response.status_code == 200, response.text
        total += response.json()["total"]
    return total


class TestChangePassword:
    async def test_the_new_password_signs_in_and_every_other_session_ends_at_once(self, client) -> None:
        account = await sign_in(await create_user(client), client)
        other = await login(client, account.email)  # a second sign-in, elsewhere

        response = await change_password(client, account.access_token, PASSWORD, NEW_PASSWORD)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == account.id
        assert (await me(client, account.access_token)).status_code == 200  # this sign-in goes on
        assert_error(await me(client, other["access_token"]), 401, "SESSION_REVOKED")
        refreshed = await send(client, "POST", f"{AUTH}/refresh", json={"refresh_token": other["refresh_token"]}, anonymous=True)
        assert_error(refreshed, 401, "REFRESH_TOKEN_REVOKED")
        await login(client, account.email, NEW_PASSWORD)
        wrong = await send(client, "POST", f"{AUTH}/login", json={"username": account.email, "password": PASSWORD}, anonymous=True)
        assert_error(wrong, 401, "INVALID_CREDENTIALS")

    async def test_a_wrong_current_password_is_refused(self, client) -> None:
        account = await sign_in(await create_user(client), client)

        response = await change_password(client, account.access_token, "not the password", NEW_PASSWORD)

        assert_error(response, 403, "CURRENT_PASSWORD_WRONG", field="current_password")
        await login(client, account.email)  # unchanged

    @pytest.mark.parametrize(
        ("new", "rule"),
        [("short", "min_length"), ("qwertyuiop", "not_common"), ("Password1", "not_common"), (None, "not_email"), (PASSWORD, "not_current")],
    )
    async def test_each_rule_of_the_policy_answers_400_naming_it(self, client, new: str | None, rule: str) -> None:
        account = await sign_in(await create_user(client), client)
        new = new or account.email.upper()

        response = await change_password(client, account.access_token, PASSWORD, new)

        error = assert_error(response, 400, "VALIDATION_FAILED", field="new_password")
        assert error["details"]["rule"] == rule, error
        await login(client, account.email)  # unchanged

    async def test_the_policy_holds_for_accounts_an_administrator_creates(self, client) -> None:
        response = await send(client, "POST", USERS, json={"email": unique_email(), "password": "iloveyou"})
        assert response.status_code == 400 and response.json()["error"]["details"]["rule"] in {"min_length", "not_common"}
        response = await send(client, "POST", USERS, json={"email": unique_email(), "password": "football1"})
        assert response.status_code == 201, response.text  # not in the list: allowed
        response = await send(client, "POST", USERS, json={"email": unique_email(), "password": "superman"})
        error = assert_error(response, 400, "VALIDATION_FAILED", field="password")
        assert error["details"]["rule"] == "not_common"

    async def test_needs_a_token(self, client) -> None:
        body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        assert_error(await send(client, "POST", f"{AUTH}/change-password", json=body, anonymous=True), 401, "AUTHENTICATION_REQUIRED")


class TestDisplayName:
    async def test_the_user_changes_their_display_name(self, client) -> None:
        account = await sign_in(await create_user(client, full_name="Old Name"), client)

        response = await send(client, "PUT", f"{AUTH}/me", json={"full_name": "  New Name "}, token=account.access_token)

        assert response.status_code == 200, response.text
        assert (await me(client, account.access_token)).json()["full_name"] == "New Name"
        detail = await send(client, "GET", f"{USERS}/{account.id}", params={"consistent": "true"})
        assert detail.json()["full_name"] == "New Name"

    async def test_a_name_too_long_or_an_unknown_field_is_refused(self, client) -> None:
        account = await sign_in(await create_user(client), client)
        long = await send(client, "PUT", f"{AUTH}/me", json={"full_name": "x" * 201}, token=account.access_token)
        assert_error(long, 400, "VALIDATION_FAILED", field="full_name")
        other = await send(client, "PUT", f"{AUTH}/me", json={"full_name": "a", "email": "b@c.d"}, token=account.access_token)
        assert_error(other, 400, "VALIDATION_FAILED", field="email")


class TestResetPassword:
    async def test_a_made_temporary_password_must_be_changed_before_signing_in(self, client) -> None:
        account = await sign_in(await create_user(client), client)

        reset = await send(client, "POST", f"{USERS}/{account.id}/reset-password")

        assert reset.status_code == 200, reset.text
        body = reset.json()
        temporary = body["temporary_password"]
        assert body["credentials_expired"] is True and len(temporary) >= 16
        assert reset.headers.get("cache-control") == "no-store"
        assert_error(await me(client, account.access_token), 401, "SESSION_REVOKED")  # sign-ins end at once
        refused = await send(client, "POST", f"{AUTH}/login", json={"username": account.email, "password": temporary}, anonymous=True)
        error = assert_error(refused, 403, "PASSWORD_CHANGE_REQUIRED")
        token = error["details"]["password_change_token"]
        assert_error(await me(client, token), 403, "PASSWORD_CHANGE_REQUIRED")  # good for one route only
        detail = await send(client, "GET", f"{USERS}/{account.id}", params={"consistent": "true"})
        assert detail.json()["credentials_expired"] is True

        changed = await change_password(client, token, temporary, NEW_PASSWORD)

        assert changed.status_code == 200, changed.text
        await login(client, account.email, NEW_PASSWORD)
        detail = await send(client, "GET", f"{USERS}/{account.id}", params={"consistent": "true"})
        assert detail.json()["credentials_expired"] is False

    async def test_a_given_temporary_password_is_not_answered_back(self, client) -> None:
        account = await create_user(client)

        reset = await send(client, "POST", f"{USERS}/{account.id}/reset-password", json={"temporary_password": "given temporary one"})

        assert reset.status_code == 200, reset.text
        assert reset.json()["temporary_password"] is None
        refused = await send(client, "POST", f"{AUTH}/login", json={"username": account.email, "password": "given temporary one"}, anonymous=True)
        assert_error(refused, 403, "PASSWORD_CHANGE_REQUIRED")

    async def test_a_given_temporary_password_follows_the_policy(self, client) -> None:
        account = await create_user(client)
        reset = await send(client, "POST", f"{USERS}/{account.id}/reset-password", json={"temporary_password": "abc"})
        error = assert_error(reset, 400, "VALIDATION_FAILED", field="temporary_password")
        assert error["details"]["rule"] == "min_length"

    async def test_unknown_user_and_non_administrators_are_refused(self, client) -> None:
        assert_error(await send(client, "POST", f"{USERS}/no-such-user/reset-password"), 404, "USER_NOT_FOUND")
        viewer = await account_with(client, ("viewer", None))
        target = await create_user(client)
        response = await send(client, "POST", f"{USERS}/{target.id}/reset-password", token=viewer.access_token)
        assert_denied(response, "users:manage")


class TestSessions:
    async def test_a_user_lists_and_ends_their_own_sessions(self, client) -> None:
        account = await sign_in(await create_user(client), client)
        second = await login(client, account.email)
        third = await login(client, account.email)

        listed = await send(client, "GET", f"{AUTH}/sessions", token=account.access_token)

        assert listed.status_code == 200, listed.text
        sessions = listed.json()["items"]
        assert len(sessions) == 3 and sum(s["current"] for s in sessions) == 1
        mine = next(s for s in sessions if s["current"])
        others = [s["session_id"] for s in sessions if not s["current"]]
        one = await send(client, "DELETE", f"{AUTH}/sessions/{others[0]}", token=account.access_token)
        assert one.status_code == 200, one.text
        still = [s["session_id"] for s in (await send(client, "GET", f"{AUTH}/sessions", token=account.access_token)).json()["items"]]
        assert others[0] not in still and mine["session_id"] in still
        rest = await send(client, "DELETE", f"{AUTH}/sessions", token=account.access_token)
        assert rest.status_code == 200, rest.text
        for tokens in (second, third):
            assert_error(await me(client, tokens["access_token"]), 401, "SESSION_REVOKED")
        assert (await me(client, account.access_token)).status_code == 200
        assert [s["session_id"] for s in (await send(client, "GET", f"{AUTH}/sessions", token=account.access_token)).json()["items"]] == [mine["session_id"]]

    async def test_an_administrator_ends_one_session_then_all_and_their_tokens_stop_at_once(self, client) -> None:
        account = await create_user(client)
        first = await login(client, account.email)
        second = await login(client, account.email)

        listed = await send(client, "GET", f"{USERS}/{account.id}/sessions")
        assert listed.status_code == 200, listed.text
        ids = {s["session_id"] for s in listed.json()["items"]}
        assert len(ids) == 2
        target = next(iter(ids))
        ended = await send(client, "DELETE", f"{USERS}/{account.id}/sessions/{target}", json={"reason": "lost laptop"})
        assert ended.status_code == 200, ended.text
        statuses = sorted([(await me(client, t["access_token"])).status_code for t in (first, second)])
        assert statuses == [200, 401]

        everything = await send(client, "DELETE", f"{USERS}/{account.id}/sessions")

        assert everything.status_code == 200, everything.text
        for tokens in (first, second):
            assert_error(await me(client, tokens["access_token"]), 401, "SESSION_REVOKED")
        assert (await send(client, "GET", f"{USERS}/{account.id}/sessions")).json()["items"] == []

    async def test_a_session_of_someone_else_or_unknown_is_not_found(self, client) -> None:
        owner = await sign_in(await create_user(client), client)
        stranger = await sign_in(await create_user(client), client)
        theirs = (await send(client, "GET", f"{AUTH}/sessions", token=owner.access_token)).json()["items"][0]["session_id"]

        response = await send(client, "DELETE", f"{AUTH}/sessions/{theirs}", token=stranger.access_token)

        assert_error(response, 404, "SESSION_NOT_FOUND")
        assert_error(await send(client, "DELETE", f"{USERS}/{owner.id}/sessions/nope"), 404, "SESSION_NOT_FOUND")
        assert (await me(client, owner.access_token)).status_code == 200


class TestHistory:
    async def test_the_history_shows_each_step_with_its_actor_address_and_agent(self, client) -> None:
        account = await create_user(client)
        administrator = await admin_id(client)
        response = await send(
            client, "POST", f"{AUTH}/login", json={"username": account.email, "password": PASSWORD}, anonymous=True, headers=AGENT
        )
        tokens = response.json()
        await change_password(client, tokens["access_token"], PASSWORD, NEW_PASSWORD)
        session = (await send(client, "GET", f"{AUTH}/sessions", token=tokens["access_token"])).json()["items"][0]["session_id"]
        await send(client, "POST", f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]}, token=tokens["access_token"], headers=AGENT)
        await send(client, "POST", f"{USERS}/{account.id}/reset-password")
        await send(client, "DELETE", f"{USERS}/{account.id}/sessions")

        steps = await history(client, account.id)

        assert [e["event_type"] for e in steps] == [
            "User.SignedIn", "User.PasswordChanged", "User.SignedOut", "User.PasswordReset", "User.SessionsRevoked"
        ]
        assert [e["actor"] for e in steps] == [account.id, account.id, account.id, administrator, administrator]
        signed_in = steps[0]["payload"]
        assert signed_in["session_id"] == session and signed_in["user_agent"] == "accounts-e2e/1.0" and signed_in["client_address"]
        assert steps[1]["payload"]["kept_session"] == session
        assert steps[2]["payload"]["session_id"] == session
        for event in steps:
            assert "password_hash" not in event["payload"], event
        logged = await send(client, "GET", EVENTS, params={"stream": f"user:{account.id}", "event_type": "User.SignedIn"})
        assert [e["actor"] for e in logged.json()["items"]] == [account.id]
        detail = await send(client, "GET", f"{USERS}/{account.id}", params={"consistent": "true"})
        assert detail.json()["last_login_at"] == steps[0]["recorded_at"]
        listed = await send(client, "GET", USERS, params={"search": account.email, "consistent": "true"})
        assert listed.json()["items"][0]["last_login_at"] == steps[0]["recorded_at"]

    async def test_failed_sign_ins_do_not_grow_the_event_log_but_reach_the_security_log(self, client, database_url) -> None:
        account = await create_user(client)
        db = await asyncpg.connect(database_url)
        kept = await db.fetchval("SELECT count(*) FROM signin_failures WHERE user_id = $1", account.id)
        before = await event_count(client)

        for _ in range(3):
            wrong = await send(client, "POST", f"{AUTH}/login", json={"username": account.email, "password": "wrong-password"}, anonymous=True)
            assert_error(wrong, 401, "INVALID_CREDENTIALS")
        unknown = await send(client, "POST", f"{AUTH}/login", json={"username": unique_email(), "password": "wrong-password"}, anonymous=True)
        assert_error(unknown, 401, "INVALID_CREDENTIALS")

        assert await event_count(client) == before
        try:
            assert await db.fetchval("SELECT count(*) FROM signin_failures WHERE user_id = $1", account.id) == kept + 3
            assert await db.fetchval("SELECT count(*) FROM signin_failures WHERE user_agent LIKE '%wrong-password%'") == 0
        finally:
            await db.close()
        metrics = (await send(client, "GET", "/metrics")).text
        assert 'charter_signin_failures_total{reason="invalid_credentials"}' in metrics
        await login(client, account.email)  # the account's failures are forgiven on success

    async def test_a_site_administrator_reads_the_history_only_of_users_at_their_sites(self, client) -> None:
        site_admin = await account_with(client, ("admin", "site-a"), prefix="site-admin")
        here = await create_user(client)
        await grant(client, here.id, "viewer", "site-a")
        elsewhere = await create_user(client)
        await grant(client, elsewhere.id, "viewer", "site-b")
        await login(client, here.email)
        await login(client, elsewhere.email)
        await send(client, "GET", USERS, params={"consistent": "true"})

        seen = await send(client, "GET", f"{USERS}/{here.id}/audit-trail", token=site_admin.access_token)
        hidden = await send(client, "GET", f"{USERS}/{elsewhere.id}/audit-trail", token=site_admin.access_token)
        sessions = await send(client, "GET", f"{USERS}/{elsewhere.id}/sessions", token=site_admin.access_token)

        assert seen.status_code == 200, seen.text
        assert "User.SignedIn" in [e["event_type"] for e in seen.json()["items"]]
        assert_error(hidden, 404, "USER_NOT_FOUND")
        assert_error(sessions, 404, "USER_NOT_FOUND")
        ended = await send(client, "DELETE", f"{USERS}/{here.id}/sessions", token=site_admin.access_token)
        assert_denied(ended, "users:manage")
