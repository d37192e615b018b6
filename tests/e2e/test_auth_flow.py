"""Sign-in and administration through HTTP: register, login (JSON and form), /auth/me, refresh rotation
with reuse detection, logout, role changes in the audit trail, the admin read models (users, roles,
permissions) and rate limiting (per token, per IP, per tier, shared by replicas)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from domain.identity.access import BUILTIN_ROLES
from interfaces.app import create_app
from tests.e2e.access_kit import (
    AUTH,
    admin_id,
    EVENTS,
    PASSWORD,
    PERMISSIONS,
    ROLES,
    USERS,
    account_with,
    assert_denied,
    assert_error,
    create_user,
    grant,
    login,
    me,
    revoke,
    send,
    unique_email,
    unique_name,
)
from tests.e2e.conftest import ADMIN_EMAIL, make_settings

PLUGINS = "/api/v1/plugins"
INSTALL = "/api/v1/plugins/install"


def refresh(client, token: str):
    return send(client, "POST", f"{AUTH}/refresh", json={"refresh_token": token}, anonymous=True)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- register --------------------------------------------------------------------------------------


class TestRegister:
    async def test_creates_an_account_without_roles(self, client) -> None:
        email = unique_email("register")

        response = await send(
            client, "POST", f"{AUTH}/register", json={"email": email, "password": PASSWORD, "full_name": "Reg Ister"},
            anonymous=True,
        )

        assert response.status_code == 202, response.text
        assert response.json()["status"] == "accepted"
        tokens = await login(client, email)
        mine = (await me(client, tokens["access_token"])).json()
        assert uuid.UUID(mine["id"]) and mine["email"] == email and mine["full_name"] == "Reg Ister"
        assert mine["roles"] == [] and mine["permissions"] == {"*": []}
        assert_denied(await send(client, "GET", PLUGINS, token=tokens["access_token"]), "plugins:read")

    async def test_the_address_is_kept_in_lower_case(self, client) -> None:
        email = unique_email("Mixed.Case")

        response = await send(client, "POST", f"{AUTH}/register", json={"email": f"  {email.upper()} ", "password": PASSWORD}, anonymous=True)

        assert response.status_code == 202, response.text
        found = await send(client, "GET", USERS, params={"search": email.lower(), "consistent": "true"})
        assert [u["email"] for u in found.json()["items"]] == [email.lower()]

    async def test_a_registered_address_is_not_registered_again_and_the_answer_does_not_tell(self, client) -> None:
        """Registering a taken address answers exactly like a new one (see tests/security/test_signin_abuse.py)
        and leaves the account as it was: its password stays."""
        email = unique_email("dup")
        first = await send(client, "POST", f"{AUTH}/register", json={"email": email, "password": PASSWORD}, anonymous=True)
        assert first.status_code == 202, first.text

        again = await send(client, "POST", f"{AUTH}/register", json={"email": email, "password": "another-password"}, anonymous=True)
        other_case = await send(client, "POST", f"{AUTH}/register", json={"email": email.upper(), "password": PASSWORD}, anonymous=True)

        for response in (again, other_case):
            assert (response.status_code, response.json()) == (first.status_code, first.json())
        await login(client, email, PASSWORD)
        refused = await send(client, "POST", f"{AUTH}/login", json={"username": email, "password": "another-password"}, anonymous=True)
        assert_error(refused, 401, "INVALID_CREDENTIALS")

    async def test_a_short_password_is_refused_naming_the_password(self, client) -> None:
        response = await send(client, "POST", f"{AUTH}/register", json={"email": unique_email(), "password": "short"}, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="password")

    async def test_an_address_that_is_not_one_is_refused_naming_the_email(self, client) -> None:
        response = await send(client, "POST", f"{AUTH}/register", json={"email": "not-an-address", "password": PASSWORD}, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="email")

    async def test_a_missing_address_is_refused(self, client) -> None:
        response = await send(client, "POST", f"{AUTH}/register", json={"password": PASSWORD}, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="email")

    async def test_no_one_registers_with_roles_of_their_choosing(self, client) -> None:
        body = {"email": unique_email(), "password": PASSWORD, "roles": ["admin"]}

        response = await send(client, "POST", f"{AUTH}/register", json=body, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="roles")


# -- login -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def person(client):
    """A user with `viewer` everywhere (the account is shared; each test signs in on its own)."""
    return await account_with(client, ("viewer", None), prefix="flow-person")


class TestLogin:
    def assert_tokens(self, response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 900
        assert body["access_token"].count(".") == 2
        assert len(body["refresh_token"]) >= 32
        return body

    async def test_with_a_json_body(self, client, person) -> None:
        response = await send(client, "POST", f"{AUTH}/login", json={"username": person.email, "password": PASSWORD}, anonymous=True)

        body = self.assert_tokens(response)
        assert (await me(client, body["access_token"])).json()["id"] == person.id

    async def test_with_email_instead_of_username_and_another_case(self, client, person) -> None:
        response = await send(client, "POST", f"{AUTH}/login", json={"email": person.email.upper(), "password": PASSWORD}, anonymous=True)

        self.assert_tokens(response)

    async def test_with_a_form(self, client, person) -> None:
        response = await send(
            client, "POST", f"{AUTH}/login", data={"username": person.email, "password": PASSWORD}, anonymous=True
        )

        assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
        body = self.assert_tokens(response)
        assert (await me(client, body["access_token"])).status_code == 200

    async def test_wrong_password_and_unknown_user_answer_alike(self, client, person) -> None:
        wrong = await send(client, "POST", f"{AUTH}/login", json={"username": person.email, "password": "wrong-password"}, anonymous=True)
        unknown = await send(client, "POST", f"{AUTH}/login", json={"username": unique_email("ghost"), "password": PASSWORD}, anonymous=True)
        malformed = await send(client, "POST", f"{AUTH}/login", data={"username": "no-at-sign", "password": PASSWORD}, anonymous=True)

        errors = [assert_error(r, 401, "INVALID_CREDENTIALS") for r in (wrong, unknown, malformed)]
        assert len({e["message"] for e in errors}) == 1
        assert all(e["details"] == {} for e in errors)

    async def test_a_missing_password_is_a_bad_request(self, client, person) -> None:
        response = await send(client, "POST", f"{AUTH}/login", data={"username": person.email}, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED")


# -- /auth/me --------------------------------------------------------------------------------------


class TestMe:
    async def test_shows_roles_and_effective_permissions_per_site(self, client) -> None:
        account = await account_with(
            client, ("viewer", None), ("site-admin", "site-a"), ("quality-focal", "site-b"), prefix="flow-me"
        )

        response = await me(client, account.access_token)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == account.id and body["email"] == account.email and body["is_active"] is True
        assert body["roles"] == [
            {"role": "viewer", "site_id": None},
            {"role": "site-admin", "site_id": "site-a"},
            {"role": "quality-focal", "site_id": "site-b"},
        ]
        assert body["permissions"] == {
            "*": sorted(BUILTIN_ROLES["viewer"][1]),
            "site-a": sorted(BUILTIN_ROLES["site-admin"][1]),
            "site-b": sorted(BUILTIN_ROLES["quality-focal"][1]),
        }

    async def test_needs_a_token(self, client) -> None:
        assert_error(await send(client, "GET", f"{AUTH}/me", anonymous=True), 401, "AUTHENTICATION_REQUIRED")


# -- refresh and logout ----------------------------------------------------------------------------


class TestRefresh:
    async def test_rotates_the_refresh_token(self, client, person) -> None:
        tokens = await login(client, person.email)

        response = await refresh(client, tokens["refresh_token"])

        assert response.status_code == 200, response.text
        fresh = response.json()
        assert fresh["token_type"] == "bearer" and fresh["expires_in"] == 900
        assert fresh["refresh_token"] != tokens["refresh_token"]
        assert (await me(client, fresh["access_token"])).json()["id"] == person.id
        again = await refresh(client, fresh["refresh_token"])
        assert again.status_code == 200, again.text

    async def test_reuse_of_a_rotated_token_revokes_the_whole_family(self, client, person) -> None:
        tokens = await login(client, person.email)
        other_sign_in = await login(client, person.email)
        rotated = await refresh(client, tokens["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        newest = rotated.json()["refresh_token"]

        reused = await refresh(client, tokens["refresh_token"])
        after = await refresh(client, newest)

        error = assert_error(reused, 401, "REFRESH_TOKEN_REUSED")
        assert "revoked" in error["message"]
        assert_error(after, 401, "REFRESH_TOKEN_REVOKED")
        assert_error(await refresh(client, tokens["refresh_token"]), 401, "REFRESH_TOKEN_REVOKED")
        unrelated = await refresh(client, other_sign_in["refresh_token"])  # another sign-in, another family
        assert unrelated.status_code == 200, unrelated.text

    async def test_an_unknown_token_is_refused(self, client) -> None:
        assert_error(await refresh(client, "never-issued-" + uuid.uuid4().hex), 401, "REFRESH_TOKEN_INVALID")

    async def test_a_missing_token_is_a_bad_request(self, client) -> None:
        response = await send(client, "POST", f"{AUTH}/refresh", json={}, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="refresh_token")

    async def test_the_new_access_token_carries_grants_made_since_login(self, client) -> None:
        account = await account_with(client, prefix="flow-regrant")
        assert_denied(await send(client, "GET", PLUGINS, token=account.access_token), "plugins:read")
        await grant(client, account.id, "viewer", "site-a")

        response = await refresh(client, account.refresh_token)

        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert (await send(client, "GET", PLUGINS, token=token)).status_code == 200
        assert (await me(client, token)).json()["permissions"]["site-a"] == sorted(BUILTIN_ROLES["viewer"][1])


class TestLogout:
    async def test_revokes_the_sign_in(self, client, person) -> None:
        tokens = await login(client, person.email)
        rotated = (await refresh(client, tokens["refresh_token"])).json()

        response = await send(
            client, "POST", f"{AUTH}/logout", json={"refresh_token": rotated["refresh_token"]}, token=rotated["access_token"]
        )

        assert response.status_code == 200, response.text
        assert_error(await refresh(client, rotated["refresh_token"]), 401, "REFRESH_TOKEN_REVOKED")

    async def test_needs_a_token(self, client, person) -> None:
        tokens = await login(client, person.email)

        response = await send(client, "POST", f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]}, anonymous=True)

        assert_error(response, 401, "AUTHENTICATION_REQUIRED")
        assert (await refresh(client, tokens["refresh_token"])).status_code == 200  # still signed in


# -- role changes in the audit trail ---------------------------------------------------------------


async def role_events(client, user_id: str, token: str | None = None) -> list[dict[str, Any]]:
    response = await send(
        client,
        "GET",
        EVENTS,
        params={"stream": f"user:{user_id}", "event_type": "User.RoleGranted,User.RoleRevoked", "consistent": "true", "limit": 100},
        token=token,
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


class TestRoleChangesInTheAuditTrail:
    async def test_grant_and_revoke_at_a_site_are_recorded_with_actor_site_and_time(self, client) -> None:
        target = await create_user(client, unique_email("flow-audit"))
        before = datetime.now(timezone.utc) - timedelta(seconds=1)

        granted = await grant(client, target.id, "auditor", "site-a")
        revoked = await revoke(client, target.id, "auditor", "site-a")
        after = datetime.now(timezone.utc) + timedelta(seconds=1)

        events = await role_events(client, target.id)
        assert [e["event_type"] for e in events] == ["User.RoleGranted", "User.RoleRevoked"]
        for event, response, command in ((events[0], granted, "GrantRole"), (events[1], revoked, "RevokeRole")):
            assert event["stream_id"] == f"user:{target.id}"
            assert event["payload"] == {"role": "auditor", "site_id": "site-a", "reason": ""}
            assert event["site_id"] == "site-a"
            assert event["metadata"]["actor"] == await admin_id(client)
            assert event["actor"] == await admin_id(client)
            assert event["metadata"]["command"] == command
            assert event["metadata"]["request_id"] == response.headers["x-request-id"]
            assert before <= parse_time(event["recorded_at"]) <= after
            assert event["position"] == response.json()["position"]
        assert parse_time(events[0]["recorded_at"]) <= parse_time(events[1]["recorded_at"])

    async def test_a_global_grant_is_recorded_without_a_site(self, client) -> None:
        target = await create_user(client, unique_email("flow-audit-global"))

        await grant(client, target.id, "viewer")

        [event] = await role_events(client, target.id)
        assert event["site_id"] is None
        assert event["payload"] == {"role": "viewer", "site_id": None, "reason": ""}
        assert event["metadata"]["actor"] == await admin_id(client)

    async def test_the_reasons_given_are_recorded_in_the_log_and_the_grant(self, client) -> None:
        target = await create_user(client, unique_email("flow-audit-reason"))

        await grant(client, target.id, "auditor", "site-a", reason="audit of Q3")
        user = await send(client, "GET", f"{USERS}/{target.id}", params={"consistent": "true"})
        await revoke(client, target.id, "auditor", "site-a", reason="audit done")

        events = await role_events(client, target.id)
        assert [e["payload"]["reason"] for e in events] == ["audit of Q3", "audit done"]
        assert user.json()["roles"][0]["reason"] == "audit of Q3"

    async def test_the_actor_is_whoever_made_the_change(self, client) -> None:
        site_admin = await account_with(client, ("admin", "site-a"), prefix="flow-site-admin")
        target = await create_user(client, unique_email("flow-audit-actor"))

        await grant(client, target.id, "quality-focal", "site-a", token=site_admin.access_token)

        [event] = await role_events(client, target.id)
        assert event["metadata"]["actor"] == site_admin.id
        user = await send(client, "GET", f"{USERS}/{target.id}", params={"consistent": "true"})
        assert user.json()["roles"][0]["granted_by"] == site_admin.id

    async def test_the_read_model_shows_who_granted_and_when(self, client) -> None:
        target = await create_user(client, unique_email("flow-granted-by"))
        await grant(client, target.id, "compliance-officer", "site-a")

        response = await send(client, "GET", f"{USERS}/{target.id}", params={"consistent": "true"})

        [role] = response.json()["roles"]
        assert role["role"] == "compliance-officer" and role["site_id"] == "site-a"
        assert role["granted_by"] == await admin_id(client) and role["reason"] == ""
        assert abs(parse_time(role["granted_at"]) - datetime.now(timezone.utc)) < timedelta(seconds=30)

    async def test_an_auditor_of_one_site_sees_only_that_sites_role_changes(self, client) -> None:
        auditor = await account_with(client, ("auditor", "site-a"), prefix="flow-site-auditor")
        target = await create_user(client, unique_email("flow-audit-sites"))
        await grant(client, target.id, "viewer", "site-a")
        await grant(client, target.id, "viewer", "site-b")
        await grant(client, target.id, "viewer")

        seen = await role_events(client, target.id, token=auditor.access_token)

        assert [(e["event_type"], e["site_id"]) for e in seen] == [("User.RoleGranted", "site-a")]
        assert len(await role_events(client, target.id)) == 3


# -- admin read models: users ----------------------------------------------------------------------


class TestAdminUsers:
    async def test_search_and_is_active(self, client) -> None:
        marker = uuid.uuid4().hex[:8]
        active = await create_user(client, f"active-{marker}@access.test", full_name="Still Here")
        gone = await create_user(client, f"gone-{marker}@access.test", full_name=f"Gone {marker}")
        assert (await send(client, "POST", f"{USERS}/{gone.id}/deactivate", json={"reason": "left"})).status_code == 200

        def listing(**params):
            return send(client, "GET", USERS, params={"search": marker, "consistent": "true", **params})

        every = (await listing()).json()
        inactive = (await listing(is_active="false")).json()
        still = (await listing(is_active="true")).json()
        by_name = (await send(client, "GET", USERS, params={"search": f"Gone {marker}", "consistent": "true"})).json()

        assert every["total"] == 2 and [u["email"] for u in every["items"]] == [active.email, gone.email]
        assert [(u["id"], u["is_active"]) for u in inactive["items"]] == [(gone.id, False)]
        assert [(u["id"], u["is_active"]) for u in still["items"]] == [(active.id, True)]
        assert [u["id"] for u in by_name["items"]] == [gone.id]

    async def test_one_user(self, client) -> None:
        account = await create_user(client, unique_email("flow-one"), full_name="One User")
        await grant(client, account.id, "viewer", "site-a")

        response = await send(client, "GET", f"{USERS}/{account.id}", params={"consistent": "true"})

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == account.id and body["email"] == account.email and body["full_name"] == "One User"
        assert body["is_active"] is True
        assert [(g["role"], g["site_id"]) for g in body["roles"]] == [("viewer", "site-a")]
        assert body["stream_version"] == 2
        assert response.headers["etag"] == '"2"'
        assert "password" not in response.text and "argon2" not in response.text

    async def test_an_unknown_user_is_not_found(self, client) -> None:
        missing = str(uuid.uuid4())

        assert_error(await send(client, "GET", f"{USERS}/{missing}"), 404, "USER_NOT_FOUND")

    async def test_a_command_on_an_unknown_user_is_not_found(self, client) -> None:
        """The same 404 USER_NOT_FOUND as the read, not a conflict."""
        missing = str(uuid.uuid4())

        assert_error(await send(client, "POST", f"{USERS}/{missing}/activate"), 404, "USER_NOT_FOUND")

    async def test_a_site_admin_sees_only_users_and_grants_of_its_sites(self, client) -> None:
        reader = await account_with(client, ("site-admin", "site-a"), prefix="flow-site-reader")
        both = await create_user(client, unique_email("flow-both-sites"))
        await grant(client, both.id, "viewer", "site-a")
        await grant(client, both.id, "viewer", "site-b")
        elsewhere = await create_user(client, unique_email("flow-site-b-only"))
        await grant(client, elsewhere.id, "viewer", "site-b")

        seen = await send(client, "GET", f"{USERS}/{both.id}", params={"consistent": "true"}, token=reader.access_token)
        hidden = await send(client, "GET", f"{USERS}/{elsewhere.id}", params={"consistent": "true"}, token=reader.access_token)
        listed = await send(client, "GET", USERS, params={"search": "flow-", "limit": 100, "consistent": "true"}, token=reader.access_token)

        assert seen.status_code == 200, seen.text
        assert [(g["role"], g["site_id"]) for g in seen.json()["roles"]] == [("viewer", "site-a")]
        assert_error(hidden, 404, "USER_NOT_FOUND")
        ids = {u["id"] for u in listed.json()["items"]}
        assert both.id in ids and elsewhere.id not in ids
        assert all(g["site_id"] == "site-a" for u in listed.json()["items"] for g in u["roles"])


# -- admin read models: roles and permissions ------------------------------------------------------


async def all_roles(client) -> dict[str, dict[str, Any]]:
    response = await send(client, "GET", ROLES, params={"limit": 100, "consistent": "true"})
    assert response.status_code == 200, response.text
    return {r["name"]: r for r in response.json()["items"]}


class TestAdminRoles:
    async def test_lists_the_builtin_roles_with_permissions_and_user_counts(self, client) -> None:
        roles = await all_roles(client)

        for name, (description, permissions) in BUILTIN_ROLES.items():
            assert roles[name]["builtin"] is True
            assert roles[name]["permissions"] == sorted(permissions)
            assert roles[name]["description"] == description
            assert roles[name]["id"] == name
        assert roles["admin"]["users_count"] >= 1

    async def test_create_read_rename_change_and_delete_a_role(self, client) -> None:
        name = unique_name("flow-role")
        created = await send(client, "POST", ROLES, json={"name": name, "description": "d", "permissions": ["plugins:read"]})
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{ROLES}/{name}"
        holder = await create_user(client, unique_email("flow-role-holder"))
        await grant(client, holder.id, name, "site-a")

        read = (await send(client, "GET", f"{ROLES}/{name}", params={"consistent": "true"})).json()
        assert (read["permissions"], read["builtin"], read["users_count"]) == (["plugins:read"], False, 1)

        renamed = unique_name("flow-renamed")
        update = await send(client, "PUT", f"{ROLES}/{name}", json={"name": renamed, "permissions": ["plugins:read", "events:read"]})
        assert update.status_code == 200, update.text
        by_new_name = await send(client, "GET", f"{ROLES}/{renamed}", params={"consistent": "true"})
        assert by_new_name.status_code == 200, by_new_name.text
        assert by_new_name.json()["id"] == name  # the id stays
        assert by_new_name.json()["name"] == renamed
        assert by_new_name.json()["permissions"] == ["events:read", "plugins:read"]
        assert renamed in await all_roles(client)

        deleted = await send(client, "DELETE", f"{ROLES}/{renamed}")
        assert deleted.status_code == 200, deleted.text
        assert_error(await send(client, "GET", f"{ROLES}/{name}", params={"consistent": "true"}), 404, "ROLE_NOT_FOUND")
        assert renamed not in await all_roles(client)

    async def test_a_role_name_is_taken_once(self, client) -> None:
        name = unique_name("flow-dup-role")
        assert (await send(client, "POST", ROLES, json={"name": name})).status_code == 201

        again = await send(client, "POST", ROLES, json={"name": name})

        assert_error(again, 409, "ROLE_ALREADY_EXISTS", field="name")
        assert_error(await send(client, "POST", ROLES, json={"name": "viewer"}), 409, "ROLE_ALREADY_EXISTS", field="name")

    @pytest.mark.parametrize("name", ["viewer", "admin"])
    async def test_builtin_roles_cannot_be_renamed_or_deleted(self, client, name: str) -> None:
        renamed = await send(client, "PUT", f"{ROLES}/{name}", json={"name": unique_name("not-" + name)})
        deleted = await send(client, "DELETE", f"{ROLES}/{name}")

        assert_error(renamed, 409, "ROLE_PROTECTED")
        assert_error(deleted, 409, "ROLE_PROTECTED")
        role = (await send(client, "GET", f"{ROLES}/{name}", params={"consistent": "true"})).json()
        assert role["name"] == name and role["permissions"] == sorted(BUILTIN_ROLES[name][1])

    async def test_an_invalid_role_name_is_a_bad_request(self, client) -> None:
        assert_error(await send(client, "POST", ROLES, json={"name": "Not A Name"}), 400, "VALIDATION_FAILED", field="name")

    async def test_changing_an_unknown_role_is_not_found(self, client) -> None:
        """The same 404 ROLE_NOT_FOUND as reading it, not a conflict."""
        response = await send(client, "PUT", f"{ROLES}/{unique_name('flow-missing')}", json={"description": "x"})

        assert_error(response, 404, "ROLE_NOT_FOUND")

    async def test_changed_permissions_apply_to_tokens_already_issued(self, client) -> None:
        """Tokens name roles; what a role allows is looked up at each request (within a second or so)."""
        name = unique_name("flow-installer")
        assert (await send(client, "POST", ROLES, json={"name": name, "permissions": ["plugins:install"]})).status_code == 201
        account = await account_with(client, (name, None), prefix="flow-installer")
        assert (await send(client, "POST", INSTALL, json={}, token=account.access_token)).status_code == 400

        update = await send(client, "PUT", f"{ROLES}/{name}", json={"permissions": ["plugins:read"]})
        assert update.status_code == 200, update.text

        deadline = time.monotonic() + 3.0
        while (answer := await send(client, "POST", INSTALL, json={}, token=account.access_token)).status_code != 403:
            assert time.monotonic() < deadline, answer.text
            await asyncio.sleep(0.1)
        assert_denied(answer, "plugins:install")
        assert (await send(client, "GET", PLUGINS, token=account.access_token)).status_code == 200


class TestAdminPermissions:
    async def test_lists_the_catalog(self, client) -> None:
        response = await send(client, "GET", PERMISSIONS, params={"resource": "plugins", "limit": 100, "consistent": "true"})

        assert response.status_code == 200, response.text
        items = {p["name"]: p for p in response.json()["items"]}
        assert {"plugins:read", "plugins:install", "plugins:update", "plugins:operate", "plugins:uninstall"} <= set(items)
        assert items["plugins:install"]["resource"] == "plugins" and items["plugins:install"]["action"] == "install"
        assert items["plugins:install"]["description"]
        assert all(p["resource"] == "plugins" for p in items.values())

    async def test_defines_a_permission_once(self, client) -> None:
        name = f"flow{uuid.uuid4().hex[:8]}:approve"

        created = await send(client, "POST", PERMISSIONS, json={"name": name, "description": "approve things"})
        again = await send(client, "POST", PERMISSIONS, json={"name": name})

        assert created.status_code == 201, created.text
        assert_error(again, 409, "PERMISSION_ALREADY_EXISTS", field="name")
        listed = await send(client, "GET", PERMISSIONS, params={"resource": name.split(":")[0], "consistent": "true"})
        assert [(p["name"], p["description"]) for p in listed.json()["items"]] == [(name, "approve things")]

    @pytest.mark.parametrize("name", ["Things", "things", "things:*", "*:read"])
    async def test_a_malformed_permission_is_a_bad_request(self, client, name: str) -> None:
        response = await send(client, "POST", PERMISSIONS, json={"name": name})

        assert_error(response, 400, "VALIDATION_FAILED")


# -- rate limits -----------------------------------------------------------------------------------

WINDOW = 3600  # long, so that no test straddles two windows


async def inside_one_window(margin: float = 20.0) -> None:
    """Wait for the next window when the current one ends within `margin` seconds."""
    left = WINDOW - time.time() % WINDOW
    if left < margin:
        await asyncio.sleep(left + 0.5)


# A public route counted in the anonymous bucket (/health, /ready and /metrics have a bucket of their own).
OPEN = "/schema/openapi.json"


def limited_settings(database_url: str, data_dir):
    return make_settings(
        database_url,
        data_dir,
        jwt_secret="rate-limit-tests",
        rate_limit_anonymous=5,
        rate_limit_user=8,
        rate_limit_admin=50,
        rate_limit_window=WINDOW,
    )


@pytest.fixture(scope="module")
async def limited(databases, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    """An app of its own (own database, so no other test's requests count) with tiny limits."""
    app = create_app(limited_settings(await databases.create("limits"), tmp_path_factory.mktemp("charter-limits")))
    async with AsyncTestClient(app=app) as client:
        yield client


def mint(client, role: str, subject: str | None = None) -> str:
    """An access token from the app's own token service: signing in would spend the anonymous budget."""
    token, _ = client.app.state.runtime.authority.tokens.issue(subject or str(uuid.uuid4()), [(role, None)])
    return token


class HeldPool:
    """A database pool whose next `fetch` waits until released: a slow round trip, on demand. It runs on
    the app's event loop (the test client serves the app from a loop of its own, in another thread)."""

    def __init__(self, pool: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.entered = threading.Event()
        self._release = asyncio.Event()  # bound to the app's loop when first awaited there

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self._release.wait()
        return await self.pool.fetch(*args, **kwargs)

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self._release.set)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


def on_loop(loop: asyncio.AbstractEventLoop, coroutine: Any) -> asyncio.Future:
    """Run `coroutine` on the app's event loop; await the answer from the test's."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))


async def until_refused(client, method: str, url: str, most: int = 20, **kwargs: Any) -> list[Any]:
    """Requests until the first 429 (at most `most`); all the answers."""
    answers = []
    for _ in range(most):
        answers.append(await send(client, method, url, **kwargs))
        if answers[-1].status_code == 429:
            break
    assert answers[-1].status_code == 429, f"no 429 after {most} requests"
    return answers


def limit_headers(response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


class TestRateLimits:
    async def test_answers_carry_the_limit_headers(self, limited) -> None:
        await inside_one_window()
        token = mint(limited, "viewer")

        first = await send(limited, "GET", PLUGINS, token=token)
        second = await send(limited, "GET", PLUGINS, token=token)

        assert first.status_code == 200, first.text
        limit, remaining, reset = limit_headers(first)
        assert (limit, remaining) == (8, 7)
        assert time.time() < reset <= time.time() + WINDOW and reset % WINDOW == 0
        assert limit_headers(second)[0] == 8
        assert limit_headers(second)[1] in (6, 7)  # 7 only while a sync is under way: see the test below
        assert "retry-after" not in first.headers

    async def test_anonymous_callers_are_limited_per_ip_then_answered_429(self, limited) -> None:
        """(Exact counts at the limit are the subject of `test_hits_made_while_the_counts_are_being_sent_still_count`;
        here a hit or two more may pass while a sync is under way.)"""
        await inside_one_window()
        answers = await until_refused(limited, "GET", OPEN, anonymous=True)
        assert [r.status_code for r in answers[:5]] == [200] * 5
        assert limit_headers(answers[0])[:2] == (5, 4)

        refused = answers[-1]

        error = assert_error(refused, 429, "RATE_LIMITED")
        assert error["details"]["limit"] == 5
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= WINDOW
        assert error["details"]["retry_after"] == retry_after
        assert limit_headers(refused)[:2] == (5, 0)
        assert (await send(limited, "POST", f"{AUTH}/login", json={"username": ADMIN_EMAIL, "password": "x"}, anonymous=True)).status_code == 429
        # a token is counted on its own, not against the address it comes from
        assert (await send(limited, "GET", OPEN, token=mint(limited, "viewer"))).status_code == 200

    async def test_each_token_subject_has_its_own_count(self, limited) -> None:
        await inside_one_window()
        busy, calm = mint(limited, "viewer"), mint(limited, "viewer")

        answers = await until_refused(limited, "GET", PLUGINS, token=busy)

        assert [r.status_code for r in answers[:8]] == [200] * 8
        assert_error(answers[-1], 429, "RATE_LIMITED")
        other = await send(limited, "GET", PLUGINS, token=calm)
        assert other.status_code == 200 and limit_headers(other)[:2] == (8, 7)

    async def test_administrators_get_the_higher_limit(self, limited) -> None:
        await inside_one_window()
        token = mint(limited, "admin")

        answers = [await send(limited, "GET", PLUGINS, token=token) for _ in range(12)]

        assert [r.status_code for r in answers] == [200] * 12
        limit, remaining, _ = limit_headers(answers[-1])
        assert limit == 50 and 38 <= remaining < 50

    async def test_hits_made_while_the_counts_are_being_sent_still_count(self, limited) -> None:
        """The limiter sends its counts to the database every ~0.25 s. Hits that arrive while one such
        round trip is under way must still count: here the round trip is held open (a slow database),
        the token has used its 8 requests, and the 9th must be refused."""
        await inside_one_window()
        limiter = limited.app.state.runtime.limiter
        loop = limiter._task.get_loop()
        token = mint(limited, "viewer")
        await on_loop(loop, limiter.stop())  # no background sync: this test sends the counts itself
        held = HeldPool(limiter.pool, loop)
        limiter.pool = held
        try:
            answers = [await send(limited, "GET", PLUGINS, token=token) for _ in range(8)]
            syncing = on_loop(loop, limiter.sync())
            deadline = time.monotonic() + 5
            while not held.entered.is_set():
                assert time.monotonic() < deadline, "the limiter never sent its counts"
                await asyncio.sleep(0.01)
            during = await send(limited, "GET", PLUGINS, token=token)
            held.release()
            await syncing
            after = await send(limited, "GET", PLUGINS, token=token)
        finally:
            held.release()
            limiter.pool = held.pool
            await on_loop(loop, limiter.start())

        assert [r.status_code for r in answers] == [200] * 8
        assert_error(during, 429, "RATE_LIMITED")
        assert_error(after, 429, "RATE_LIMITED")

    async def test_replicas_share_the_count(self, databases, tmp_path_factory) -> None:
        """Two apps on one database: hits on both count towards one limit (known within a sync, ~0.25 s)."""
        await inside_one_window()
        database_url = await databases.create("limits-shared")
        first = create_app(limited_settings(database_url, tmp_path_factory.mktemp("charter-limits-a")))
        second = create_app(limited_settings(database_url, tmp_path_factory.mktemp("charter-limits-b")))
        async with AsyncTestClient(app=first) as a, AsyncTestClient(app=second) as b:
            on_a = [await send(a, "GET", OPEN, anonymous=True) for _ in range(3)]
            await asyncio.sleep(0.5)  # a sends its count
            on_b = [await send(b, "GET", OPEN, anonymous=True) for _ in range(3)]
            await asyncio.sleep(0.5)  # b sends its count and learns the total

            refused_by_b = await send(b, "GET", OPEN, anonymous=True)
            a_again = await send(a, "GET", OPEN, anonymous=True)  # a's 4th hit; a learns the total on sending it
            await asyncio.sleep(0.5)
            refused_by_a = await send(a, "GET", OPEN, anonymous=True)  # a's 5th: within a's own limit of 5

        assert [r.status_code for r in on_a] == [200] * 3
        assert [r.status_code for r in on_b].count(200) >= 2
        assert_error(refused_by_b, 429, "RATE_LIMITED")
        assert a_again.status_code in (200, 429)
        assert_error(refused_by_a, 429, "RATE_LIMITED")
