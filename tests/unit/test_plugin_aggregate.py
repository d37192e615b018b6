"""The Plugin aggregate: given events / when command / then events (or a domain error)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

import pytest
from eventsourcing.utils import get_topic

from domain.plugins.errors import NothingToRollBack, PluginAlreadyInstalled, PluginNotInstalled, VersionUnchanged
from domain.plugins.plugin import Plugin, plugin_uuid

PLUGIN_ID = "audit-log"
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def manifest(version: str, **extra: Any) -> dict[str, Any]:
    return {"id": PLUGIN_ID, "name": "Audit log", "version": version, **extra}


def source(version: str) -> dict[str, Any]:
    return {"kind": "registry", "ref": f"{PLUGIN_ID}=={version}"}


# -- given: past events, replayed into the aggregate -----------------------------------------------


def installed(version: str = "1.0.0", config: dict | None = None, enabled: bool = False) -> tuple[str, dict]:
    return "Installed", dict(
        plugin_id=PLUGIN_ID, manifest=manifest(version), source=source(version), config=config or {}, enabled=enabled
    )


def reinstalled(version: str, config: dict | None = None, enabled: bool = False) -> tuple[str, dict]:
    return "Reinstalled", dict(manifest=manifest(version), source=source(version), config=config or {}, enabled=enabled)


def updated(from_version: str, to_version: str, config: dict | None = None) -> tuple[str, dict]:
    return "Updated", dict(
        from_version=from_version, to_version=to_version, manifest=manifest(to_version), source=source(to_version),
        config=config or {},
    )


def rolled_back(from_version: str, to_version: str, config: dict | None = None) -> tuple[str, dict]:
    return "RolledBack", dict(from_version=from_version, to_version=to_version, config=config or {})


def enabled(reason: str | None = None) -> tuple[str, dict]:
    return "Enabled", dict(reason=reason)


def disabled(reason: str | None = None) -> tuple[str, dict]:
    return "Disabled", dict(reason=reason)


def configured(config: dict, changed: list[str]) -> tuple[str, dict]:
    return "ConfigurationChanged", dict(config=config, changed_keys=changed)


def uninstalled(reason: str | None = None, forced: bool = False, cleanup_data: bool = False) -> tuple[str, dict]:
    return "Uninstalled", dict(reason=reason, forced=forced, cleanup_data=cleanup_data)


def given(*events: tuple[str, dict]) -> Plugin:
    """The aggregate as its stream of past events leaves it (nothing pending)."""
    aggregate: Plugin | None = None
    for version, (name, payload) in enumerate(events, start=1):
        kwargs = dict(payload, originator_id=plugin_uuid(PLUGIN_ID), originator_version=version,
                      timestamp=datetime.now(timezone.utc))
        if version == 1:
            kwargs["originator_topic"] = get_topic(Plugin)
        aggregate = getattr(Plugin, name)(**kwargs).mutate(aggregate)
    assert aggregate is not None
    return aggregate


# -- then: what the command recorded ---------------------------------------------------------------


def recorded(plugin: Plugin) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type(e).__name__, {f.name: getattr(e, f.name) for f in dataclasses.fields(e) if f.name not in ENVELOPE})
        for e in plugin.collect_events()
    ]


# -- when: one class per command -------------------------------------------------------------------


class TestInstall:
    def test_records_installed_with_manifest_source_and_config(self) -> None:
        plugin = Plugin(
            plugin_id=PLUGIN_ID, manifest=manifest("1.0.0"), source=source("1.0.0"), config={"level": 3}, enabled=True
        )

        assert recorded(plugin) == [
            (
                "Installed",
                dict(plugin_id=PLUGIN_ID, manifest=manifest("1.0.0"), source=source("1.0.0"), config={"level": 3},
                     enabled=True),
            )
        ]

    def test_stream_is_keyed_by_plugin_id(self) -> None:
        plugin = Plugin(plugin_id=PLUGIN_ID, manifest=manifest("1.0.0"), source={}, config={}, enabled=False)

        assert plugin.id == plugin_uuid(PLUGIN_ID)
        assert plugin.version == 1

    def test_installed_enabled_is_enabled(self) -> None:
        plugin = given(installed(enabled=True))

        assert plugin.status == "enabled"
        assert plugin.enabled and plugin.installed
        assert plugin.current_version == "1.0.0"

    def test_installed_without_auto_enable_is_installed_but_not_enabled(self) -> None:
        plugin = given(installed(enabled=False))

        assert plugin.status == "installed"
        assert not plugin.enabled

    def test_manifest_property_parses_the_stored_manifest(self) -> None:
        plugin = given(installed("1.2.0"))

        assert plugin.manifest.id == PLUGIN_ID
        assert plugin.manifest.version == "1.2.0"


class TestReinstall:
    def test_records_reinstalled_after_uninstall(self) -> None:
        plugin = given(installed("1.0.0"), uninstalled())

        plugin.reinstall(manifest("2.0.0"), source("2.0.0"), {"level": 1}, True)

        assert recorded(plugin) == [
            ("Reinstalled", dict(manifest=manifest("2.0.0"), source=source("2.0.0"), config={"level": 1}, enabled=True))
        ]
        assert plugin.installed and plugin.status == "enabled"
        assert plugin.current_version == "2.0.0"

    def test_keeps_earlier_versions_for_rollback(self) -> None:
        plugin = given(installed("1.0.0"), uninstalled())

        plugin.reinstall(manifest("2.0.0"), source("2.0.0"), {}, False)

        assert [v["version"] for v in plugin.versions] == ["1.0.0", "2.0.0"]

    def test_clears_a_previous_disable(self) -> None:
        plugin = given(installed(), disabled("broken"), uninstalled())

        plugin.reinstall(manifest("1.0.0"), source("1.0.0"), {}, False)

        assert plugin.disabled_reason is None
        assert plugin.status == "installed"

    def test_starts_counting_restarts_and_reloads_afresh(self) -> None:
        plugin = given(installed(), ("Restarted", dict(reason=None)), ("Reloaded", dict(reason=None)), uninstalled())

        plugin.reinstall(manifest("1.0.0"), source("1.0.0"), {}, False)

        assert (plugin.restarts, plugin.reloads) == (0, 0)

    def test_rejects_reinstall_while_installed(self) -> None:
        plugin = given(installed("1.0.0"))

        with pytest.raises(PluginAlreadyInstalled) as refused:
            plugin.reinstall(manifest("2.0.0"), source("2.0.0"), {}, False)

        assert refused.value.details == {"plugin_id": PLUGIN_ID, "version": "1.0.0"}
        assert recorded(plugin) == []


class TestUpdate:
    def test_records_updated_with_from_and_to_version(self) -> None:
        plugin = given(installed("1.0.0"))

        plugin.update(manifest("1.1.0"), source("1.1.0"), {})

        assert recorded(plugin) == [("Updated", updated("1.0.0", "1.1.0")[1])]
        assert plugin.current_version == "1.1.0"
        assert plugin.source == source("1.1.0")

    def test_records_the_configuration_resealed_for_the_new_version(self) -> None:
        plugin = given(installed("1.0.0", config={"level": 2}, enabled=True))

        plugin.update(manifest("1.1.0"), source("1.1.0"), {"level": 2, "token": {"$sealed": "new"}})

        assert recorded(plugin) == [("Updated", updated("1.0.0", "1.1.0", {"level": 2, "token": {"$sealed": "new"}})[1])]
        assert plugin.config == {"level": 2, "token": {"$sealed": "new"}}

    def test_keeps_the_enabled_state(self) -> None:
        plugin = given(installed("1.0.0", enabled=True))

        plugin.update(manifest("1.1.0"), source("1.1.0"), {})

        assert plugin.status == "enabled"

    def test_rejects_update_to_the_same_version(self) -> None:
        plugin = given(installed("1.0.0"))

        with pytest.raises(VersionUnchanged) as refused:
            plugin.update(manifest("1.0.0"), source("1.0.0"), {})

        assert refused.value.details == {"version": "1.0.0"}
        assert recorded(plugin) == []

    def test_rejects_update_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed("1.0.0"), uninstalled())

        with pytest.raises(PluginNotInstalled):
            plugin.update(manifest("1.1.0"), source("1.1.0"), {})

        assert recorded(plugin) == []


class TestRollBack:
    def test_records_rolled_back_to_the_version_installed_before(self) -> None:
        plugin = given(installed("1.0.0"), updated("1.0.0", "1.1.0"), updated("1.1.0", "1.2.0"))

        target = plugin.roll_back(None, {"level": 1})

        assert recorded(plugin) == [("RolledBack", dict(from_version="1.2.0", to_version="1.1.0", config={"level": 1}))]
        assert target["version"] == "1.1.0"
        assert plugin.current_version == "1.1.0"
        assert plugin.manifest_data == manifest("1.1.0")
        assert plugin.source == source("1.1.0")
        assert plugin.config == {"level": 1}

    def test_records_rolled_back_to_a_named_version(self) -> None:
        plugin = given(installed("1.0.0"), updated("1.0.0", "1.1.0"), updated("1.1.0", "1.2.0"))

        plugin.roll_back("1.0.0", {})

        assert recorded(plugin) == [("RolledBack", dict(from_version="1.2.0", to_version="1.0.0", config={}))]
        assert plugin.current_version == "1.0.0"

    def test_rejects_rollback_without_a_previous_version(self) -> None:
        plugin = given(installed("1.0.0"))

        with pytest.raises(NothingToRollBack) as refused:
            plugin.roll_back(None, {})

        assert refused.value.details == {"available": ["1.0.0"]}
        assert recorded(plugin) == []

    def test_rejects_rollback_to_a_version_never_installed(self) -> None:
        plugin = given(installed("1.0.0"), updated("1.0.0", "1.1.0"))

        with pytest.raises(NothingToRollBack) as refused:
            plugin.roll_back("0.9.0", {})

        assert refused.value.details == {"available": ["1.0.0", "1.1.0"]}
        assert recorded(plugin) == []

    def test_rejects_rollback_to_the_current_version(self) -> None:
        plugin = given(installed("1.0.0"), updated("1.0.0", "1.1.0"))

        with pytest.raises(NothingToRollBack):
            plugin.roll_back("1.1.0", {})

    def test_rejects_rollback_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed("1.0.0"), updated("1.0.0", "1.1.0"), uninstalled())

        with pytest.raises(PluginNotInstalled):
            plugin.roll_back(None, {})

        assert recorded(plugin) == []

    def test_replayed_rollback_restores_the_old_manifest(self) -> None:
        plugin = given(installed("1.0.0"), updated("1.0.0", "2.0.0"), rolled_back("2.0.0", "1.0.0"))

        assert plugin.current_version == "1.0.0"
        assert plugin.manifest_data == manifest("1.0.0")


class TestEnable:
    def test_records_enabled_with_reason(self) -> None:
        plugin = given(installed(enabled=False))

        assert plugin.enable("go live") is True

        assert recorded(plugin) == [("Enabled", dict(reason="go live"))]
        assert plugin.status == "enabled"

    def test_enabling_a_disabled_plugin_clears_the_reason(self) -> None:
        plugin = given(installed(enabled=True), disabled("incident 42"))

        plugin.enable()

        assert recorded(plugin) == [("Enabled", dict(reason=None))]
        assert plugin.disabled_reason is None
        assert plugin.status == "enabled"

    def test_records_nothing_when_already_enabled(self) -> None:
        plugin = given(installed(enabled=True))

        assert plugin.enable() is False

        assert recorded(plugin) == []

    def test_rejects_enable_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed(), uninstalled())

        with pytest.raises(PluginNotInstalled) as refused:
            plugin.enable()

        assert refused.value.details == {"plugin_id": PLUGIN_ID}
        assert recorded(plugin) == []


class TestDisable:
    def test_records_disabled_with_reason(self) -> None:
        plugin = given(installed(enabled=True))

        assert plugin.disable("incident 42") is True

        assert recorded(plugin) == [("Disabled", dict(reason="incident 42"))]
        assert plugin.status == "disabled"
        assert plugin.disabled_reason == "incident 42"

    def test_records_no_reason_as_null_when_none_given(self) -> None:
        plugin = given(installed(enabled=True))

        plugin.disable()

        assert recorded(plugin) == [("Disabled", dict(reason=None))]
        assert plugin.status == "disabled"
        assert plugin.disable() is False

    def test_an_installed_but_never_enabled_plugin_can_be_switched_off(self) -> None:
        plugin = given(installed(enabled=False))

        assert plugin.disable("kill switch") is True

        assert recorded(plugin) == [("Disabled", dict(reason="kill switch"))]

    def test_records_nothing_when_already_disabled(self) -> None:
        plugin = given(installed(enabled=True), disabled("first"))

        assert plugin.disable("second") is False

        assert recorded(plugin) == []
        assert plugin.disabled_reason == "first"

    def test_rejects_disable_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed(enabled=True), uninstalled())

        with pytest.raises(PluginNotInstalled):
            plugin.disable()

        assert recorded(plugin) == []


class TestRestart:
    def test_records_restarted(self) -> None:
        plugin = given(installed(enabled=True))

        plugin.restart("stuck")

        assert recorded(plugin) == [("Restarted", dict(reason="stuck"))]
        assert plugin.restarts == 1

    def test_counts_every_restart(self) -> None:
        plugin = given(installed(enabled=True))

        plugin.restart()
        plugin.restart()

        assert [name for name, _ in recorded(plugin)] == ["Restarted", "Restarted"]
        assert plugin.restarts == 2

    def test_rejects_restart_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed(), uninstalled())

        with pytest.raises(PluginNotInstalled):
            plugin.restart()

        assert recorded(plugin) == []


class TestReload:
    def test_records_reloaded(self) -> None:
        plugin = given(installed(enabled=True))

        plugin.reload("new templates")

        assert recorded(plugin) == [("Reloaded", dict(reason="new templates"))]
        assert plugin.reloads == 1

    def test_rejects_reload_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed(), uninstalled())

        with pytest.raises(PluginNotInstalled):
            plugin.reload()

        assert recorded(plugin) == []


class TestConfigure:
    def test_records_configuration_changed_with_changed_keys(self) -> None:
        plugin = given(installed(config={"level": 1}))

        assert plugin.configure({"level": 2, "mode": "strict"}, ["level", "mode"]) is True

        assert recorded(plugin) == [
            ("ConfigurationChanged", dict(config={"level": 2, "mode": "strict"}, changed_keys=["level", "mode"]))
        ]
        assert plugin.config == {"level": 2, "mode": "strict"}

    def test_records_nothing_when_nothing_changed(self) -> None:
        plugin = given(installed(config={"level": 1}))

        assert plugin.configure({"level": 1}, []) is False

        assert recorded(plugin) == []

    def test_replayed_configuration_is_the_latest(self) -> None:
        plugin = given(installed(config={"level": 1}), configured({"level": 5}, ["level"]))

        assert plugin.config == {"level": 5}

    def test_rejects_configure_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed(), uninstalled())

        with pytest.raises(PluginNotInstalled):
            plugin.configure({"level": 2}, ["level"])

        assert recorded(plugin) == []


class TestUninstall:
    def test_records_uninstalled(self) -> None:
        plugin = given(installed(enabled=True, config={"level": 1}))

        plugin.uninstall("retired", forced=False, cleanup_data=False)

        assert recorded(plugin) == [("Uninstalled", dict(reason="retired", forced=False, cleanup_data=False))]
        assert plugin.status == "uninstalled"
        assert not plugin.installed and not plugin.enabled
        assert plugin.config == {"level": 1}

    def test_records_forced_uninstall_with_cleanup_and_drops_config(self) -> None:
        plugin = given(installed(config={"token": "x"}))

        plugin.uninstall(None, forced=True, cleanup_data=True)

        assert recorded(plugin) == [("Uninstalled", dict(reason=None, forced=True, cleanup_data=True))]
        assert plugin.config == {}

    def test_rejects_uninstall_of_an_uninstalled_plugin(self) -> None:
        plugin = given(installed(), uninstalled())

        with pytest.raises(PluginNotInstalled):
            plugin.uninstall(None, forced=False, cleanup_data=False)

        assert recorded(plugin) == []
