"""Bad input to the plugin API: the right 4xx and error code, the field named, and nothing written."""

from __future__ import annotations

import json

import pytest

from tests.e2e.plugin_kit import (
    PLUGINS,
    archive,
    assert_error,
    event_count,
    install,
    installed,
    manifest,
    nothing_written,
    unique_id,
    update,
    upload,
)

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {"retries": {"type": "integer", "minimum": 0, "maximum": 10}, "mode": {"enum": ["fast", "safe"]}},
    "required": ["mode"],
}


async def post_json(client, path: str, raw: bytes):
    return await client.post(path, content=raw, headers={"content-type": "application/json"})


class TestBadInstallOptions:
    async def test_a_config_field_that_is_not_json_is_refused_naming_config(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid), config="{mode: fast")

        assert_error(response, 400, "MALFORMED_JSON", field="config")

    async def test_a_config_field_that_is_not_an_object_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid), config="[1, 2]")

        assert_error(response, 400, "VALIDATION_FAILED", field="config")

    async def test_an_auto_enable_field_that_is_not_a_boolean_is_refused(self, client, database_url) -> None:
        """The JSON install refuses a non-boolean auto_enable; the multipart install must not silently read it as false."""
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await client.post(
                f"{PLUGINS}/install", files=upload(archive(manifest(pid))), data={"auto_enable": "definitely"}
            )

        assert_error(response, 400, "VALIDATION_FAILED", field="auto_enable")


class TestConfigurationViolatingTheSchema:
    async def test_at_install_is_refused_naming_the_field(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, config_schema=CONFIG_SCHEMA), config={"mode": "fast", "retries": 99})

        error = assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.retries")
        assert error["details"]["violations"] == [{"field": "config.retries", "message": "99 is greater than the maximum of 10"}]

    async def test_at_install_every_violation_is_listed(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, config_schema=CONFIG_SCHEMA), config={"retries": -1})

        error = assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR")
        assert sorted(v["field"] for v in error["details"]["violations"]) == ["config.mode", "config.retries"]

    async def test_at_an_entry_point_install_is_refused(self, client) -> None:
        response = await client.post(
            f"{PLUGINS}/install", json={"source": "entrypoint", "entrypoint": unique_id("none"), "config": "fast"}
        )

        assert_error(response, 400, "VALIDATION_FAILED", field="config")

    async def test_at_put_is_refused_naming_the_field(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=CONFIG_SCHEMA), config={"mode": "fast"})

        async with nothing_written(database_url, pid):
            response = await client.put(f"{PLUGINS}/{pid}/config", json={"config": {"mode": "reckless"}})

        error = assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.mode")
        assert "reckless" in error["message"]

    async def test_at_put_a_missing_required_field_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=CONFIG_SCHEMA), config={"mode": "fast"})

        async with nothing_written(database_url, pid):
            response = await client.put(f"{PLUGINS}/{pid}/config", json={"config": {"retries": 1}})

        error = assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.mode")
        assert "mode" in error["message"]

    async def test_at_put_a_body_without_config_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=CONFIG_SCHEMA), config={"mode": "fast"})

        async with nothing_written(database_url, pid):
            response = await client.put(f"{PLUGINS}/{pid}/config", json={"mode": "safe"})

        assert_error(response, 400, "VALIDATION_FAILED")

    async def test_at_put_a_config_that_is_not_an_object_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=CONFIG_SCHEMA), config={"mode": "fast"})

        async with nothing_written(database_url, pid):
            response = await client.put(f"{PLUGINS}/{pid}/config", json={"config": ["mode", "safe"]})

        assert_error(response, 400, "VALIDATION_FAILED", field="config")


