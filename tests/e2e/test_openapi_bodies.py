"""Every write operation in /schema/openapi.json declares its request body, and what the document
declares is what the routes take: JSON bodies decoded into bounded Structs, uploads as the multipart
fields it lists (what Swagger UI builds its forms from)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.plugin_kit import (
    PLUGINS,
    archive,
    assert_error,
    assert_written,
    event_types,
    installed,
    manifest,
    nothing_written,
    unique_id,
)

WRITES = ("post", "put", "patch", "delete")
PLUGIN_WRITES = {
    "installPlugin", "updatePlugin", "rollBackPlugin", "enablePlugin", "disablePlugin", "restartPlugin", "reloadPlugin",
    "uninstallPlugin", "setPluginConfig", "declassifyPluginConfig",
}
IDENTITY_WRITES = {
    "login", "logout", "refreshToken", "register", "activateUser", "createUser", "deactivateUser", "grantRole",
    "revokeRole", "createRole", "updateRole", "deleteRole", "createPermission",
    "changePassword", "updateMe", "endMySession", "endMyOtherSessions", "resetPassword", "endUserSession",
    "endUserSessions",
}
SITE_WRITES = {
    "createSite", "validateExtension", "activateExtension", "reconfigureExtension", "deactivateExtension",
    "validateExtensionCombination", "recordSignoff", "activateExtensionAtSites", "deactivateExtensionAtSites",
}
TASK_WRITES = {
    "createTask", "updateTask", "deleteTask", "runTask", "pauseTask", "resumeTask", "cancelTaskRun",
}
EVENT_WRITES = {"createStreamTicket"}
ALL_WRITES = PLUGIN_WRITES | IDENTITY_WRITES | SITE_WRITES | TASK_WRITES | EVENT_WRITES


@pytest.fixture(scope="module")
async def document(client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


def write_operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: op for item in document["paths"].values() for method, op in item.items() if method in WRITES
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def strings_of(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(path, schema) of every string-typed property, nested ones included."""
    found = []
    for name, prop in schema.get("properties", {}).items():
        kinds = [prop.get("type")] + [alt.get("type") for alt in prop.get("oneOf", [])]
        if "string" in kinds:
            found.append((f"{path}{name}", prop))
        found += strings_of(prop, f"{path}{name}.")
    return found


class TestEveryWriteDeclaresItsBody:
    async def test_the_document_lists_the_write_operations_this_test_knows(self, document) -> None:
        assert set(write_operations(document)) == ALL_WRITES

    @pytest.mark.parametrize("operation_id", sorted(ALL_WRITES))
    async def test_declares_a_request_body_with_a_schema(self, document, operation_id: str) -> None:
        body = write_operations(document)[operation_id].get("requestBody")

        assert body is not None, f"{operation_id} declares no requestBody"
        assert body["content"], operation_id
        for media in body["content"].values():
            schema = resolve(document, media["schema"])
            assert schema.get("type") == "object" and schema.get("properties"), (operation_id, schema)

    @pytest.mark.parametrize("operation_id", sorted(ALL_WRITES))
    async def test_every_string_field_of_a_json_body_is_bounded(self, document, operation_id: str) -> None:
        body = write_operations(document)[operation_id]["requestBody"]
        schema = resolve(document, body["content"]["application/json"]["schema"])

        unbounded = [path for path, prop in strings_of(schema) if "maxLength" not in prop and "enum" not in prop]
        assert unbounded == [], f"{operation_id}: unbounded string fields {unbounded}"

    @pytest.mark.parametrize(
        ("operation_id", "required"),
        [("enablePlugin", False), ("rollBackPlugin", False), ("uninstallPlugin", False), ("setPluginConfig", True),
         ("declassifyPluginConfig", True), ("activateUser", False), ("deactivateUser", False), ("grantRole", False),
         ("revokeRole", False), ("deleteRole", False), ("validateExtension", False), ("activateExtension", False),
         ("deactivateExtension", False), ("reconfigureExtension", True), ("recordSignoff", True), ("createSite", True),
         ("createTask", True), ("updateTask", True), ("deleteTask", False), ("runTask", False), ("pauseTask", False),
         ("resumeTask", False), ("cancelTaskRun", False), ("createStreamTicket", False)],
    )
    async def test_an_optional_body_is_not_required(self, document, operation_id: str, required: bool) -> None:
        assert write_operations(document)[operation_id]["requestBody"]["required"] is required


class TestUploadsAreDocumented:
    async def test_install_lists_the_archive_config_and_auto_enable_fields(self, document) -> None:
        content = write_operations(document)["installPlugin"]["requestBody"]["content"]

        assert set(content) == {"application/json", "multipart/form-data"}
        form = content["multipart/form-data"]["schema"]
        assert set(form["properties"]) == {"archive", "config", "auto_enable"} and form["required"] == ["archive"]
        assert form["properties"]["archive"]["format"] == "binary"
        assert form["properties"]["auto_enable"]["type"] == "boolean"
        assert resolve(document, content["application/json"]["schema"])["required"] == ["source"]

    async def test_update_lists_the_archive_field(self, document) -> None:
        content = write_operations(document)["updatePlugin"]["requestBody"]["content"]

        assert set(content) == {"application/json", "multipart/form-data"}
        assert set(content["multipart/form-data"]["schema"]["properties"]) == {"archive"}


class TestWhatTheDocumentDeclaresIsTaken:
    async def test_an_install_sent_as_the_documented_form_fields(self, client) -> None:
        pid = unique_id()

        response = await client.post(
            f"{PLUGINS}/install",
            files={"archive": ("p.zip", archive(manifest(pid)), "application/zip")},
            data={"config": '{"level": 2}', "auto_enable": "true"},
        )

        assert_written(response, pid, 201)
        plugin = (await client.get(f"{PLUGINS}/{pid}", params={"consistent": "true"})).json()
        assert plugin["enabled"] is True and plugin["configuration"] == {"level": 2}

    async def test_an_empty_object_is_an_empty_optional_body(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        assert_written(await client.post(f"{PLUGINS}/{pid}/restart", json={}), pid)

        assert (await event_types(database_url, pid))[-1] == "Plugin.Restarted"

    async def test_uninstall_takes_its_options_as_a_json_body(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await client.request("DELETE", f"{PLUGINS}/{pid}", json={"reason": "retired", "cleanup_data": True})

        assert_written(response, pid)
        assert (await event_types(database_url, pid))[-1] == "Plugin.Uninstalled"

    async def test_uninstall_options_in_the_body_and_the_query_are_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.request("DELETE", f"{PLUGINS}/{pid}?force=true", json={"reason": "retired"})

        assert_error(response, 400, "VALIDATION_FAILED", field="force")

    async def test_a_required_body_that_is_missing_is_refused_naming_the_body(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.put(f"{PLUGINS}/{pid}/config", content=b"", headers={"content-type": "application/json"})

        assert_error(response, 400, "VALIDATION_FAILED", field="body")

    async def test_a_json_body_past_a_mebibyte_is_refused_before_it_is_read(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await client.post(
            f"{PLUGINS}/{pid}/restart",
            content=b"{" + b" " * (1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        )

        assert_error(response, 413, "PAYLOAD_TOO_LARGE", field="body")
