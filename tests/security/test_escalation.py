"""Hostile tests of identity and access: nobody locks everyone out, nobody escalates.

A site admin tries to grant `admin` at their site, to grant a role carrying permissions they lack, to
change users holding global roles; anyone tries to change the built-in roles; the two last
administrators deactivate each other at the same moment; someone probes user ids derived from known
e-mail addresses. `charter users create-admin` repairs a locked-out administrator.

Runs on an app and a database of its own: the last-administrator tests need to know every admin there is.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest
from litestar.testing import AsyncTestClient

from interfaces.app import create_app
from interfaces.cli import main as charter
from tests.e2e.access_kit import (
    AUTH,
    PASSWORD,
    ROLES,
    USERS,
    Account,
    account_with,
    create_user,
    grant,
    login,
    send,
    sign_in,
    unique_email,
    unique_name,
)
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, admin_token, make_settings
from tests.e2e.plugin_kit import assert_error

SITE = "site-a"


@pytest.fixture(scope="module")
async def world(databases, tmp_path_factory) -> AsyncIterator[dict[str, Any]]:
    database_url = await databases.create("escalation")
    settings = make_settings(database_url, tmp_path_factory.mktemp("charter-escalation"))
    async with AsyncTestClient(app=create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {await admin_token(client)}"
        yield {"client": client, "database_url": database_url, "settings": settings}


@pytest.fixture
def client(world) -> AsyncTestClient:
    return world["client"]


async def user_row(client: Any, user_id: str) -> dict[str, Any]:
    response = await send(client, "GET", f"{USERS}/{user_id}", params={"consistent": "true"})
    assert response.status_code == 200, response.text
    return response.json()


async def grants_of(client: Any, user_id: str) -> set[tuple[str, str | None]]:
    return {(g["role"], g["site_id"]) for g in (await user_row(client, user_id))["roles"]}


async def active_global_admins(client: Any, token: str | None = None) -> list[str]:
    params = {"consistent": "true", "is_active": "true", "limit": 100}
    response = await send(client, "GET", USERS, params=params, token=token)
    assert response.status_code == 200, response.text
    return [u["id"] for u in response.json()["items"] if any(g["role"] == "admin" and g["site_id"] is None for g in u["roles"])]


async def new_role(client: Any, permissions: list[str]) -> str:
    name = unique_name("esc")
    response = await send(client, "POST", ROLES, json={"name": name, "permissions": permissions})
    assert response.status_code == 201, response.text
    return name


class TestSiteAdminCannotEscalate:
    async def test_a_site_admin_cannot_grant_admin_at_their_site(self, client) -> None:
        site_admin = await account_with(client, ("admin", SITE), prefix="esc-site-admin")
        target = await create_user(client, unique_email("esc-target"))

        for who in (target.id, site_admin.id):  # nor to themselves
            response = await send(
                client, "POST", f"{USERS}/{who}/roles/admin", params={"site_id": SITE}, token=site_admin.access_token
            )
            assert_error(response, 403, "ESCALATION_FORBIDDEN")

        assert await grants_of(client, target.id) == set()
        assert await grants_of(client, site_admin.id) == {("admin", SITE)}

    async def test_a_site_user_manager_cannot_grant_a_role_with_permissions_they_lack(self, client) -> None:
        manager_role = await new_role(client, ["roles:grant", "users:read", "sites:read"])
        narrow = await new_role(client, ["sites:read"])
        manager = await account_with(client, (manager_role, SITE), prefix="esc-manager")
        target = await create_user(client, unique_email("esc-target"))

        wide = await send(
            client, "POST", f"{USERS}/{target.id}/roles/site-admin", params={"site_id": SITE}, token=manager.access_token
        )
        error = assert_error(wide, 403, "ESCALATION_FORBIDDEN")
        assert "sites:*" in error["details"]["missing_permissions"]
        own = await send(
            client, "POST", f"{USERS}/{manager.id}/roles/{manager_role}", params={"site_id": "site-b"},
            token=manager.access_token,
        )
        assert own.status_code == 403, own.text  # not at another site either (the guard)
        await grant(client, target.id, narrow, SITE, token=manager.access_token)  # within what they hold: fine

        assert await grants_of(client, target.id) == {(narrow, SITE)}

    async def test_a_site_admin_cannot_change_users_holding_global_roles(self, client) -> None:
        site_admin = await account_with(client, ("admin", SITE), prefix="esc-site-admin")
        global_viewer = await account_with(client, ("viewer", None), prefix="esc-global-viewer")
        await grant(client, global_viewer.id, "auditor", SITE)
        token = site_admin.access_token

        granted = await send(client, "POST", f"{USERS}/{global_viewer.id}/roles/quality-focal", params={"site_id": SITE}, token=token)
        revoked = await send(client, "DELETE", f"{USERS}/{global_viewer.id}/roles/auditor", params={"site_id": SITE}, token=token)
        deactivated = await send(client, "POST", f"{USERS}/{global_viewer.id}/deactivate", json={}, token=token)

        assert_error(granted, 403, "USER_PROTECTED")
        assert_error(revoked, 403, "USER_PROTECTED")
        assert deactivated.status_code == 403, deactivated.text
        row = await user_row(client, global_viewer.id)
        assert row["is_active"] and {(g["role"], g["site_id"]) for g in row["roles"]} == {("viewer", None), ("auditor", SITE)}

    async def test_a_site_admin_cannot_deactivate_a_global_admin(self, client) -> None:
        site_admin = await account_with(client, ("admin", SITE), prefix="esc-site-admin")
        admin = await account_with(client, ("admin", None), prefix="esc-admin")
        await grant(client, admin.id, "viewer", SITE)  # visible to the site admin

        for action in ("deactivate", "activate"):
            response = await send(client, "POST", f"{USERS}/{admin.id}/{action}", json={}, token=site_admin.access_token)
            assert response.status_code == 403, response.text
        revoke = await send(
            client, "DELETE", f"{USERS}/{admin.id}/roles/viewer", params={"site_id": SITE}, token=site_admin.access_token
        )
        assert_error(revoke, 403, "USER_PROTECTED")

        assert (await user_row(client, admin.id))["is_active"]


class TestBuiltinRolesAreFixed:
    @pytest.mark.parametrize(
        "change",
        [{"permissions": ["*:*"]}, {"permissions": []}, {"permissions": ["plugins:read"]}, {"name": "renamed-role"}],
        ids=["widen", "empty", "narrow", "rename"],
    )
    async def test_even_an_administrator_cannot_change_a_builtin_role(self, client, change: dict[str, Any]) -> None:
        for role in ("viewer", "admin", "site-admin"):
            before = (await send(client, "GET", f"{ROLES}/{role}", params={"consistent": "true"})).json()

            response = await send(client, "PUT", f"{ROLES}/{role}", json=change)

            if change.get("permissions") == before["permissions"]:
                continue
            assert_error(response, 409, "ROLE_PROTECTED")
            after = (await send(client, "GET", f"{ROLES}/{role}", params={"consistent": "true"})).json()
            assert (after["name"], after["permissions"]) == (before["name"], before["permissions"])

    async def test_a_builtin_role_cannot_be_deleted(self, client) -> None:
        for role in ("admin", "viewer"):
            assert_error(await send(client, "DELETE", f"{ROLES}/{role}"), 409, "ROLE_PROTECTED")


class TestNoLockOut:
    async def test_the_last_administrator_cannot_be_deactivated_nor_demoted(self, client) -> None:
        admins = await active_global_admins(client)
        last = await account_with(client, ("admin", None), prefix="esc-last")
        for user_id in admins:  # leave one administrator only: a fresh one
            response = await send(client, "POST", f"{USERS}/{user_id}/deactivate", json={}, token=last.access_token)
            assert response.status_code == 200, response.text

        deactivated = await send(client, "POST", f"{USERS}/{last.id}/deactivate", json={}, token=last.access_token)
        demoted = await send(client, "DELETE", f"{USERS}/{last.id}/roles/admin", token=last.access_token)

        assert_error(deactivated, 409, "LAST_ADMIN")
        assert_error(demoted, 409, "LAST_ADMIN")
        assert await active_global_admins(client, last.access_token) == [last.id]
        await _restore_bootstrap_admin(client, last)

    async def test_two_last_administrators_deactivating_each_other_at_once_leave_one(self, client) -> None:
        survivor = await account_with(client, ("admin", None), prefix="esc-duel")
        for user_id in await active_global_admins(client):
            if user_id != survivor.id:
                await send(client, "POST", f"{USERS}/{user_id}/deactivate", json={}, token=survivor.access_token)
        for _ in range(3):
            rival = await create_user(client, unique_email("esc-rival"), token=survivor.access_token)
            await grant(client, rival.id, "admin", token=survivor.access_token)
            rival = await sign_in(rival, client)
            assert sorted(await active_global_admins(client, survivor.access_token)) == sorted([survivor.id, rival.id])

            outcomes = await asyncio.gather(
                send(client, "POST", f"{USERS}/{rival.id}/deactivate", json={}, token=survivor.access_token),
                send(client, "POST", f"{USERS}/{survivor.id}/deactivate", json={}, token=rival.access_token),
            )

            statuses = sorted(r.status_code for r in outcomes)
            assert statuses[0] == 200 and statuses[1] in (401, 409), [r.text for r in outcomes]
            survivor = survivor if outcomes[0].status_code == 200 else rival
            remaining = await active_global_admins(client, survivor.access_token)
            assert remaining == [survivor.id], remaining
        await _restore_bootstrap_admin(client, survivor)


async def _restore_bootstrap_admin(client: Any, acting: Account) -> None:
    """Bring the bootstrap administrator back (the client's default header signs in as it)."""
    found = await send(client, "GET", USERS, params={"search": ADMIN_EMAIL, "consistent": "true"}, token=acting.access_token)
    [bootstrap_id] = [u["id"] for u in found.json()["items"] if u["email"] == ADMIN_EMAIL]
    response = await send(client, "POST", f"{USERS}/{bootstrap_id}/activate", json={}, token=acting.access_token)
    assert response.status_code == 200, response.text
    token = (await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    await until_accepted(client, token)


async def until_accepted(client: Any, token: str) -> dict[str, Any]:
    """/auth/me once the reactivation reached the replica's cache of inactive users (from the read model)."""
    deadline = asyncio.get_running_loop().time() + 15
    while (response := await send(client, "GET", f"{AUTH}/me", token=token)).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, f"the reactivated user is still refused: {response.text}"
        await asyncio.sleep(0.1)
    return response.json()


class TestCreateAdminRepairs:
    async def test_create_admin_reactivates_regrants_and_resets_the_password(self, world, client, monkeypatch, tmp_path) -> None:
        locked = await account_with(client, ("admin", None), prefix="esc-locked")
        await send(client, "DELETE", f"{USERS}/{locked.id}/roles/admin")
        assert (await send(client, "POST", f"{USERS}/{locked.id}/deactivate", json={})).status_code == 200
        monkeypatch.setenv("CHARTER_DATABASE_URL", world["database_url"])
        monkeypatch.setenv("CHARTER_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("CHARTER_LOG_LEVEL", "warning")

        code = await asyncio.to_thread(charter, ["users", "create-admin", "--email", locked.email, "--password", "a brand new password"])

        assert code == 0
        row = await user_row(client, locked.id)
        assert row["is_active"] and ("admin", None) in {(g["role"], g["site_id"]) for g in row["roles"]}
        tokens = await login(client, locked.email, "a brand new password")
        me = await until_accepted(client, tokens["access_token"])
        assert me["permissions"]["*"] == ["*:*"]
        refused = await send(client, "POST", f"{AUTH}/login", json={"username": locked.email, "password": PASSWORD}, anonymous=True)
        assert refused.status_code == 401, refused.text


class TestUserIdsRevealNothing:
    async def test_ids_are_not_derived_from_email_addresses(self, client) -> None:
        account = await create_user(client, unique_email("esc-probe"))

        assert uuid.UUID(account.id).version == 4
        assert account.id != str(uuid5(NAMESPACE_URL, f"charter:user:{account.email}"))

    async def test_probing_ids_derived_from_known_addresses_finds_nothing(self, client) -> None:
        known = await create_user(client, unique_email("esc-known"))
        site_admin = await account_with(client, ("admin", SITE), prefix="esc-prober")
        random_id = str(uuid.uuid4())

        for email in (ADMIN_EMAIL, known.email):
            derived = str(uuid5(NAMESPACE_URL, f"charter:user:{email}"))
            for token in (None, site_admin.access_token):
                response = await send(client, "GET", f"{USERS}/{derived}", token=token)
                assert_error(response, 404, "USER_NOT_FOUND")
            probe = await send(
                client, "POST", f"{USERS}/{derived}/roles/viewer", params={"site_id": SITE}, token=site_admin.access_token
            )
            assert_error(probe, 404, "USER_NOT_FOUND")
        assert_error(await send(client, "GET", f"{USERS}/{random_id}"), 404, "USER_NOT_FOUND")

    async def test_a_user_the_caller_may_not_see_answers_like_an_unknown_id(self, client) -> None:
        site_admin = await account_with(client, ("admin", SITE), prefix="esc-looker")
        elsewhere = await account_with(client, ("viewer", "site-b"), prefix="esc-elsewhere")
        unknown = str(uuid.uuid4())

        hidden = await send(client, "GET", f"{USERS}/{elsewhere.id}", token=site_admin.access_token)
        missing = await send(client, "GET", f"{USERS}/{unknown}", token=site_admin.access_token)

        for response, user_id in ((hidden, elsewhere.id), (missing, unknown)):
            error = assert_error(response, 404, "USER_NOT_FOUND")
            assert error["message"] == f"user {user_id} is not known"
            assert error["details"] == {"user_id": user_id}
        assert hidden.headers.get("content-length") is None or len(hidden.content) - len(elsewhere.id) == len(missing.content) - len(unknown)
