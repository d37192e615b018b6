"""Plugin command handlers against the in-memory fakes: given events -> command -> new events (or error).

One class per command. What only HTTP can show (status codes, multipart, ETags) stays in tests/e2e."""

from __future__ import annotations

from typing import Any

import pytest

from application.commands import (
    ConfigurePlugin,
    DeclassifyConfig,
    DisablePlugin,
    EnablePlugin,
    InstallPlugin,
    ReloadPlugin,
    RestartPlugin,
    RollBackPlugin,
    UninstallPlugin,
    UpdatePlugin,
)
from application.context import CommandContext, CommandResult
from application.errors import PreconditionFailed
from application.plugins.handlers import HANDLERS, PluginServices
from domain.plugins.errors import (
    ConfigurationInvalid,
    DeclassifyRefused,
    DependencyError,
    FieldNotSealed,
    HasDependents,
    ManifestInvalid,
    NothingToRollBack,
    PluginAlreadyInstalled,
    PluginIncompatible,
    PluginNotFound,
    PluginNotInstalled,
    VersionUnchanged,
)
from domain.plugins.manifest import parse_manifest
from domain.plugins.plugin import Plugin, plugin_uuid
from tests.unit.fakes import FakeArchives, FakeCipher, FakeSandbox, MemoryRepository

PID = "audit-log"
STREAM = f"plugin:{PID}"
HOST = "1.4.0"
ALICE = CommandContext(actor="alice", request_id="req-1")
SECRET_SCHEMA = {"type": "object", "properties": {"token": {"type": "string", "secret": True}, "level": {"type": "integer"}}}


def manifest(version: str = "1.0.0", plugin_id: str = PID, **extra: Any) -> dict[str, Any]:
    return {"id": plugin_id, "name": plugin_id.replace("-", " ").title(), "version": version, **extra}


def full(raw: dict[str, Any]) -> dict[str, Any]:
    """A manifest as the handlers record it: parsed, with every default spelled out."""
    return parse_manifest(raw).to_dict()


def source(version: str = "1.0.0") -> dict[str, Any]:
    return {"kind": "registry", "ref": f"{PID}=={version}"}


@pytest.fixture
def repo() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture
def services(repo: MemoryRepository) -> PluginServices:
    return PluginServices(
        repository=repo, cipher=FakeCipher(), archives=FakeArchives(),
        host_version=HOST, sandbox=FakeSandbox(),
    )


async def run(services: PluginServices, command: Any, ctx: CommandContext = ALICE) -> CommandResult:
    return await HANDLERS[type(command)](command, ctx, services)


async def given(repo: MemoryRepository, plugin: Plugin) -> None:
    await repo.given("plugin", plugin.plugin_id, plugin)


def installed(version: str = "1.0.0", plugin_id: str = PID, config: dict | None = None, enabled: bool = True,
              **extra: Any) -> Plugin:
    return Plugin(plugin_id=plugin_id, manifest=full(manifest(version, plugin_id, **extra)), source=source(version),
                  config=config or {}, enabled=enabled)


def sealed(value: Any) -> dict[str, str]:
    return FakeCipher().seal(value)


def plugin_in(repo: MemoryRepository, plugin_id: str = PID) -> Plugin:
    return repo.aggregate(Plugin, "plugin", plugin_id, plugin_uuid(plugin_id))


def test_every_plugin_command_has_a_handler() -> None:
    assert set(HANDLERS) == {
        InstallPlugin, UpdatePlugin, RollBackPlugin, EnablePlugin, DisablePlugin, RestartPlugin, ReloadPlugin,
        ConfigurePlugin, DeclassifyConfig, UninstallPlugin,
    }


