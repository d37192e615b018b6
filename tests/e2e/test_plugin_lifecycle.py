"""The plugin lifecycle through HTTP: install, enable, disable, restart, reload, uninstall, reinstall."""

from __future__ import annotations

import json

from tests.e2e.plugin_kit import (
    PLUGINS,
    archive,
    assert_error,
    assert_written,
    current,
    event_count,
    event_rows,
    event_types,
    install,
    installed,
    last_payload,
    manifest,
    nothing_written,
    unique_id,
)


class TestInstallFromArchive:
    async def test_answers_201_with_location_etag_and_position(self, client, database_url) -> None:
        pid = unique_id()

        response = await install(client, manifest(pid))

        written = assert_written(response, pid, 201)
        assert written["stream_version"] == 1
        assert written["duplicate"] is False
        assert response.headers["location"] == f"{PLUGINS}/{pid}"
        assert (await client.get(response.headers["location"], params={"consistent": "true"})).status_code == 200
        assert await event_types(database_url, pid) == ["Plugin.Installed"]

    async def test_a_plugin_is_installed_but_not_enabled_by_default(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        plugin = await current(client, pid)

        assert (plugin["status"], plugin["enabled"]) == ("installed", False)

    async def test_auto_enable_starts_the_plugin_enabled(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)

        plugin = await current(client, pid)

        assert (plugin["status"], plugin["enabled"]) == ("enabled", True)

    async def test_records_the_initial_configuration(self, client) -> None:
        pid = unique_id()
        schema = {"type": "object", "properties": {"level": {"type": "integer"}, "mode": {"type": "string"}}}
        await installed(client, manifest(pid, config_schema=schema), config={"level": 3, "mode": "fast"})

        plugin = await current(client, pid)

        assert plugin["configuration"] == {"level": 3, "mode": "fast"}

    async def test_reads_the_manifest_from_a_single_top_folder(self, client) -> None:
        pid = unique_id()
        content = archive(manifest(pid), name=f"{pid}/charter-plugin.json")

        assert_written(await install(client, content), pid, 201)

    async def test_installs_when_its_dependencies_are_satisfied(self, client) -> None:
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base, "1.4.0"))

        response = await install(client, manifest(child, dependencies={base: ">=1.2,<2"}))

        assert_written(response, child, 201)
        assert (await current(client, base))["dependents"] == [child]


class TestEnablePlugin:
    async def test_turns_the_plugin_on(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await client.post(f"{PLUGINS}/{pid}/enable", json={"reason": "go live"})

        assert assert_written(response, pid)["stream_version"] == 2
        plugin = await current(client, pid)
        assert (plugin["status"], plugin["enabled"]) == ("enabled", True)
        assert (await event_types(database_url, pid))[-1] == "Plugin.Enabled"
        assert (await last_payload(database_url, pid))["reason"] == "go live"

    async def test_works_without_a_body(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        assert_written(await client.post(f"{PLUGINS}/{pid}/enable"), pid)

    async def test_enabling_an_enabled_plugin_records_nothing(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/enable")

        assert response.status_code == 200, response.text
        assert response.json()["stream_version"] == 1
        assert response.headers["etag"] == '"1"'

    async def test_is_refused_while_a_dependency_is_missing(self, client, database_url) -> None:
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base))
        await installed(client, manifest(child, dependencies={base: ">=1"}))
        assert (await client.delete(f"{PLUGINS}/{base}", params={"force": "true"})).status_code == 200

        async with nothing_written(database_url, child):
            response = await client.post(f"{PLUGINS}/{child}/enable")

        error = assert_error(response, 409, "PLUGIN_DEPENDENCY_ERROR")
        assert base in error["message"]

    async def test_of_an_uninstalled_plugin_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.delete(f"{PLUGINS}/{pid}")

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/enable")

        assert_error(response, 409, "PLUGIN_NOT_INSTALLED")


class TestDisablePlugin:
    async def test_records_the_reason_and_turns_the_plugin_off(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)

        response = await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "leaks memory"})

        assert_written(response, pid)
        plugin = await current(client, pid)
        assert (plugin["status"], plugin["enabled"], plugin["disabled_reason"]) == ("disabled", False, "leaks memory")
        assert (await event_types(database_url, pid))[-1] == "Plugin.Disabled"
        assert (await last_payload(database_url, pid))["reason"] == "leaks memory"

    async def test_works_without_a_reason(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)

        assert_written(await client.post(f"{PLUGINS}/{pid}/disable"), pid)

        plugin = await current(client, pid)
        assert (plugin["status"], plugin["enabled"]) == ("disabled", False)

    async def test_disabling_a_disabled_plugin_records_nothing(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)
        await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "first"})

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "second"})

        assert response.status_code == 200, response.text
        assert (await current(client, pid))["disabled_reason"] == "first"

    async def test_enabling_again_clears_the_reason(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)
        await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "maintenance"})

        assert (await client.post(f"{PLUGINS}/{pid}/enable")).status_code == 200

        plugin = await current(client, pid)
        assert (plugin["status"], plugin["enabled"], plugin["disabled_reason"]) == ("enabled", True, None)

    async def test_of_an_uninstalled_plugin_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.delete(f"{PLUGINS}/{pid}")

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "x"})

        assert_error(response, 409, "PLUGIN_NOT_INSTALLED")


