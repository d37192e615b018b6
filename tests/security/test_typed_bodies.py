"""Hostile bodies on the typed-body routes: the uninstall body (new), a multipart body sent to a JSON
route, and JSON where an upload is expected. Each is refused with a 4xx naming the field; nothing is written."""

from __future__ import annotations

import pytest

from tests.e2e.plugin_kit import PLUGINS, archive, assert_error, installed, manifest, nothing_written, unique_id


@pytest.fixture
async def plugin(client) -> str:  # noqa: F811
    pid = unique_id()
    await installed(client, manifest(pid))
    return pid


class TestUninstallBody:
    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            (b'{"reason": "x", "purge": true}', "purge"),
            (b'{"force": "yes"}', "force"),
            (b'{"cleanup_data": 1}', "cleanup_data"),
            (b'{"reason": 42}', "reason"),
            (b'{"reason": "' + b"x" * 5000 + b'"}', "reason"),
            (b'{"reason": "nul \\u0000 here"}', "reason"),
            (b"[]", "body"),
        ],
        ids=["unknown-field", "force-not-bool", "cleanup-not-bool", "reason-not-text", "reason-too-long", "nul", "not-object"],
    )
    async def test_is_refused_naming_the_field(self, client, database_url, plugin: str, raw: bytes, field: str) -> None:  # noqa: F811
        async with nothing_written(database_url, plugin):
            response = await client.request(
                "DELETE", f"{PLUGINS}/{plugin}", content=raw, headers={"content-type": "application/json"}
            )

        assert_error(response, 400, "VALIDATION_FAILED", field=field)

    async def test_malformed_json_is_refused(self, client, database_url, plugin: str) -> None:  # noqa: F811
        async with nothing_written(database_url, plugin):
            response = await client.request(
                "DELETE", f"{PLUGINS}/{plugin}", content=b'{"reason": ', headers={"content-type": "application/json"}
            )

        assert_error(response, 400, "MALFORMED_JSON", field="body")

    async def test_a_body_past_a_mebibyte_is_refused(self, client, database_url, plugin: str) -> None:  # noqa: F811
        async with nothing_written(database_url, plugin):
            response = await client.request(
                "DELETE", f"{PLUGINS}/{plugin}", content=b'{"reason": "' + b"x" * (1024 * 1024) + b'"}',
                headers={"content-type": "application/json"},
            )

        assert_error(response, 413, "PAYLOAD_TOO_LARGE", field="body")


class TestWrongKindOfBody:
    async def test_a_multipart_body_to_a_json_route_is_refused(self, client, database_url, plugin: str) -> None:  # noqa: F811
        async with nothing_written(database_url, plugin):
            response = await client.put(f"{PLUGINS}/{plugin}/config", files={"config": (None, b'{"a": 1}')})

        assert_error(response, 400, "MALFORMED_JSON", field="body")

    async def test_an_upload_without_its_archive_field_is_refused(self, client, database_url) -> None:  # noqa: F811
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await client.post(
                f"{PLUGINS}/install", files={"plugin": ("p.zip", archive(manifest(pid)), "application/zip")}
            )

        assert_error(response, 400, "VALIDATION_FAILED", field="archive")

    async def test_json_naming_a_file_source_is_refused(self, client) -> None:  # noqa: F811
        response = await client.put(f"{PLUGINS}/{unique_id()}", json={"source": "file"})

        assert_error(response, 400, "VALIDATION_FAILED", field="source")