class TestInstallPlugin:
    async def test_records_installed_with_the_parsed_manifest_source_and_config(self, services, repo) -> None:
        result = await run(services, InstallPlugin(manifest=manifest(), source=source(), config={"level": 3}))

        assert repo.new_events() == [
            (STREAM, "Installed",
             dict(plugin_id=PID, manifest=full(manifest()), source=source(), config={"level": 3}, enabled=False)),
        ]
        assert (result.stream_id, result.version, result.position) == (STREAM, 1, 1)

    async def test_records_who_asked_in_the_metadata(self, services, repo) -> None:
        await run(services, InstallPlugin(manifest=manifest(), source=source()))

        [event] = repo.recorded(STREAM)
        assert event.metadata["actor"] == "alice" and event.metadata["command"] == "InstallPlugin"
        assert event.metadata["request_id"] == "req-1"

    async def test_auto_enable_installs_enabled(self, services, repo) -> None:
        await run(services, InstallPlugin(manifest=manifest(), source=source(), auto_enable=True))

        assert repo.new_events()[0][2]["enabled"] is True

    async def test_seals_what_the_schema_marks_secret(self, services, repo) -> None:
        await run(services, InstallPlugin(manifest=manifest(config_schema=SECRET_SCHEMA), source=source(),
                                          config={"token": "hunter2", "level": 1}))

        [(_, _, payload)] = repo.new_events()
        assert payload["config"] == {"token": sealed("hunter2"), "level": 1}

    async def test_rejects_a_second_install(self, services, repo) -> None:
        await given(repo, installed("1.0.0"))

        with pytest.raises(PluginAlreadyInstalled):
            await run(services, InstallPlugin(manifest=manifest("2.0.0"), source=source("2.0.0")))

        assert repo.new_events() == []

    async def test_reinstalls_after_an_uninstall(self, services, repo) -> None:
        plugin = installed("1.0.0")
        plugin.uninstall("gone", False, False)
        await given(repo, plugin)

        result = await run(services, InstallPlugin(manifest=manifest("2.0.0"), source=source("2.0.0"), auto_enable=True))

        assert repo.new_events() == [
            (STREAM, "Reinstalled", dict(manifest=full(manifest("2.0.0")), source=source("2.0.0"), config={}, enabled=True)),
        ]
        assert result.version == 3

    async def test_a_reinstall_keeps_sealed_what_an_earlier_life_sealed(self, services, repo) -> None:
        plugin = installed("1.0.0", config={"token": sealed("old")})
        plugin.uninstall(None, False, True)
        await given(repo, plugin)

        await run(services, InstallPlugin(manifest=manifest("2.0.0"), source=source("2.0.0"), config={"token": "new"}))

        assert repo.new_events()[0][2]["config"] == {"token": sealed("new")}

    async def test_rejects_an_invalid_manifest_naming_the_field(self, services, repo) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            await run(services, InstallPlugin(manifest=manifest(version="not a version"), source=source()))

        assert refused.value.details["field"] == "manifest.version"
        assert repo.new_events() == []

    async def test_rejects_a_host_outside_the_manifests_range(self, services, repo) -> None:
        with pytest.raises(PluginIncompatible):
            await run(services, InstallPlugin(manifest=manifest(host_versions=">=2.0"), source=source()))

        assert repo.new_events() == []

    async def test_rejects_a_missing_dependency(self, services, repo) -> None:
        with pytest.raises(DependencyError) as refused:
            await run(services, InstallPlugin(manifest=manifest(dependencies={"storage": ">=1.0"}), source=source()))

        assert refused.value.details["unmet"] == [{"plugin_id": "storage", "required": ">=1.0", "found": None}]

    async def test_rejects_a_dependency_at_the_wrong_version(self, services, repo) -> None:
        await given(repo, installed("0.9.0", plugin_id="storage"))

        with pytest.raises(DependencyError):
            await run(services, InstallPlugin(manifest=manifest(dependencies={"storage": ">=1.0"}), source=source()))

    async def test_accepts_an_installed_dependency(self, services, repo) -> None:
        await given(repo, installed("1.2.0", plugin_id="storage"))

        await run(services, InstallPlugin(manifest=manifest(dependencies={"storage": ">=1.0"}), source=source()))

        assert [(stream, name) for stream, name, _ in repo.new_events()] == [
            (STREAM, "Installed"), ("plugin-dependents:storage", "Opened"), ("plugin-dependents:storage", "DependentAdded"),
        ]

    async def test_rejects_a_config_the_schema_refuses(self, services, repo) -> None:
        with pytest.raises(ConfigurationInvalid) as refused:
            await run(services, InstallPlugin(manifest=manifest(config_schema=SECRET_SCHEMA), source=source(),
                                              config={"level": "high"}))

        assert refused.value.details["field"] == "config.level"
        assert repo.new_events() == []

    async def test_a_schema_past_the_sandbox_bounds_is_refused_as_an_invalid_manifest(self, services, repo) -> None:
        services.sandbox.over_limit_with = "took longer than 2 s"

        with pytest.raises(ManifestInvalid) as refused:
            await run(services, InstallPlugin(manifest=manifest(config_schema=SECRET_SCHEMA), source=source()))

        assert refused.value.details["field"] == "manifest.config_schema"

    async def test_with_a_stale_if_match_is_refused(self, services, repo) -> None:
        plugin = installed()
        plugin.uninstall(None, False, False)
        await given(repo, plugin)

        with pytest.raises(PreconditionFailed):
            await run(services, InstallPlugin(manifest=manifest(), source=source()), CommandContext(expected_version=1))


