"""Command handlers of the plugin lifecycle: load, call one aggregate method, append."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from application.commands import (
    ConfigurePlugin,
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
from application.errors import ConcurrencyError, PreconditionFailed
from application.ports import ArchiveStore, PluginCatalog, SecretCipher
from application.unit import Loaded, Repository
from domain.configuration import changed_keys, is_sealed, keep_masked, map_secrets, validate_config
from domain.errors import ManifestInvalid, PluginNotFound
from domain.manifest import Manifest, parse_manifest
from domain.plugin import STREAM_TYPE, Plugin, plugin_uuid
from domain.policies import check_dependencies, check_host_compatibility, check_no_dependents


@dataclass
class PluginServices:
    repository: Repository
    catalog: PluginCatalog
    cipher: SecretCipher
    archives: ArchiveStore
    host_version: str


async def load(services: PluginServices, plugin_id: str, ctx: CommandContext, must_exist: bool = True) -> Loaded[Plugin]:
    loaded = await services.repository.load(Plugin, STREAM_TYPE, plugin_id, plugin_uuid(plugin_id))
    if must_exist and loaded.aggregate is None:
        raise PluginNotFound(f"plugin {plugin_id} is not known", plugin_id=plugin_id)
    if ctx.expected_version is not None and ctx.expected_version != loaded.version:
        raise PreconditionFailed(loaded.stream_id, ctx.expected_version, loaded.version)
    return loaded


async def save(services: PluginServices, loaded: Loaded[Plugin], ctx: CommandContext, command: str) -> CommandResult:
    result = await services.repository.save(loaded, ctx.metadata(command), ctx.idempotency)
    return CommandResult(result.stream_id, result.version, result.position, result.duplicate)


async def installed_versions(services: PluginServices, manifest: Manifest) -> dict[str, str | None]:
    """Installed version of each dependency, read from its own stream (not from a lagging read model)."""
    found: dict[str, str | None] = {}
    for dep_id in manifest.dependencies:
        dep = (await load(services, dep_id, CommandContext(), must_exist=False)).aggregate
        found[dep_id] = dep.current_version if dep is not None and dep.installed else None
    return found


def seal(services: PluginServices, schema: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Encrypt the fields the schema marks secret, so they never reach the log in clear."""
    return map_secrets(schema, config, lambda _path, value: services.cipher.seal(value))


def unseal(services: PluginServices, schema: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    return map_secrets(schema, config, lambda _path, v: services.cipher.unseal(v) if is_sealed(v) else v)


def reseal(services: PluginServices, plugin: Plugin, manifest: Manifest) -> dict[str, Any]:
    """The plugin's configuration checked against, and sealed for, another version's schema."""
    clear = unseal(services, plugin.manifest.config_schema, plugin.config)
    validate_config(manifest.config_schema, clear)
    return seal(services, manifest.config_schema, clear)


async def check_installable(services: PluginServices, manifest: Manifest) -> None:
    check_host_compatibility(manifest, services.host_version)
    check_dependencies(manifest, await installed_versions(services, manifest))


async def install_plugin(cmd: InstallPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    manifest = parse_manifest(cmd.manifest)
    await check_installable(services, manifest)
    validate_config(manifest.config_schema, cmd.config)
    args = dict(manifest=manifest.to_dict(), source=cmd.source, config=seal(services, manifest.config_schema, cmd.config))
    if cmd.archive is not None:
        await services.archives.put(cmd.archive)
    if ctx.expected_version is None:
        # Most installs are of new plugins: append at version 0 without reading the stream first.
        fresh = services.repository.new(STREAM_TYPE, manifest.id)
        fresh.aggregate = Plugin(plugin_id=manifest.id, enabled=cmd.auto_enable, **args)
        try:
            return await save(services, fresh, ctx, "InstallPlugin")
        except ConcurrencyError:
            pass  # the stream exists: installed already, or uninstalled and now reinstalled
    loaded = await load(services, manifest.id, ctx, must_exist=False)
    if loaded.aggregate is None:
        loaded.aggregate = Plugin(plugin_id=manifest.id, enabled=cmd.auto_enable, **args)
    else:
        loaded.aggregate.reinstall(enabled=cmd.auto_enable, **args)
    return await save(services, loaded, ctx, "InstallPlugin")


async def update_plugin(cmd: UpdatePlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    manifest = parse_manifest(cmd.manifest)
    if manifest.id != cmd.plugin_id:
        raise ManifestInvalid(f"manifest.id {manifest.id!r} does not match plugin {cmd.plugin_id!r}", field="manifest.id")
    loaded = await load(services, cmd.plugin_id, ctx)
    plugin = loaded.aggregate
    plugin.check_installed()
    await check_installable(services, manifest)
    config = reseal(services, plugin, manifest)
    if cmd.archive is not None:
        await services.archives.put(cmd.archive)
    plugin.update(manifest.to_dict(), cmd.source, config)
    return await save(services, loaded, ctx, "UpdatePlugin")


async def roll_back_plugin(cmd: RollBackPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    loaded.aggregate.check_installed()
    target = parse_manifest(loaded.aggregate.previous_version(cmd.to_version)["manifest"])
    await check_installable(services, target)
    loaded.aggregate.roll_back(cmd.to_version, reseal(services, loaded.aggregate, target))
    return await save(services, loaded, ctx, "RollBackPlugin")


async def enable_plugin(cmd: EnablePlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    loaded.aggregate.check_installed()
    check_dependencies(loaded.aggregate.manifest, await installed_versions(services, loaded.aggregate.manifest))
    loaded.aggregate.enable(cmd.reason)
    return await save(services, loaded, ctx, "EnablePlugin")


async def disable_plugin(cmd: DisablePlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    loaded.aggregate.disable(cmd.reason)
    return await save(services, loaded, ctx, "DisablePlugin")


async def restart_plugin(cmd: RestartPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    loaded.aggregate.restart(cmd.reason)
    return await save(services, loaded, ctx, "RestartPlugin")


async def reload_plugin(cmd: ReloadPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    loaded.aggregate.reload(cmd.reason)
    return await save(services, loaded, ctx, "ReloadPlugin")


async def configure_plugin(cmd: ConfigurePlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    plugin = loaded.aggregate
    plugin.check_installed()
    schema = plugin.manifest.config_schema
    old = unseal(services, schema, plugin.config)
    clear = keep_masked(schema, cmd.config, old)
    validate_config(schema, clear)
    plugin.configure(seal(services, schema, clear), changed_keys(old, clear))
    return await save(services, loaded, ctx, "ConfigurePlugin")


async def uninstall_plugin(cmd: UninstallPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    loaded.aggregate.check_installed()
    check_no_dependents(cmd.plugin_id, await services.catalog.dependents_of(cmd.plugin_id), cmd.force)
    loaded.aggregate.uninstall(cmd.reason, cmd.force, cmd.cleanup_data)
    return await save(services, loaded, ctx, "UninstallPlugin")


HANDLERS = {
    InstallPlugin: install_plugin,
    UpdatePlugin: update_plugin,
    RollBackPlugin: roll_back_plugin,
    EnablePlugin: enable_plugin,
    DisablePlugin: disable_plugin,
    RestartPlugin: restart_plugin,
    ReloadPlugin: reload_plugin,
    ConfigurePlugin: configure_plugin,
    UninstallPlugin: uninstall_plugin,
}
