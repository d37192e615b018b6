"""Typed identity bodies (interfaces/http/bodies.py): every identity write route with a body declares it
(OpenAPI shows it, so Swagger UI can send it), and hostile bodies get Charter's refusals, naming the
field: unknown or over-long fields, broken JSON, no body at all, too large a body, forms with too many
fields. Nothing is written for a refused body."""

from __future__ import annotations

import pytest

from tests.e2e.access_kit import AUTH, EVENTS, PASSWORD, ROLES, USERS, create_user, grant, login, send, unique_email, unique_name
from tests.e2e.plugin_kit import assert_error
from interfaces.http.identity.auth import MAX_PASSWORD, MAX_REFRESH_TOKEN
from domain.limits import MAX_TEXT
from interfaces.http.wellformed import MAX_JSON_BYTES

PERMISSIONS = "/api/v1/admin/permissions"

# (method, path, operation id, body schema) of every identity write route that takes a body
TYPED = [
    ("post", "/api/v1/auth/register", "register", "Registration"),
    ("post", "/api/v1/auth/login", "login", "Login"),
    ("post", "/api/v1/auth/refresh", "refreshToken", "RefreshRequest"),
    ("post", "/api/v1/auth/logout", "logout", "RefreshRequest"),
    ("post", "/api/v1/admin/users", "createUser", "UserCreate"),
    ("post", "/api/v1/admin/users/{user_id}/deactivate", "deactivateUser", "Deactivation"),
    ("post", "/api/v1/admin/users/{user_id}/activate", "activateUser", "Reason"),
    ("post", "/api/v1/admin/users/{user_id}/roles/{role}", "grantRole", "Reason"),
    ("delete", "/api/v1/admin/users/{user_id}/roles/{role}", "revokeRole", "Reason"),
    ("delete", "/api/v1/admin/roles/{role_id}", "deleteRole", "Reason"),
    ("post", "/api/v1/admin/roles", "createRole", "RoleCreate"),
    ("put", "/api/v1/admin/roles/{role_id}", "updateRole", "RoleUpdate"),
    ("post", "/api/v1/admin/permissions", "createPermission", "PermissionCreate"),
]


def raw(client, method: str, url: str, content: bytes, content_type: str = "application/json", **kwargs):
    return send(client, method, url, content=content, headers={"content-type": content_type}, **kwargs)


class TestOpenApiShowsEachBody:
    @pytest.mark.parametrize(("method", "path", "operation", "schema"), TYPED, ids=[t[2] for t in TYPED])
    async def test_the_route_declares_its_json_body(self, client, method, path, operation, schema) -> None:
        document = (await client.get("/schema/openapi.json")).json()

        found = {p.rstrip("/"): ops for p, ops in document["paths"].items()}[path][method]
        assert found["operationId"] == operation
        body = found["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{schema}"}, body

    async def test_the_bodies_bound_their_strings(self, client) -> None:
        schemas = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]

        assert schemas["Login"]["properties"]["password"]["maxLength"] == MAX_PASSWORD
        assert schemas["RefreshRequest"]["properties"]["refresh_token"]["maxLength"] == MAX_REFRESH_TOKEN
        assert schemas["UserCreate"]["properties"]["email"]["maxLength"] == 254
        assert schemas["RoleCreate"]["properties"]["permissions"]["maxItems"] == 64