class TestUpdatePlugin:
    async def test_records_updated_from_one_version_to_the_other(self, services, repo) -> None:
        await given(repo, installed("1.0.0"))

        result = await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("1.1.0"), source=source("1.1.0")))

        assert repo.new_events() == [
            (STREAM, "Updated", dict(from_version="1.0.0", to_version="1.1.0", manifest=full(manifest("1.1.0")),
                                     source=source("1.1.0"), config={})),
        ]
        assert result.version == 2

    async def test_reseals_the_configuration_for_the_new_schema(self, services, repo) -> None:
        await given(repo, installed("1.0.0", config={"token": "was plain", "level": 2}))

        await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("2.0.0", config_schema=SECRET_SCHEMA),
                                         source=source("2.0.0")))

        assert repo.new_events()[0][2]["config"] == {"token": sealed("was plain"), "level": 2}

    async def test_rejects_a_configuration_the_new_schema_refuses(self, services, repo) -> None:
        await given(repo, installed("1.0.0", config={"level": "high"}))

        with pytest.raises(ConfigurationInvalid):
            await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("2.0.0", config_schema=SECRET_SCHEMA),
                                             source=source("2.0.0")))

        assert repo.new_events() == []

    async def test_rejects_a_manifest_of_another_plugin(self, services, repo) -> None:
        await given(repo, installed("1.0.0"))

        with pytest.raises(ManifestInvalid) as refused:
            await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("2.0.0", plugin_id="other"), source=source()))

        assert refused.value.details["field"] == "manifest.id"

    async def test_rejects_the_same_version(self, services, repo) -> None:
        await given(repo, installed("1.0.0"))

        with pytest.raises(VersionUnchanged):
            await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("1.0.0"), source=source()))

    async def test_rejects_an_unknown_plugin(self, services) -> None:
        with pytest.raises(PluginNotFound):
            await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("1.1.0"), source=source()))

    async def test_rejects_an_uninstalled_plugin(self, services, repo) -> None:
        plugin = installed("1.0.0")
        plugin.uninstall(None, False, False)
        await given(repo, plugin)

        with pytest.raises(PluginNotInstalled):
            await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("1.1.0"), source=source()))

    async def test_rejects_a_version_whose_dependency_is_missing(self, services, repo) -> None:
        await given(repo, installed("1.0.0"))

        with pytest.raises(DependencyError):
            await run(services, UpdatePlugin(plugin_id=PID, manifest=manifest("2.0.0", dependencies={"storage": ""}),
                                             source=source()))


