"""Bad plugin archives and manifests: 400 MANIFEST_INVALID naming the field, and nothing written."""

from __future__ import annotations

import pytest

from tests.e2e.plugin_kit import (
    PLUGINS,
    archive,
    assert_error,
    install,
    installed,
    manifest,
    nothing_written,
    unique_id,
    update,
)


class TestMalformedManifest:
    async def test_a_manifest_that_is_not_json_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, archive(f'{{"id": "{pid}", "name": "x", "version": '))

        assert_error(response, 400, "MANIFEST_INVALID", field="archive.manifest")

    async def test_a_manifest_that_is_not_an_object_is_refused(self, client) -> None:
        assert_error(await install(client, archive("[1, 2]")), 400, "MANIFEST_INVALID", field="archive.manifest")

    async def test_a_manifest_without_a_name_is_refused_naming_name(self, client, database_url) -> None:
        pid = unique_id()
        nameless = {"id": pid, "version": "1.0.0"}

        async with nothing_written(database_url, pid):
            response = await install(client, nameless)

        error = assert_error(response, 400, "MANIFEST_INVALID")
        assert "name" in error["message"]
        assert error["details"]["field"] == "manifest.name"

    async def test_a_blank_name_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, {**manifest(pid), "name": "   "})

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.name")

    async def test_a_bad_version_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, version="first release"))

        error = assert_error(response, 400, "MANIFEST_INVALID", field="manifest.version")
        assert "first release" in error["message"]

    @pytest.mark.parametrize("bad_id", ["Upper-Case", "has space", "-leading-dash", "x" * 64, ""])
    async def test_a_bad_id_is_refused(self, client, database_url, bad_id: str) -> None:
        async with nothing_written(database_url, bad_id):
            response = await install(client, manifest(bad_id))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.id")

    async def test_a_field_of_the_wrong_type_is_refused_naming_it(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, tags="not-a-list"))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.tags")

    async def test_an_unknown_manifest_field_is_refused_naming_it(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, colour="blue"))

        error = assert_error(response, 400, "MANIFEST_INVALID")
        assert "colour" in error["message"]
        assert error["details"]["field"] == "manifest.colour"

    @pytest.mark.parametrize(
        ("schema", "field"),
        [
            ({"type": "nope"}, "manifest.config_schema.type"),
            ({"type": "object", "properties": {"level": {"type": 5}}}, "manifest.config_schema.properties.level.type"),
            ({"type": "object", "required": "level"}, "manifest.config_schema.required"),
        ],
    )
    async def test_a_config_schema_that_is_not_a_json_schema_is_refused(
        self, client, database_url, schema: dict, field: str
    ) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, config_schema=schema))

        error = assert_error(response, 400, "MANIFEST_INVALID", field=field)
        assert "JSON Schema" in error["message"]

    async def test_a_config_schema_that_is_not_an_object_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, config_schema="object"))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.config_schema")

    async def test_a_bad_dependency_range_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, dependencies={"base-lib": "=>1.0"}))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.dependencies.base-lib")

    async def test_a_dependency_on_itself_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, dependencies={pid: ">=1"}))

        assert_error(response, 400, "MANIFEST_INVALID", field=f"manifest.dependencies.{pid}")

    async def test_a_bad_host_version_range_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, host_versions="one or two"))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.host_versions")

    async def test_an_update_with_a_malformed_manifest_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await update(client, pid, manifest(pid, version="two"))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.version")


class TestBadArchiveUpload:
    async def test_an_archive_that_is_not_a_zip_is_refused(self, client) -> None:
        response = await install(client, b"PK? no, just some text")

        assert_error(response, 400, "MANIFEST_INVALID", field="archive")

    async def test_a_zip_without_a_manifest_is_refused(self, client) -> None:
        response = await install(client, archive("# readme\n", name="README.md"))

        error = assert_error(response, 400, "MANIFEST_INVALID", field="archive")
        assert "charter-plugin.json" in error["message"]

    async def test_a_multipart_install_without_the_archive_field_is_refused(self, client) -> None:
        response = await client.post(
            f"{PLUGINS}/install", files={"bundle": ("plugin.zip", archive(manifest(unique_id())), "application/zip")}
        )

        assert_error(response, 400, "VALIDATION_FAILED", field="archive")

    async def test_an_archive_sent_as_a_text_field_is_refused(self, client) -> None:
        response = await client.post(
            f"{PLUGINS}/install", data={"archive": "not a file"}, files={"other": ("x.txt", b"x", "text/plain")}
        )

        assert_error(response, 400, "VALIDATION_FAILED", field="archive")

    async def test_an_update_with_an_archive_that_is_not_a_zip_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await update(client, pid, b"not a zip")

        assert_error(response, 400, "MANIFEST_INVALID", field="archive")
