"""A plugin's versions through HTTP: update to a new version (the old one kept) and roll back."""

from __future__ import annotations

from tests.e2e.plugin_kit import (
    PLUGINS,
    assert_error,
    assert_written,
    current,
    event_types,
    installed,
    last_payload,
    manifest,
    nothing_written,
    unique_id,
    update,
)


class TestUpdatePlugin:
    async def test_moves_to_the_new_version_and_keeps_the_old_one(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, "1.0.0"))

        response = await update(client, pid, manifest(pid, "1.1.0", description="faster"))

        assert assert_written(response, pid)["stream_version"] == 2
        plugin = await current(client, pid)
        assert plugin["version"] == "1.1.0"
        assert plugin["manifest"]["version"] == "1.1.0"
        assert plugin["description"] == "faster"
        assert [v["version"] for v in plugin["versions"]] == ["1.0.0", "1.1.0"]
        assert await event_types(database_url, pid) == ["Plugin.Installed", "Plugin.Updated"]
        payload = await last_payload(database_url, pid)
        assert (payload["from_version"], payload["to_version"]) == ("1.0.0", "1.1.0")

    async def test_keeps_the_status_and_the_configuration(self, client) -> None:
        pid = unique_id()
        schema = {"type": "object", "properties": {"level": {"type": "integer"}}}
        await installed(client, manifest(pid, config_schema=schema), config={"level": 2}, auto_enable=True)

        assert (await update(client, pid, manifest(pid, "2.0.0", config_schema=schema))).status_code == 200

        plugin = await current(client, pid)
        assert (plugin["version"], plugin["status"], plugin["configuration"]) == ("2.0.0", "enabled", {"level": 2})

    async def test_takes_on_the_new_versions_dependencies(self, client) -> None:
        base, pid = unique_id("base"), unique_id()
        await installed(client, manifest(base))
        await installed(client, manifest(pid))

        assert (await update(client, pid, manifest(pid, "2.0.0", dependencies={base: ">=1"}))).status_code == 200

        assert (await current(client, pid))["dependencies"] == [{"plugin_id": base, "requirement": ">=1"}]
        assert (await current(client, base))["dependents"] == [pid]

    async def test_to_the_same_version_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await update(client, pid, manifest(pid, description="same version"))

        assert_error(response, 409, "PLUGIN_VERSION_UNCHANGED")

    async def test_with_the_manifest_of_another_plugin_is_refused(self, client, database_url) -> None:
        pid, other = unique_id(), unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid, other):
            response = await update(client, pid, manifest(other, "2.0.0"))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.id")

    async def test_is_refused_when_the_new_schema_rejects_the_current_configuration(self, client, database_url) -> None:
        pid = unique_id()
        loose = {"type": "object", "properties": {"level": {"type": "integer"}}}
        strict = {"type": "object", "properties": {"level": {"type": "integer", "maximum": 5}}}
        await installed(client, manifest(pid, config_schema=loose), config={"level": 9})

        async with nothing_written(database_url, pid):
            response = await update(client, pid, manifest(pid, "2.0.0", config_schema=strict))

        error = assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.level")
        assert (await current(client, pid))["version"] == "1.0.0"
        assert error["details"]["violations"][0]["field"] == "config.level"

    async def test_is_refused_when_a_new_dependency_is_missing(self, client, database_url) -> None:
        pid, missing = unique_id(), unique_id("missing")
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await update(client, pid, manifest(pid, "2.0.0", dependencies={missing: ">=1"}))

        error = assert_error(response, 409, "PLUGIN_DEPENDENCY_ERROR")
        assert missing in error["message"]
        assert error["details"]["unmet"] == [{"plugin_id": missing, "required": ">=1", "found": None}]

    async def test_is_refused_when_the_new_version_does_not_fit_this_host(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await update(client, pid, manifest(pid, "2.0.0", host_versions=">=2.0"))

        assert_error(response, 400, "PLUGIN_INCOMPATIBLE")

    async def test_of_an_unknown_plugin_is_not_found(self, client, database_url) -> None:
        pid = unique_id("ghost")

        async with nothing_written(database_url, pid):
            response = await update(client, pid, manifest(pid, "2.0.0"))

        assert_error(response, 404, "PLUGIN_NOT_FOUND")


class TestRollBackPlugin:
    async def test_returns_to_the_previous_version(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, "1.0.0", description="first"))
        await update(client, pid, manifest(pid, "2.0.0", description="second"))

        response = await client.post(f"{PLUGINS}/{pid}/rollback")

        assert assert_written(response, pid)["stream_version"] == 3
        plugin = await current(client, pid)
        assert (plugin["version"], plugin["description"]) == ("1.0.0", "first")
        assert plugin["manifest"]["version"] == "1.0.0"
        assert [v["version"] for v in plugin["versions"]] == ["1.0.0", "2.0.0"]
        assert (await event_types(database_url, pid))[-1] == "Plugin.RolledBack"
        payload = await last_payload(database_url, pid)
        assert (payload["from_version"], payload["to_version"]) == ("2.0.0", "1.0.0")

    async def test_returns_to_a_named_version(self, client) -> None:
        pid = unique_id()
        for version in ("1.0.0", "2.0.0", "3.0.0"):
            if version == "1.0.0":
                await installed(client, manifest(pid, version))
            else:
                assert (await update(client, pid, manifest(pid, version))).status_code == 200

        response = await client.post(f"{PLUGINS}/{pid}/rollback", json={"to_version": "1.0.0"})

        assert response.status_code == 200, response.text
        assert (await current(client, pid))["version"] == "1.0.0"

    async def test_restores_the_previous_versions_dependencies(self, client) -> None:
        base, pid = unique_id("base"), unique_id()
        await installed(client, manifest(base))
        await installed(client, manifest(pid, dependencies={base: ">=1"}))
        await update(client, pid, manifest(pid, "2.0.0"))
        assert (await current(client, base))["dependents"] == []

        assert (await client.post(f"{PLUGINS}/{pid}/rollback")).status_code == 200

        assert (await current(client, base))["dependents"] == [pid]

    async def test_without_a_previous_version_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/rollback")

        error = assert_error(response, 409, "PLUGIN_NO_PREVIOUS_VERSION")
        assert error["details"]["available"] == ["1.0.0"]

    async def test_to_a_version_never_installed_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await update(client, pid, manifest(pid, "2.0.0"))

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/rollback", json={"to_version": "0.9.0"})

        error = assert_error(response, 409, "PLUGIN_NO_PREVIOUS_VERSION")
        assert error["details"]["available"] == ["1.0.0", "2.0.0"]

    async def test_is_refused_when_the_previous_versions_dependency_is_gone(self, client, database_url) -> None:
        """Install and update refuse unmet dependencies; a rollback must not bring one back."""
        base, pid = unique_id("base"), unique_id()
        await installed(client, manifest(base))
        await installed(client, manifest(pid, "1.0.0", dependencies={base: ">=1"}))
        await update(client, pid, manifest(pid, "2.0.0"))
        assert (await client.delete(f"{PLUGINS}/{base}")).status_code == 200

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/rollback")

        error = assert_error(response, 409, "PLUGIN_DEPENDENCY_ERROR")
        assert base in error["message"]

    async def test_is_refused_when_the_previous_schema_rejects_the_current_configuration(
        self, client, database_url
    ) -> None:
        """Update validates the configuration against the schema it moves to; so must a rollback."""
        pid = unique_id()
        closed = {"type": "object", "properties": {"level": {"type": "integer"}}, "additionalProperties": False}
        opened = {"type": "object", "properties": {"level": {"type": "integer"}, "mode": {"type": "string"}}}
        await installed(client, manifest(pid, "1.0.0", config_schema=closed))
        await update(client, pid, manifest(pid, "2.0.0", config_schema=opened))
        assert (await client.put(f"{PLUGINS}/{pid}/config", json={"config": {"mode": "fast"}})).status_code == 200

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/rollback")

        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR")