class TestRollBackPlugin:
    @pytest.fixture
    async def twice_updated(self, repo) -> None:
        plugin = installed("1.0.0")
        for version in ("1.1.0", "1.2.0"):
            plugin.update(full(manifest(version)), source(version), {})
        await given(repo, plugin)

    async def test_records_rolled_back_to_the_version_before(self, services, repo, twice_updated) -> None:
        await run(services, RollBackPlugin(plugin_id=PID))

        assert repo.new_events() == [(STREAM, "RolledBack", dict(from_version="1.2.0", to_version="1.1.0", config={}))]
        assert plugin_in(repo).current_version == "1.1.0"

    async def test_rolls_back_to_a_named_version(self, services, repo, twice_updated) -> None:
        await run(services, RollBackPlugin(plugin_id=PID, to_version="1.0.0"))

        assert repo.new_events()[0][2]["to_version"] == "1.0.0"

    async def test_rejects_a_version_never_installed(self, services, repo, twice_updated) -> None:
        with pytest.raises(NothingToRollBack) as refused:
            await run(services, RollBackPlugin(plugin_id=PID, to_version="0.1.0"))

        assert refused.value.details["available"] == ["1.0.0", "1.1.0", "1.2.0"]

    async def test_rejects_a_plugin_with_one_version(self, services, repo) -> None:
        await given(repo, installed("1.0.0"))

        with pytest.raises(NothingToRollBack):
            await run(services, RollBackPlugin(plugin_id=PID))

    async def test_reseals_the_configuration_for_the_older_schema(self, services, repo) -> None:
        plugin = installed("1.0.0", config_schema=SECRET_SCHEMA)
        plugin.update(full(manifest("2.0.0")), source("2.0.0"), {"token": "plain in 2.0"})
        await given(repo, plugin)

        await run(services, RollBackPlugin(plugin_id=PID))

        assert repo.new_events()[0][2]["config"] == {"token": sealed("plain in 2.0")}


class TestEnablePlugin:
    async def test_records_enabled_with_the_reason(self, services, repo) -> None:
        await given(repo, installed(enabled=False))

        await run(services, EnablePlugin(plugin_id=PID, reason="ready"))

        assert repo.new_events() == [(STREAM, "Enabled", dict(reason="ready"))]

    async def test_records_nothing_when_already_enabled(self, services, repo) -> None:
        await given(repo, installed(enabled=True))

        result = await run(services, EnablePlugin(plugin_id=PID))

        assert repo.new_events() == [] and result.position is None and result.version == 1

    async def test_rejects_a_plugin_whose_dependency_was_uninstalled(self, services, repo) -> None:
        storage = installed("1.0.0", plugin_id="storage")
        storage.uninstall(None, True, False)
        await given(repo, storage)
        await given(repo, installed(enabled=False, dependencies={"storage": ">=1"}))

        with pytest.raises(DependencyError):
            await run(services, EnablePlugin(plugin_id=PID))

    async def test_rejects_an_unknown_plugin(self, services) -> None:
        with pytest.raises(PluginNotFound):
            await run(services, EnablePlugin(plugin_id="nobody"))


class TestDisablePlugin:
    async def test_records_disabled_with_the_reason(self, services, repo) -> None:
        await given(repo, installed(enabled=True))

        await run(services, DisablePlugin(plugin_id=PID, reason="incident 42"))

        assert repo.new_events() == [(STREAM, "Disabled", dict(reason="incident 42"))]
        assert plugin_in(repo).status == "disabled"

    async def test_records_nothing_when_already_disabled(self, services, repo) -> None:
        plugin = installed(enabled=True)
        plugin.disable("once")
        await given(repo, plugin)

        await run(services, DisablePlugin(plugin_id=PID, reason="twice"))

        assert repo.new_events() == []

    async def test_rejects_an_uninstalled_plugin(self, services, repo) -> None:
        plugin = installed()
        plugin.uninstall(None, False, False)
        await given(repo, plugin)

        with pytest.raises(PluginNotInstalled):
            await run(services, DisablePlugin(plugin_id=PID))