class TestRestartPlugin:
    async def test_counts_each_restart_and_records_the_reason(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)

        first = await client.post(f"{PLUGINS}/{pid}/restart", json={"reason": "stuck"})
        second = await client.post(f"{PLUGINS}/{pid}/restart")

        assert assert_written(first, pid)["stream_version"] == 2
        assert assert_written(second, pid)["stream_version"] == 3
        assert (await current(client, pid))["restarts"] == 2
        rows = await event_rows(database_url, pid)
        assert [r["event_type"] for r in rows] == ["Plugin.Installed", "Plugin.Restarted", "Plugin.Restarted"]
        assert [json.loads(r["payload"])["reason"] for r in rows[1:]] == ["stuck", None]

    async def test_of_an_uninstalled_plugin_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.delete(f"{PLUGINS}/{pid}")

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/restart")

        assert_error(response, 409, "PLUGIN_NOT_INSTALLED")


class TestReloadPlugin:
    async def test_counts_each_reload_and_records_the_reason(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)

        response = await client.post(f"{PLUGINS}/{pid}/reload", json={"reason": "new templates"})

        assert assert_written(response, pid)["stream_version"] == 2
        plugin = await current(client, pid)
        assert (plugin["reloads"], plugin["restarts"]) == (1, 0)
        assert (await event_types(database_url, pid))[-1] == "Plugin.Reloaded"
        assert (await last_payload(database_url, pid))["reason"] == "new templates"

    async def test_of_an_uninstalled_plugin_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.delete(f"{PLUGINS}/{pid}")

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/reload")

        assert_error(response, 409, "PLUGIN_NOT_INSTALLED")


