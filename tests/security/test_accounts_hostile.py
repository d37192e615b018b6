"""Hostile input to the account routes: bounds and types of every body field (400 naming it, never a
500), passwords never echoed back nor written to an event, guessing the current password is slowed like
guessing at login, the password-change token is good for nothing else, odd path values and headers
(a huge or control-laden User-Agent) answer 4xx or are cleaned and bounded before they reach an event,
and the security log keeps its bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from domain.identity.user import MAX_USER_AGENT, Client
from infrastructure.identity.security_log import SecurityLog
from interfaces.app import create_app
from tests.e2e.access_kit import AUTH, EVENTS, PASSWORD, USERS, create_user, login, me, send, sign_in
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import assert_error

PLANTED = "PLANTED-account-password-0b8d1f"
CHANGE = f"{AUTH}/change-password"


@pytest.fixture(scope="module")
async def db(databases) -> str:
    return await databases.create("accounts-hostile")


@pytest.fixture(scope="module")
async def client(db, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    settings = make_settings(db, tmp_path_factory.mktemp("charter-accounts"), login_free_failures_account=3, login_backoff_base=30)
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {await admin_token(test_client)}"
        yield test_client


class TestBodies:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"new_password": "a good new passphrase"}, "current_password"),
            ({"current_password": PASSWORD}, "new_password"),
            ({"current_password": PASSWORD, "new_password": "x" * 1025}, "new_password"),
            ({"current_password": 1, "new_password": "a good new passphrase"}, "current_password"),
            ({"current_password": PASSWORD, "new_password": "a good new passphrase", "user_id": "someone"}, "user_id"),
        ],
    )
    async def test_change_password_bodies_are_bounded_and_typed(self, client, body, field) -> None:
        account = await sign_in(await create_user(client), client)
        response = await send(client, "POST", CHANGE, json=body, token=account.access_token)
        assert_error(response, 400, "VALIDATION_FAILED", field=field)

    async def test_a_body_that_is_not_json_is_a_400(self, client) -> None:
        account = await sign_in(await create_user(client), client)
        response = await send(
            client, "POST", CHANGE, content=b'{"current_password": "', token=account.access_token,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "body", response.text

    @pytest.mark.parametrize(("body", "field"), [({"temporary_password": "y" * 1025}, "temporary_password"), ({"temporary_password": []}, "temporary_password"), ({"password": "z"}, "password")])
    async def test_reset_bodies_are_bounded_and_typed(self, client, body, field) -> None:
        account = await create_user(client)
        assert_error(await send(client, "POST", f"{USERS}/{account.id}/reset-password", json=body), 400, "VALIDATION_FAILED", field=field)

    @pytest.mark.parametrize("path", ["x" * 5000, "%00", "%2e%2e", "' OR 1=1 --", "%C3%A9%00"])
    async def test_odd_session_and_user_ids_answer_404(self, client, path) -> None:
        account = await sign_in(await create_user(client), client)
        for response in (
            await send(client, "DELETE", f"{AUTH}/sessions/{path}", token=account.access_token),
            await send(client, "DELETE", f"{USERS}/{account.id}/sessions/{path}"),
            await send(client, "GET", f"{USERS}/{path}/sessions"),
            await send(client, "GET", f"{USERS}/{path}/audit-trail"),
            await send(client, "POST", f"{USERS}/{path}/reset-password"),
        ):
            assert response.status_code in (400, 404), response.text


class TestPasswordsStaySecret:
    async def test_no_answer_echoes_a_password_and_no_event_holds_one(self, client) -> None:
        account = await sign_in(await create_user(client), client)
        answers = [
            await send(client, "POST", CHANGE, json={"current_password": PLANTED, "new_password": PLANTED + "-2"}, token=account.access_token),
            await send(client, "POST", CHANGE, json={"current_password": PASSWORD, "new_password": account.email}, token=account.access_token),
            await send(client, "POST", f"{USERS}/{account.id}/reset-password", json={"temporary_password": PLANTED}),
        ]
        for response in answers:
            assert PLANTED not in response.text and PASSWORD not in response.text, response.text
        events = await send(client, "GET", EVENTS, params={"stream": f"user:{account.id}", "limit": 100})
        assert PLANTED not in events.text and "password_hash" not in events.text and "argon2" not in events.text
        trail = await send(client, "GET", f"{USERS}/{account.id}/audit-trail", params={"limit": 100})
        assert [e["event_type"] for e in trail.json()["items"]][0] == "User.PasswordReset"
        assert "argon2" not in trail.text and PLANTED not in trail.text

    async def test_guessing_the_current_password_is_slowed_like_guessing_at_login(self, client) -> None:
        account = await sign_in(await create_user(client), client)
        statuses = []
        for attempt in range(5):
            body = {"current_password": f"guess-number-{attempt}", "new_password": "a good new passphrase"}
            statuses.append((await send(client, "POST", CHANGE, json=body, token=account.access_token)).status_code)
        assert statuses[:3] == [403, 403, 403] and 429 in statuses[3:], statuses
        throttled = await send(client, "POST", CHANGE, json={"current_password": PASSWORD, "new_password": "a good new passphrase"}, token=account.access_token)
        assert_error(throttled, 429, "LOGIN_THROTTLED")  # even the right one waits


class TestThePasswordChangeToken:
    async def test_it_opens_no_other_route_and_cannot_be_refreshed_into_a_session(self, client) -> None:
        account = await create_user(client)
        await send(client, "POST", f"{USERS}/{account.id}/reset-password", json={"temporary_password": "temporary passphrase"})
        refused = await send(client, "POST", f"{AUTH}/login", json={"username": account.email, "password": "temporary passphrase"}, anonymous=True)
        token = assert_error(refused, 403, "PASSWORD_CHANGE_REQUIRED")["details"]["password_change_token"]

        for method, path in [("GET", f"{AUTH}/me"), ("GET", f"{AUTH}/sessions"), ("DELETE", f"{AUTH}/sessions"), ("GET", USERS), ("GET", EVENTS)]:
            assert_error(await send(client, method, path, token=token), 403, "PASSWORD_CHANGE_REQUIRED")
        assert_error(await send(client, "POST", f"{AUTH}/refresh", json={"refresh_token": token}, anonymous=True), 401, "REFRESH_TOKEN_INVALID")
        wrong = await send(client, "POST", CHANGE, json={"current_password": "not it at all", "new_password": "a good new passphrase"}, token=token)
        assert_error(wrong, 403, "CURRENT_PASSWORD_WRONG", field="current_password")


class TestHeaders:
    async def test_a_huge_or_odd_user_agent_is_cleaned_and_bounded_in_the_history(self, client) -> None:
        account = await create_user(client)
        agent = "evil\x1b[31m agent " + "A" * 8000
        response = await send(
            client, "POST", f"{AUTH}/login", json={"username": account.email, "password": PASSWORD}, anonymous=True,
            headers={"User-Agent": agent},
        )
        assert response.status_code == 200, response.text
        assert (await me(client, response.json()["access_token"])).status_code == 200
        trail = await send(client, "GET", f"{USERS}/{account.id}/audit-trail", params={"history": "true"})
        recorded = trail.json()["items"][0]["payload"]["user_agent"]
        assert len(recorded) == MAX_USER_AGENT and recorded.isprintable() and "\x1b" not in recorded


class TestSecurityLogBound:
    async def test_old_rows_and_rows_past_the_bound_are_trimmed(self, client, db) -> None:
        pool = await asyncpg.create_pool(db, min_size=1, max_size=2)
        try:
            log = SecurityLog(pool, timedelta(days=1), max_rows=5, trim_every=3600)
            for n in range(8):
                await log.failed(f"nobody-{n}@example.test", None, Client("192.0.2.1", "probe"), "invalid_credentials")
            await pool.execute("UPDATE signin_failures SET at = now() - interval '2 days' WHERE id = (SELECT max(id) FROM signin_failures)")
            await log.trim()
            kept = await pool.fetchval("SELECT count(*) FROM signin_failures")
            stored = await pool.fetch("SELECT account_key FROM signin_failures")
        finally:
            await pool.close()
        assert kept <= 4  # five at most, and the one made old went
        assert all(row["account_key"].startswith("account:") and "example.test" not in row["account_key"] for row in stored)


async def test_login_still_works_for_the_administrator(client) -> None:  # the fixture's account was never touched
    await login(client, "admin@charter.test", "admin-password-for-tests")
