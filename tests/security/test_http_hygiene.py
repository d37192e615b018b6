"""HTTP hygiene: security headers on every answer (the SSE stream included), no-store on tokens and
secrets, Allow on a 405, API docs that load nothing from another origin, and an OpenAPI document that
describes every error with the real envelope."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest

from tests.e2e.access_kit import send
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.plugin_kit import PLUGINS, installed, manifest, unique_id

AUTH = "/api/v1/auth"
SECRET_SCHEMA = {"type": "object", "properties": {"token": {"type": "string", "secret": True}}}


def assert_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers.get("x-content-type-options") == "nosniff", dict(headers)
    assert headers.get("x-frame-options") == "DENY", dict(headers)
    assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), dict(headers)
    assert headers.get("referrer-policy") == "no-referrer", dict(headers)
    for name in ("x-content-type-options", "x-frame-options", "content-security-policy", "referrer-policy"):
        assert len(headers.get_list(name)) == 1, (name, headers.get_list(name))


class TestSecurityHeaders:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/health"),
            ("GET", PLUGINS),
            ("GET", f"{PLUGINS}/no-such-plugin"),  # an error from a handler
            ("GET", "/no/such/route"),  # an error from the router
            ("PATCH", PLUGINS),  # 405 from the router
            ("GET", "/schema/openapi.json"),
            ("GET", "/schema/swagger"),
            ("GET", "/schema/assets/swagger-ui.css"),
        ],
    )
    async def test_on_every_kind_of_answer(self, client, method: str, path: str) -> None:
        response = await client.request(method, path)

        assert_security_headers(response)

    async def test_on_an_authentication_failure(self, client) -> None:
        response = await client.get(PLUGINS, headers={"Authorization": "Bearer not-a-token"})

        assert response.status_code == 401
        assert_security_headers(response)

    async def test_api_answers_may_load_nothing(self, client) -> None:
        csp = (await client.get("/health")).headers["content-security-policy"]

        assert "default-src 'none'" in csp

    async def test_the_event_stream_keeps_streaming_with_them(self, fanout_server) -> None:
        async with httpx.AsyncClient(base_url=fanout_server.url, headers=fanout_server.headers, timeout=10) as http:
            async with http.stream("GET", "/api/v1/events/stream") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert_security_headers(response)
                first = await asyncio.wait_for(response.aiter_raw().__anext__(), 10)
        assert first.startswith(b"retry: 2000"), first


class TestNoStore:
    async def test_login_answers_are_not_stored(self, client) -> None:
        response = await client.post(f"{AUTH}/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})

        assert response.status_code == 200
        assert "no-store" in response.headers["cache-control"]

    async def test_refresh_answers_are_not_stored(self, client) -> None:
        tokens = (await client.post(f"{AUTH}/login", json={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})).json()

        response = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})

        assert response.status_code == 200, response.text
        assert "no-store" in response.headers["cache-control"]

    async def test_register_answers_are_not_stored(self, client) -> None:
        email = f"hygiene-{uuid.uuid4().hex[:8]}@charter.test"

        response = await client.post(f"{AUTH}/register", json={"email": email, "password": "a-long-password-1"})

        assert response.status_code == 202, response.text
        assert "no-store" in response.headers["cache-control"]

    async def test_secrets_in_clear_are_not_stored(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SECRET_SCHEMA), config={"token": "s3cret"})

        response = await client.get(f"{PLUGINS}/{pid}/config", params={"include_secrets": "true", "consistent": "true"})

        assert response.status_code == 200, response.text
        assert response.json()["config"]["token"] == "s3cret"
        assert "no-store" in response.headers["cache-control"]


class TestMethodNotAllowed:
    async def test_names_the_allowed_methods(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await client.patch(f"{PLUGINS}/{pid}", json={})

        assert response.status_code == 405
        assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert {"GET", "PUT", "DELETE"} <= allowed and "PATCH" not in allowed


class TestDocsWorkOffline:
    @pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
    async def test_the_page_loads_only_same_origin_assets_that_answer(self, client, page: str) -> None:
        response = await client.get(page)

        assert response.status_code == 200
        html = response.text
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        assert urls, html
        assert not re.search(r"https?://", html.split("<script type='text/javascript'>")[0]), "an asset from another origin"
        kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = await client.get(url)
            assert asset.status_code == 200, url
            expected = next(kind for suffix, kind in kinds.items() if url.endswith(suffix))
            assert expected in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert any(u.endswith("swagger-ui-bundle.js") for u in urls) and any(u.endswith(".css") for u in urls)

    async def test_the_bundled_swagger_ui_reads_openapi_3_1(self, client) -> None:
        document = (await client.get("/schema/openapi.json")).json()
        bundle = (await client.get("/schema/assets/swagger-ui-bundle.js")).text

        assert document["openapi"].startswith("3.1")
        assert "isOAS31" in bundle or "OpenAPI31" in bundle or "openapi31" in bundle.lower()

    async def test_the_assets_need_no_sign_in(self, client) -> None:
        for url in ("/schema/swagger", "/schema/assets/swagger-ui.css"):
            response = await send(client, "GET", url, anonymous=True)

            assert response.status_code == 200, url


STANDARD = {"400", "401"}


class TestOpenApiErrors:
    @pytest.fixture
    async def document(self, client) -> dict:
        return (await client.get("/schema/openapi.json")).json()

    def operations(self, document: dict):
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method in ("get", "put", "post", "delete", "patch"):
                    yield path, method, operation

    async def test_the_envelope_is_a_component(self, document) -> None:
        envelope = document["components"]["schemas"]["ErrorEnvelope"]

        assert envelope["required"] == ["error"]
        assert set(envelope["properties"]["error"]["properties"]) == {"code", "message", "details", "request_id"}

    async def test_every_route_lists_400_and_401_with_the_envelope(self, document) -> None:
        for path, method, operation in self.operations(document):
            responses = operation["responses"]
            assert STANDARD <= set(responses), (method, path, sorted(responses))
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path, status)

    async def test_protected_routes_list_403_and_public_ones_do_not(self, document) -> None:
        public = {"login", "refreshToken", "health", "ready", "metrics", "auditPublicKey"}
        for path, method, operation in self.operations(document):
            assert ("403" in operation["responses"]) == (operation["operationId"] not in public), (method, path)

    @pytest.mark.parametrize(
        ("operation_id", "statuses"),
        [
            ("getPlugin", {"404", "503"}),
            ("installPlugin", {"409", "412", "413", "422"}),
            ("enablePlugin", {"404", "409", "412", "413", "422"}),
            ("listPlugins", {"429", "503"}),
            ("streamEvents", {"503"}),
            ("grantRole", {"404", "409"}),
        ],
    )
    async def test_routes_list_the_errors_they_can_answer(self, document, operation_id: str, statuses: set[str]) -> None:
        (operation,) = [op for _, _, op in self.operations(document) if op["operationId"] == operation_id]

        assert statuses <= set(operation["responses"]), sorted(operation["responses"])