class TestUninstallPlugin:
    async def test_marks_the_plugin_uninstalled(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid), auto_enable=True)

        response = await client.delete(f"{PLUGINS}/{pid}", params={"reason": "replaced"})

        assert assert_written(response, pid)["stream_version"] == 2
        plugin = await current(client, pid)
        assert (plugin["status"], plugin["enabled"]) == ("uninstalled", False)
        assert (await event_types(database_url, pid))[-1] == "Plugin.Uninstalled"
        payload = await last_payload(database_url, pid)
        assert (payload["reason"], payload["forced"], payload["cleanup_data"]) == ("replaced", False, False)

    async def test_is_refused_while_a_dependent_is_installed(self, client, database_url) -> None:
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base))
        await installed(client, manifest(child, dependencies={base: ">=1"}))
        assert (await current(client, base))["dependents"] == [child]

        async with nothing_written(database_url, base, child):
            response = await client.delete(f"{PLUGINS}/{base}")

        error = assert_error(response, 409, "PLUGIN_HAS_DEPENDENTS")
        assert child in error["message"]
        assert error["details"]["dependents"] == [child]
        assert (await current(client, base))["status"] == "installed"

    async def test_is_refused_right_after_a_dependent_was_installed(self, client, database_url) -> None:
        """The dependents check must not miss a dependent the read model has not projected yet."""
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base))
        await installed(client, manifest(child, dependencies={base: ">=1"}))

        response = await client.delete(f"{PLUGINS}/{base}")

        assert_error(response, 409, "PLUGIN_HAS_DEPENDENTS")

    async def test_force_uninstalls_despite_dependents(self, client, database_url) -> None:
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base))
        await installed(client, manifest(child, dependencies={base: ">=1"}))

        response = await client.delete(f"{PLUGINS}/{base}", params={"force": "true"})

        assert_written(response, base)
        assert (await current(client, base))["status"] == "uninstalled"
        assert (await current(client, child))["status"] == "installed"
        assert (await last_payload(database_url, base))["forced"] is True

    async def test_is_allowed_once_the_dependent_is_uninstalled(self, client) -> None:
        base, child = unique_id("base"), unique_id("child")
        await installed(client, manifest(base))
        await installed(client, manifest(child, dependencies={base: ">=1"}))
        assert (await client.delete(f"{PLUGINS}/{child}")).status_code == 200

        response = await client.delete(f"{PLUGINS}/{base}")

        assert_written(response, base)
        assert (await current(client, base))["dependents"] == []

    async def test_keeps_the_configuration_unless_cleanup_data_is_asked(self, client) -> None:
        kept, cleaned = unique_id(), unique_id()
        schema = {"type": "object", "properties": {"level": {"type": "integer"}}}
        for pid in (kept, cleaned):
            await installed(client, manifest(pid, config_schema=schema), config={"level": 4})

        await client.delete(f"{PLUGINS}/{kept}")
        await client.delete(f"{PLUGINS}/{cleaned}", params={"cleanup_data": "true"})

        assert (await current(client, kept))["configuration"] == {"level": 4}
        assert (await current(client, cleaned))["configuration"] == {}

    async def test_of_an_uninstalled_plugin_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.delete(f"{PLUGINS}/{pid}")

        async with nothing_written(database_url, pid):
            response = await client.delete(f"{PLUGINS}/{pid}")

        assert_error(response, 409, "PLUGIN_NOT_INSTALLED")

    async def test_a_plugin_can_be_installed_again_after_uninstall(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, "1.0.0"))
        await client.delete(f"{PLUGINS}/{pid}")

        response = await install(client, manifest(pid, "1.2.0"), auto_enable=True)

        assert assert_written(response, pid, 201)["stream_version"] == 3
        plugin = await current(client, pid)
        assert (plugin["status"], plugin["version"], plugin["enabled"]) == ("enabled", "1.2.0", True)
        assert [v["version"] for v in plugin["versions"]] == ["1.0.0", "1.2.0"]
        assert await event_types(database_url, pid) == ["Plugin.Installed", "Plugin.Uninstalled", "Plugin.Reinstalled"]
        assert await event_count(database_url, pid) == 3

    async def test_a_reinstalled_plugin_starts_with_fresh_counters(self, client) -> None:
        """The aggregate resets restarts/reloads on reinstall; the read model must say the same."""
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.post(f"{PLUGINS}/{pid}/restart")
        await client.post(f"{PLUGINS}/{pid}/reload")
        await client.delete(f"{PLUGINS}/{pid}")

        await installed(client, manifest(pid))

        plugin = await current(client, pid)
        assert (plugin["restarts"], plugin["reloads"]) == (0, 0)