class TestRestartPlugin:
    async def test_records_restarted_each_time(self, services, repo) -> None:
        await given(repo, installed())

        await run(services, RestartPlugin(plugin_id=PID, reason="stuck"))
        await run(services, RestartPlugin(plugin_id=PID))

        assert repo.new_events() == [(STREAM, "Restarted", dict(reason="stuck")), (STREAM, "Restarted", dict(reason=None))]

    async def test_with_a_stale_if_match_is_refused(self, services, repo) -> None:
        await given(repo, installed())

        with pytest.raises(PreconditionFailed) as refused:
            await run(services, RestartPlugin(plugin_id=PID), CommandContext(expected_version=7))

        assert refused.value.details["current_version"] == 1
        assert repo.new_events() == []

    async def test_with_the_current_if_match_is_accepted(self, services, repo) -> None:
        await given(repo, installed())

        result = await run(services, RestartPlugin(plugin_id=PID), CommandContext(expected_version=1))

        assert result.version == 2


class TestReloadPlugin:
    async def test_records_reloaded(self, services, repo) -> None:
        await given(repo, installed())

        await run(services, ReloadPlugin(plugin_id=PID, reason="new templates"))

        assert repo.new_events() == [(STREAM, "Reloaded", dict(reason="new templates"))]

    async def test_rejects_an_uninstalled_plugin(self, services, repo) -> None:
        plugin = installed()
        plugin.uninstall(None, False, False)
        await given(repo, plugin)

        with pytest.raises(PluginNotInstalled):
            await run(services, ReloadPlugin(plugin_id=PID))


class TestConfigurePlugin:
    async def test_records_the_configuration_and_the_keys_changed(self, services, repo) -> None:
        await given(repo, installed(config={"level": 1, "mode": "a"}))

        await run(services, ConfigurePlugin(plugin_id=PID, config={"level": 2, "mode": "a", "extra": True}))

        assert repo.new_events() == [
            (STREAM, "ConfigurationChanged", dict(config={"level": 2, "mode": "a", "extra": True}, changed_keys=["extra", "level"])),
        ]

    async def test_records_nothing_when_nothing_changed(self, services, repo) -> None:
        await given(repo, installed(config={"level": 1}))

        await run(services, ConfigurePlugin(plugin_id=PID, config={"level": 1}))

        assert repo.new_events() == []

    async def test_seals_secrets_and_compares_them_in_clear(self, services, repo) -> None:
        await given(repo, installed(config={"token": sealed("same"), "level": 1}, config_schema=SECRET_SCHEMA))

        await run(services, ConfigurePlugin(plugin_id=PID, config={"token": "same", "level": 2}))

        assert repo.new_events() == [
            (STREAM, "ConfigurationChanged", dict(config={"token": sealed("same"), "level": 2}, changed_keys=["level"])),
        ]

    async def test_rejects_what_the_schema_refuses(self, services, repo) -> None:
        await given(repo, installed(config_schema=SECRET_SCHEMA))

        with pytest.raises(ConfigurationInvalid) as refused:
            await run(services, ConfigurePlugin(plugin_id=PID, config={"level": "high"}))

        assert refused.value.details["field"] == "config.level"
        assert repo.new_events() == []

    async def test_a_validation_past_the_sandbox_bounds_is_refused_naming_config(self, services, repo) -> None:
        await given(repo, installed(config_schema=SECRET_SCHEMA))
        services.sandbox.over_limit_with = "used more than 256 MB"

        with pytest.raises(ConfigurationInvalid) as refused:
            await run(services, ConfigurePlugin(plugin_id=PID, config={"level": 1}))

        assert refused.value.details["field"] == "config"

    async def test_rejects_an_unknown_plugin(self, services) -> None:
        with pytest.raises(PluginNotFound):
            await run(services, ConfigurePlugin(plugin_id=PID, config={}))