class TestBadJsonBody:
    async def test_malformed_json_is_refused(self, client) -> None:
        response = await post_json(client, f"{PLUGINS}/install", b'{"source": "entrypoint", ')

        assert_error(response, 400, "MALFORMED_JSON", field="body")

    async def test_malformed_json_to_a_lifecycle_command_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await post_json(client, f"{PLUGINS}/{pid}/disable", b"{reason: maintenance}")

        assert_error(response, 400, "MALFORMED_JSON")

    async def test_an_unknown_field_is_refused_naming_it(self, client) -> None:
        response = await client.post(
            f"{PLUGINS}/install", json={"source": "entrypoint", "entrypoint": "x", "autoEnable": True}
        )

        error = assert_error(response, 400, "VALIDATION_FAILED")
        assert "autoEnable" in error["message"]
        assert error["details"]["field"] == "autoEnable"

    async def test_an_unknown_field_of_a_lifecycle_command_is_refused_naming_it(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "x", "force": True})

        error = assert_error(response, 400, "VALIDATION_FAILED")
        assert error["details"]["field"] == "force"

    async def test_a_field_of_the_wrong_type_is_refused_naming_it(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/restart", json={"reason": 42})

        assert_error(response, 400, "VALIDATION_FAILED", field="reason")

    async def test_a_missing_source_is_refused(self, client) -> None:
        response = await client.post(f"{PLUGINS}/install", json={"entrypoint": "x"})

        assert_error(response, 400, "VALIDATION_FAILED", field="source")

    async def test_an_unknown_source_is_refused(self, client) -> None:
        response = await client.post(f"{PLUGINS}/install", json={"source": "ftp"})

        assert_error(response, 400, "VALIDATION_FAILED", field="source")

    async def test_a_file_source_sent_as_json_is_refused(self, client) -> None:
        response = await client.post(f"{PLUGINS}/install", json={"source": "file"})

        assert_error(response, 400, "VALIDATION_FAILED", field="source")

    async def test_a_source_this_server_cannot_fetch_is_refused(self, client) -> None:
        response = await client.post(f"{PLUGINS}/install", json={"source": "url"})

        assert_error(response, 400, "PLUGIN_SOURCE_INVALID", field="source")

    async def test_an_empty_body_is_refused(self, client) -> None:
        response = await post_json(client, f"{PLUGINS}/install", b"")

        assert_error(response, 400, "VALIDATION_FAILED", field="body")

    async def test_a_body_that_is_not_an_object_is_refused(self, client) -> None:
        response = await post_json(client, f"{PLUGINS}/install", b"[]")

        assert_error(response, 400, "VALIDATION_FAILED")


class TestUnknownPlugin:
    @pytest.mark.parametrize(
        ("method", "suffix", "body"),
        [
            ("GET", "", None),
            ("GET", "/config", None),
            ("POST", "/enable", None),
            ("POST", "/disable", {"reason": "x"}),
            ("POST", "/restart", None),
            ("POST", "/reload", None),
            ("POST", "/rollback", None),
            ("PUT", "/config", {"config": {}}),
            ("DELETE", "", None),
        ],
    )
    async def test_is_not_found(self, client, database_url, method: str, suffix: str, body: dict | None) -> None:
        pid = unique_id("ghost")

        async with nothing_written(database_url, pid):
            response = await client.request(
                method, f"{PLUGINS}/{pid}{suffix}", content=json.dumps(body).encode() if body else None
            )

        error = assert_error(response, 404, "PLUGIN_NOT_FOUND")
        assert error["details"]["plugin_id"] == pid
        assert await event_count(database_url, pid) == 0

    async def test_an_update_of_an_unknown_plugin_is_not_found(self, client, database_url) -> None:
        pid = unique_id("ghost")

        async with nothing_written(database_url, pid):
            response = await update(client, pid, manifest(pid, "2.0.0"))

        assert_error(response, 404, "PLUGIN_NOT_FOUND")


class TestRefusedByTheRules:
    async def test_a_stale_if_match_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.post(f"{PLUGINS}/{pid}/restart")

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/enable", headers={"If-Match": '"1"'})

        assert_error(response, 412, "PRECONDITION_FAILED")

    async def test_uninstall_with_dependents_is_refused(self, client, database_url) -> None:
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base))
        await installed(client, manifest(child, dependencies={base: ">=1"}))

        async with nothing_written(database_url, base):
            response = await client.delete(f"{PLUGINS}/{base}", params={"cleanup_data": "true"})

        error = assert_error(response, 409, "PLUGIN_HAS_DEPENDENTS")
        assert error["details"]["dependents"] == [child]

    async def test_a_missing_dependency_is_refused_naming_it(self, client, database_url) -> None:
        pid, missing = unique_id(), unique_id("missing")

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, dependencies={missing: ">=1.0"}))

        error = assert_error(response, 409, "PLUGIN_DEPENDENCY_ERROR")
        assert f"{missing}>=1.0" in error["message"]
        assert "not installed" in error["message"]
        assert error["details"]["unmet"] == [{"plugin_id": missing, "required": ">=1.0", "found": None}]

    async def test_a_dependency_at_the_wrong_version_is_refused_naming_it(self, client, database_url) -> None:
        base, pid = unique_id("base"), unique_id()
        await installed(client, manifest(base, "1.5.0"))

        async with nothing_written(database_url, pid, base):
            response = await install(client, manifest(pid, dependencies={base: ">=2.0,<3"}))

        error = assert_error(response, 409, "PLUGIN_DEPENDENCY_ERROR")
        assert base in error["message"] and "1.5.0" in error["message"]
        [unmet] = error["details"]["unmet"]
        assert (unmet["plugin_id"], unmet["found"]) == (base, "1.5.0")
        assert set(unmet["required"].split(",")) == {">=2.0", "<3"}

    async def test_a_dependency_that_was_uninstalled_is_refused(self, client, database_url) -> None:
        base, pid = unique_id("base"), unique_id()
        await installed(client, manifest(base))
        await client.delete(f"{PLUGINS}/{base}")

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, dependencies={base: ">=1"}))

        error = assert_error(response, 409, "PLUGIN_DEPENDENCY_ERROR")
        assert error["details"]["unmet"] == [{"plugin_id": base, "required": ">=1", "found": None}]

    async def test_an_incompatible_host_version_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, host_versions=">=2.0,<3"))

        error = assert_error(response, 400, "PLUGIN_INCOMPATIBLE")
        assert "1.0.0" in error["message"]
        assert error["details"]["host_version"] == "1.0.0"
        assert set(error["details"]["required"].split(",")) == {">=2.0", "<3"}

    async def test_installing_an_installed_plugin_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, "2.0.0"))

        error = assert_error(response, 409, "PLUGIN_ALREADY_INSTALLED")
        assert (error["details"]["plugin_id"], error["details"]["version"]) == (pid, "1.0.0")