class TestRefusals:
    async def test_an_unknown_field_is_named(self, client) -> None:
        response = await send(client, "POST", ROLES, json={"name": "bodies-unknown", "colour": "red"})

        assert_error(response, 400, "VALIDATION_FAILED", field="colour")

    async def test_a_missing_field_is_named(self, client) -> None:
        response = await send(client, "POST", USERS, json={"email": unique_email("bodies-missing")})

        assert_error(response, 400, "VALIDATION_FAILED", field="password")

    async def test_an_over_long_password_is_refused_before_any_hash(self, client) -> None:
        email = unique_email("bodies-long")
        response = await send(client, "POST", USERS, json={"email": email, "password": "x" * (MAX_PASSWORD + 1)})

        assert_error(response, 400, "VALIDATION_FAILED", field="password")
        refused = await send(client, "POST", f"{AUTH}/login", json={"username": email, "password": PASSWORD}, anonymous=True)
        assert_error(refused, 401, "INVALID_CREDENTIALS")  # nothing was written

    async def test_an_over_long_refresh_token_is_refused(self, client) -> None:
        response = await send(client, "POST", f"{AUTH}/refresh", json={"refresh_token": "r" * (MAX_REFRESH_TOKEN + 1)}, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="refresh_token")

    async def test_broken_json_is_malformed(self, client) -> None:
        response = await raw(client, "POST", PERMISSIONS, b'{"name": "bodies:broken",')

        assert_error(response, 400, "MALFORMED_JSON", field="body")

    @pytest.mark.parametrize("path", [ROLES, f"{AUTH}/refresh", f"{AUTH}/login"], ids=["roles", "refresh", "login"])
    async def test_no_body_at_all_names_the_body(self, client, path) -> None:
        response = await raw(client, "POST", path, b"")

        assert_error(response, 400, "VALIDATION_FAILED", field="body")

    async def test_a_body_announced_too_large_is_refused_before_it_is_read(self, client) -> None:
        body = b'{"name": "bodies-large", "description": "' + b"x" * MAX_JSON_BYTES + b'"}'

        response = await raw(client, "POST", ROLES, body)

        assert_error(response, 413, "PAYLOAD_TOO_LARGE", field="body")

    async def test_a_nul_character_is_refused_naming_the_field(self, client) -> None:
        response = await raw(client, "POST", ROLES, b'{"name": "bodies-nul", "description": "a\\u0000b"}')

        assert_error(response, 400, "VALIDATION_FAILED", field="description")

    async def test_a_json_array_is_not_a_body(self, client) -> None:
        response = await raw(client, "POST", f"{AUTH}/login", b"[]", anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED")


class TestOptionalBody:
    async def test_deactivation_takes_no_body_or_a_reason(self, client) -> None:
        first = await create_user(client, unique_email("bodies-deactivate"))
        second = await create_user(client, unique_email("bodies-deactivate"))

        without = await raw(client, "POST", f"{USERS}/{first.id}/deactivate", b"")
        with_reason = await send(client, "POST", f"{USERS}/{second.id}/deactivate", json={"reason": "left the company"})

        assert (without.status_code, with_reason.status_code) == (200, 200), (without.text, with_reason.text)

    async def test_a_deactivation_reason_is_bounded(self, client) -> None:
        account = await create_user(client, unique_email("bodies-reason"))

        response = await send(client, "POST", f"{USERS}/{account.id}/deactivate", json={"reason": "r" * 4001})

        assert_error(response, 400, "VALIDATION_FAILED", field="reason")


class Target:
    """One of the routes whose body is an optional reason, set up so that the write succeeds once: the
    request to send, the stream it writes to and the event it records there."""

    def __init__(self, method: str, url: str, stream: str, event_type: str) -> None:
        self.method, self.url, self.stream, self.event_type = method, url, stream, event_type

    async def events(self, client) -> list[dict]:
        params = {"stream": self.stream, "event_type": self.event_type, "consistent": "true", "limit": 100}
        response = await send(client, "GET", EVENTS, params=params)
        assert response.status_code == 200, response.text
        return response.json()["items"]


async def activation(client) -> Target:
    account = await create_user(client, unique_email("bodies-activate"), is_active=False)
    return Target("POST", f"{USERS}/{account.id}/activate", f"user:{account.id}", "User.Activated")


async def role_grant(client) -> Target:
    account = await create_user(client, unique_email("bodies-grant"))
    return Target("POST", f"{USERS}/{account.id}/roles/auditor?site_id=site-a", f"user:{account.id}", "User.RoleGranted")


async def role_revocation(client) -> Target:
    account = await create_user(client, unique_email("bodies-revoke"))
    await grant(client, account.id, "auditor", "site-a")
    return Target("DELETE", f"{USERS}/{account.id}/roles/auditor?site_id=site-a", f"user:{account.id}", "User.RoleRevoked")


async def role_deletion(client) -> Target:
    name = unique_name("bodies-delete")
    created = await send(client, "POST", ROLES, json={"name": name, "permissions": ["plugins:read"]})
    assert created.status_code == 201, created.text
    return Target("DELETE", f"{ROLES}/{name}", f"role:{name}", "Role.Deleted")


REASONED = [activation, role_grant, role_revocation, role_deletion]
ROUTES = ["activateUser", "grantRole", "revokeRole", "deleteRole"]


@pytest.mark.parametrize("setup", REASONED, ids=ROUTES)
class TestAnOptionalReason:
    """activateUser, grantRole, revokeRole and deleteRole: no body, or `{"reason": ...}` recorded in the
    event (the event log shows it); anything else in the body is refused naming the field, and nothing is
    written."""

    async def test_no_body_records_no_reason(self, client, setup) -> None:
        target = await setup(client)

        response = await send(client, target.method, target.url)

        assert response.status_code == 200, response.text
        [event] = await target.events(client)
        assert event["payload"]["reason"] == ""

    async def test_an_empty_json_body_records_no_reason(self, client, setup) -> None:
        target = await setup(client)

        response = await raw(client, target.method, target.url, b"{}")

        assert response.status_code == 200, response.text
        [event] = await target.events(client)
        assert event["payload"]["reason"] == ""

    async def test_the_reason_is_recorded_in_the_event(self, client, setup) -> None:
        target = await setup(client)

        response = await send(client, target.method, target.url, json={"reason": "ticket OPS-42: é ✓"})

        assert response.status_code == 200, response.text
        [event] = await target.events(client)
        assert event["payload"]["reason"] == "ticket OPS-42: é ✓"
        assert event["position"] == response.json()["position"]

    async def test_an_over_long_reason_is_refused_naming_it(self, client, setup) -> None:
        target = await setup(client)

        response = await send(client, target.method, target.url, json={"reason": "r" * (MAX_TEXT + 1)})

        assert_error(response, 400, "VALIDATION_FAILED", field="reason")
        assert await target.events(client) == []

    async def test_a_reason_of_the_longest_length_is_taken(self, client, setup) -> None:
        target = await setup(client)

        response = await send(client, target.method, target.url, json={"reason": "r" * MAX_TEXT})

        assert response.status_code == 200, response.text
        assert (await target.events(client))[0]["payload"]["reason"] == "r" * MAX_TEXT

    @pytest.mark.parametrize(
        ("body", "field"),
        [(b'{"reason": 42}', "reason"), (b'{"reason": ["a"]}', "reason"), (b'{"reason": {"a": 1}}', "reason"),
         (rb'{"reason": "a\u0000b"}', "reason"), (b'{"site_id": "site-b"}', "site_id"), (b'{"role": "admin"}', "role"),
         (b"[]", None), (b'"a reason"', None), (b"42", None), (b"null", None)],
        ids=["number", "list", "object", "nul", "site-in-body", "role-in-body", "array", "string", "integer", "null"],
    )
    async def test_a_body_of_the_wrong_type_is_refused(self, client, setup, body, field) -> None:
        target = await setup(client)

        response = await raw(client, target.method, target.url, body)

        assert_error(response, 400, "VALIDATION_FAILED", field=field)
        assert await target.events(client) == []

    @pytest.mark.parametrize(
        ("body", "content_type"),
        [(b'{"reason": "x",', "application/json"), (b"reason=x", "application/json"), (b"\xff\xfe", "application/json"),
         (b"just a reason", "text/plain"), (b"reason=x", "application/x-www-form-urlencoded"),
         (b"--xyz\r\nContent-Disposition: form-data; name=\"reason\"\r\n\r\nx\r\n--xyz--\r\n", "multipart/form-data; boundary=xyz")],
        ids=["truncated", "form-as-json", "not-utf8", "text", "urlencoded", "multipart"],
    )
    async def test_a_body_that_is_not_json_is_refused(self, client, setup, body, content_type) -> None:
        target = await setup(client)

        response = await raw(client, target.method, target.url, body, content_type)

        assert_error(response, 400, "MALFORMED_JSON", field="body")  # a form is not taken as "no reason"
        assert await target.events(client) == []


class TestLoginForms:
    async def test_a_multipart_form_signs_in(self, client) -> None:
        account = await create_user(client, unique_email("bodies-multipart"))

        response = await send(
            client, "POST", f"{AUTH}/login", files={"username": (None, account.email), "password": (None, PASSWORD)}, anonymous=True
        )

        assert response.status_code == 200, response.text
        assert response.request.headers["content-type"].startswith("multipart/form-data")

    async def test_oauth2_fields_the_route_does_not_name_are_ignored(self, client) -> None:
        account = await create_user(client, unique_email("bodies-oauth2"))
        form = {"grant_type": "password", "username": account.email, "password": PASSWORD, "scope": "", "client_id": "swagger"}

        response = await send(client, "POST", f"{AUTH}/login", data=form, anonymous=True)

        assert response.status_code == 200, response.text

    async def test_a_form_with_too_many_fields_is_refused(self, client) -> None:
        form = {f"f{i}": "x" for i in range(40)}

        response = await send(client, "POST", f"{AUTH}/login", data=form, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="body")

    async def test_an_over_long_form_password_is_refused_naming_it(self, client) -> None:
        form = {"username": unique_email("bodies-form"), "password": "p" * (MAX_PASSWORD + 1)}

        response = await send(client, "POST", f"{AUTH}/login", data=form, anonymous=True)

        assert_error(response, 400, "VALIDATION_FAILED", field="password")

    async def test_a_broken_multipart_body_is_refused(self, client) -> None:
        response = await raw(
            client, "POST", f"{AUTH}/login", b"--xyz\r\nnot a header\r\n\r\n", "multipart/form-data; boundary=xyz", anonymous=True
        )

        assert_error(response, 400, "VALIDATION_FAILED", field="body")


async def test_the_tokens_of_a_typed_login_work(client) -> None:
    account = await create_user(client, unique_email("bodies-tokens"))

    tokens = await login(client, account.email)
    me = await send(client, "GET", f"{AUTH}/me", token=tokens["access_token"])

    assert me.json()["id"] == account.id