class TestDeclassifyConfig:
    async def test_records_the_fields_in_clear_from_now_on(self, services, repo) -> None:
        await given(repo, installed(config={"token": sealed("public after all"), "level": 1}))

        await run(services, DeclassifyConfig(plugin_id=PID, fields=["token"], reason="a public test token"))

        assert repo.new_events() == [
            (STREAM, "Declassified", dict(fields=["token"], reason="a public test token",
                                          config={"token": "public after all", "level": 1})),
        ]
        assert plugin_in(repo).classified == set()

    async def test_rejects_a_field_the_schema_still_marks_secret(self, services, repo) -> None:
        await given(repo, installed(config={"token": sealed("t")}, config_schema=SECRET_SCHEMA))

        with pytest.raises(DeclassifyRefused) as refused:
            await run(services, DeclassifyConfig(plugin_id=PID, fields=["token"], reason="r"))

        assert refused.value.details["field"] == "fields.0" and refused.value.details["still_secret"] == ["token"]
        assert repo.new_events() == []

    async def test_rejects_a_field_that_is_not_sealed(self, services, repo) -> None:
        await given(repo, installed(config={"token": sealed("t"), "level": 1}))

        with pytest.raises(FieldNotSealed) as refused:
            await run(services, DeclassifyConfig(plugin_id=PID, fields=["token", "level"], reason="r"))

        assert refused.value.details["field"] == "fields.1"


class TestUninstallPlugin:
    async def test_records_uninstalled(self, services, repo) -> None:
        await given(repo, installed())

        await run(services, UninstallPlugin(plugin_id=PID, reason="replaced"))

        events = repo.new_events()
        assert [e for e in events if e[0] == STREAM] == [(STREAM, "Uninstalled", dict(reason="replaced", forced=False, cleanup_data=False))]
        assert (f"plugin-sites:{PID}", "Closed") in [(stream, name) for stream, name, _ in events]
        assert plugin_in(repo).status == "uninstalled"

    async def test_cleanup_data_drops_the_configuration(self, services, repo) -> None:
        await given(repo, installed(config={"level": 1}))

        await run(services, UninstallPlugin(plugin_id=PID, cleanup_data=True))

        assert plugin_in(repo).config == {}

    async def test_rejects_a_plugin_others_depend_on(self, services, repo) -> None:
        await given(repo, installed())
        await run(services, InstallPlugin(manifest=manifest(plugin_id="reports", dependencies={PID: ">=1"}), source=source()))
        repo.new_events()

        with pytest.raises(HasDependents) as refused:
            await run(services, UninstallPlugin(plugin_id=PID))

        assert refused.value.details["dependents"] == ["reports"]
        assert repo.new_events() == []

    async def test_force_uninstalls_despite_dependents(self, services, repo) -> None:
        await given(repo, installed())
        await run(services, InstallPlugin(manifest=manifest(plugin_id="reports", dependencies={PID: ">=1"}), source=source()))
        repo.new_events()

        await run(services, UninstallPlugin(plugin_id=PID, force=True))

        assert [e for e in repo.new_events() if e[0] == STREAM] == [(STREAM, "Uninstalled", dict(reason=None, forced=True, cleanup_data=False))]

    async def test_an_uninstalled_dependent_does_not_hold_it_back(self, services, repo) -> None:
        await given(repo, installed())
        reports = installed(plugin_id="reports", dependencies={PID: ">=1"})
        reports.uninstall(None, False, False)
        await given(repo, reports)

        await run(services, UninstallPlugin(plugin_id=PID))

        assert [name for stream, name, _ in repo.new_events() if stream == STREAM] == ["Uninstalled"]

    async def test_rejects_a_second_uninstall(self, services, repo) -> None:
        plugin = installed()
        plugin.uninstall(None, False, False)
        await given(repo, plugin)

        with pytest.raises(PluginNotInstalled):
            await run(services, UninstallPlugin(plugin_id=PID))

    async def test_rejects_an_unknown_plugin(self, services) -> None:
        with pytest.raises(PluginNotFound):
            await run(services, UninstallPlugin(plugin_id=PID))