class TestNoServerErrorOnBadInput:
    async def test_odd_requests_are_answered_with_4xx_envelopes(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        ghost = unique_id("ghost")
        requests = [
            ("POST", f"{PLUGINS}/install", {"content": b"garbage", "headers": {"content-type": "multipart/form-data"}}),
            ("POST", f"{PLUGINS}/install", {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=b"}}),
            ("POST", f"{PLUGINS}/install", {"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}}),
            ("POST", f"{PLUGINS}/install", {"content": b"null", "headers": {"content-type": "application/json"}}),
            ("POST", f"{PLUGINS}/install", {"content": b"source=file", "headers": {"content-type": "application/x-www-form-urlencoded"}}),
            ("POST", f"{PLUGINS}/install", {"files": upload(archive(manifest(unique_id(), events={"emits": "x"})))}),
            ("POST", f"{PLUGINS}/install", {"files": upload(archive(manifest(unique_id(), dependencies=["a"])))}),
            ("POST", f"{PLUGINS}/install", {"files": upload(archive(b"\xff\xfe not utf-8"))}),
            ("PUT", f"{PLUGINS}/{pid}", {"json": {"source": "entrypoint"}}),
            ("PUT", f"{PLUGINS}/{pid}", {"json": {"source": "entrypoint", "entrypoint": ghost}}),
            ("PUT", f"{PLUGINS}/{pid}/config", {"json": {"config": None}}),
            ("PUT", f"{PLUGINS}/{pid}/config", {"content": b"", "headers": {"content-type": "application/json"}}),
            ("POST", f"{PLUGINS}/{pid}/rollback", {"json": {"to_version": 2}}),
            ("POST", f"{PLUGINS}/{pid}/rollback", {"json": []}),
            ("DELETE", f"{PLUGINS}/{pid}?force=perhaps", {}),
            ("GET", f"{PLUGINS}/{pid}?consistent=perhaps", {}),
            ("GET", f"{PLUGINS}/{pid}", {"headers": {"Charter-Min-Position": "soon"}}),
            ("GET", f"{PLUGINS}?skip=many", {}),
            ("GET", f"{PLUGINS}/{'x' * 300}", {}),
            ("GET", "/api/v1/archives/XYZ", {}),
            ("PATCH", f"{PLUGINS}/{pid}", {"json": {}}),
        ]

        async with nothing_written(database_url, pid):
            for method, url, kwargs in requests:
                response = await client.request(method, url, **kwargs)
                assert 400 <= response.status_code < 500, (method, url, response.status_code, response.text)
                error = response.json()["error"]
                assert error["code"] and error["message"], (method, url, error)
