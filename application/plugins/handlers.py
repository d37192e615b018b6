"""Command handlers of the plugin lifecycle: load, call one aggregate method, append."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
from application.errors import ConcurrencyError, PreconditionFailed, SourceUnavailable
from application.plugins.ports import FoundPlugin, PluginSources
from application.ports import ArchiveStore, Sandbox, SecretCipher
from application.unit import Loaded, Repository
from domain.sites.activations import STREAM_TYPE as ACTIVATIONS_STREAM
from domain.sites.activations import PluginActivations, activations_uuid
from domain.plugins.configuration import (
    Location,
    changed_keys,
    is_sealed,
    map_locations,
    map_sealed,
    path_of,
    prepare_config,
    secret_locations,
)
from domain.plugins.dependents import STREAM_TYPE as DEPENDENTS_STREAM
from domain.plugins.dependents import Dependents, dependents_uuid
from domain.plugins.errors import ConfigurationInvalid, DeclassifyRefused, ManifestInvalid, PluginNotFound
from domain.plugins.manifest import Manifest, parse_manifest
from domain.plugins.plugin import STREAM_TYPE, Plugin, plugin_uuid
from domain.plugins.policies import check_dependencies, check_host_compatibility


@dataclass
class PluginServices:
    repository: Repository
    cipher: SecretCipher
    archives: ArchiveStore
    host_version: str
    sandbox: Sandbox
    sources: PluginSources | None = None  # None: only manifests given in the command can be installed


async def load(services: PluginServices, plugin_id: str, ctx: CommandContext, must_exist: bool = True) -> Loaded[Plugin]:
    loaded = await services.repository.load(Plugin, STREAM_TYPE, plugin_id, plugin_uuid(plugin_id))
    if must_exist and loaded.aggregate is None:
        raise PluginNotFound(f"plugin {plugin_id} is not known", plugin_id=plugin_id)
    if ctx.expected_version is not None and ctx.expected_version != loaded.version:
        raise PreconditionFailed(loaded.stream_id, ctx.expected_version, loaded.version)
    return loaded


async def save(
    services: PluginServices, loaded: Loaded[Plugin], ctx: CommandContext, command: str, also: Sequence[Loaded[Any]] = ()
) -> CommandResult:
    """Append the plugin's events, and those of the streams in `also`, in one transaction."""
    items = [(loaded, None), *((other, None) for other in also)]
    result = (await services.repository.save_all(items, ctx.metadata(command), ctx.idempotency))[0]
    return CommandResult(result.stream_id, result.version, result.position, result.duplicate)


async def closing_activations(services: PluginServices, plugin_id: str, reason: str | None) -> Loaded[PluginActivations]:
    """The plugin's site-activation registry (domain/sites) with Closed recorded, appended with the
    uninstall: refused (PluginActiveAtSites) while a site has it active, and an activation racing the
    uninstall clashes on this stream, so the loser decides again."""
    loaded = await services.repository.load(PluginActivations, ACTIVATIONS_STREAM, plugin_id, activations_uuid(plugin_id))
    if loaded.aggregate is None:
        loaded.aggregate = PluginActivations(plugin_id=plugin_id)
    loaded.aggregate.close(reason)
    return loaded


async def load_dependents(services: PluginServices, plugin_id: str) -> Loaded[Dependents]:
    """`plugin_id`'s dependents stream, opened (saved only with a change) when it has none yet."""
    loaded = await services.repository.load(Dependents, DEPENDENTS_STREAM, plugin_id, dependents_uuid(plugin_id))
    if loaded.aggregate is None:
        loaded.aggregate = Dependents(plugin_id=plugin_id)
    return loaded


async def follow_dependencies(
    services: PluginServices, plugin_id: str, before: Manifest | None, after: Manifest | None, force: bool = False
) -> list[Loaded[Dependents]]:
    """The dependents streams that `plugin_id` going from `before` to `after` (installed manifests; None:
    not installed) changes, to be appended with the plugin's own events: it joins the streams of the
    plugins `after` depends on and leaves those only `before` depended on, and, uninstalled, its own
    stream records it (refused while others depend on it, unless forced). The streams are read before
    the dependencies' own streams are checked, so a dependency it joins that is uninstalled meanwhile
    makes the append fail (and the command is decided again); one it depended on already cannot be
    uninstalled meanwhile (its stream lists this plugin)."""
    changed = []
    if after is None:
        own = await load_dependents(services, plugin_id)
        own.aggregate.uninstall(force)
        changed.append(own)
    needed = set(after.dependencies) if after is not None else set()
    dropped = set(before.dependencies) - needed if before is not None else set()
    streams = {dep_id: await load_dependents(services, dep_id) for dep_id in sorted(needed | dropped)}
    if after is not None:
        check_dependencies(after, await installed_versions(services, after))
    for dep_id, stream in streams.items():
        if stream.aggregate.add(plugin_id) if dep_id in needed else stream.aggregate.remove(plugin_id):
            changed.append(stream)
    return changed


async def installed_versions(services: PluginServices, manifest: Manifest) -> dict[str, str | None]:
    """Installed version of each dependency, read from its own stream (not from a lagging read model)."""
    found: dict[str, str | None] = {}
    for dep_id in manifest.dependencies:
        dep = (await load(services, dep_id, CommandContext(), must_exist=False)).aggregate
        found[dep_id] = dep.current_version if dep is not None and dep.installed else None
    return found


def manifest_over_limit(reason: str) -> ManifestInvalid:
    return ManifestInvalid(f"manifest.config_schema could not be checked: it {reason}", field="manifest.config_schema")


def config_over_limit(reason: str) -> ConfigurationInvalid:
    return ConfigurationInvalid(f"config could not be validated against the plugin's schema: it {reason}", field="config")


async def checked_manifest(services: PluginServices, raw: dict[str, Any]) -> Manifest:
    """The manifest parsed and its config_schema checked, in the sandbox (the schema is the author's).
    Without a schema there is nothing unbounded to run: parsed here, sparing the round trip."""
    if isinstance(raw, dict) and not raw.get("config_schema"):
        return parse_manifest(raw)
    return await services.sandbox.run(parse_manifest, raw, over_limit=manifest_over_limit)


def unseal(services: PluginServices, stored: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration in clear: every sealed value opened, whatever the schema says now."""
    return map_sealed(stored, lambda _path, value: services.cipher.unseal(value))


async def prepare(
    services: PluginServices,
    schema: dict[str, Any],
    new: dict[str, Any],
    old: dict[str, Any],
    classified: set[Location],
    over_limit: Callable[[str], Exception] = config_over_limit,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(clear, sealed): `new` checked against `schema` in the sandbox, and sealed where the schema marks
    a secret or a value was sealed before, so secrets never reach the log in clear."""
    if not schema and not classified:
        clear, secret = prepare_config(schema, new, old)  # no schema: linear checks only, no validation
    else:
        clear, secret = await services.sandbox.run(
            prepare_config, schema, new, old, sorted(classified, key=path_of), over_limit=over_limit
        )
    return clear, map_locations(clear, secret, lambda _path, value: services.cipher.seal(value))


async def reseal(services: PluginServices, plugin: Plugin, manifest: Manifest) -> dict[str, Any]:
    """The plugin's configuration checked against, and sealed for, another version's schema."""
    clear = unseal(services, plugin.config)
    return (await prepare(services, manifest.config_schema, clear, clear, plugin.classified, manifest_over_limit))[1]


async def find_plugin(services: PluginServices, cmd: InstallPlugin | UpdatePlugin) -> FoundPlugin:
    """The manifest and source the command names: read from its archive, looked up by its entry point,
    or given with it. Exactly one of the three."""
    named = [name for name in ("archive", "entrypoint", "manifest") if getattr(cmd, name) is not None]
    if len(named) != 1:
        raise SourceUnavailable(
            f"a plugin comes from exactly one of an archive, an entry point or a manifest, not {named or 'none'}",
            field="source",
        )
    if cmd.manifest is not None:
        return FoundPlugin(cmd.manifest, cmd.source)
    if services.sources is None:
        raise SourceUnavailable("this process reads no plugin archives or entry points", field=named[0])
    if cmd.archive is not None:
        return await services.sources.from_archive(cmd.archive, cmd.filename)
    found = await services.sources.from_entry_point(cmd.entrypoint)
    if cmd.version is not None and found.manifest.get("version") != cmd.version:
        raise SourceUnavailable(
            f"entry point {cmd.entrypoint!r} provides version {found.manifest.get('version')}, not {cmd.version}",
            field="version",
        )
    return found


async def install_plugin(cmd: InstallPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    found = await find_plugin(services, cmd)
    manifest = await checked_manifest(services, found.manifest)
    check_host_compatibility(manifest, services.host_version)
    dependencies = await follow_dependencies(services, manifest.id, None, manifest)

    async def args(classified: set[Location]) -> dict[str, Any]:
        _, config = await prepare(services, manifest.config_schema, cmd.config, {}, classified)
        return dict(manifest=manifest.to_dict(), source=found.source, config=config)

    first = await args(set())
    if cmd.archive is not None:
        await services.archives.put(cmd.archive)
    if ctx.expected_version is None:
        # Most installs are of new plugins: append at version 0 without reading the stream first.
        fresh = services.repository.new(STREAM_TYPE, manifest.id)
        fresh.aggregate = Plugin(plugin_id=manifest.id, enabled=cmd.auto_enable, **first)
        try:
            return await save(services, fresh, ctx, "InstallPlugin", dependencies)
        except ConcurrencyError as exc:
            if exc.details.get("stream_id") != fresh.stream_id:
                raise  # a dependency moved on meanwhile: decided again from the start (application.bus)
            # the stream exists: installed already, or uninstalled and now reinstalled
    loaded = await load(services, manifest.id, ctx, must_exist=False)
    if loaded.aggregate is None:
        loaded.aggregate = Plugin(plugin_id=manifest.id, enabled=cmd.auto_enable, **first)
    else:
        # Fields sealed in an earlier life of the plugin stay sealed.
        again = await args(loaded.aggregate.classified) if loaded.aggregate.classified else first
        loaded.aggregate.reinstall(enabled=cmd.auto_enable, **again)
    dependencies = await follow_dependencies(services, manifest.id, None, manifest)
    return await save(services, loaded, ctx, "InstallPlugin", dependencies)


async def update_plugin(cmd: UpdatePlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    found = await find_plugin(services, cmd)
    manifest = await checked_manifest(services, found.manifest)
    if manifest.id != cmd.plugin_id:
        raise ManifestInvalid(f"manifest.id {manifest.id!r} does not match plugin {cmd.plugin_id!r}", field="manifest.id")
    loaded = await load(services, cmd.plugin_id, ctx)
    plugin = loaded.aggregate
    plugin.check_installed()
    check_host_compatibility(manifest, services.host_version)
    dependencies = await follow_dependencies(services, cmd.plugin_id, plugin.manifest, manifest)
    config = await reseal(services, plugin, manifest)
    if cmd.archive is not None:
        await services.archives.put(cmd.archive)
    plugin.update(manifest.to_dict(), found.source, config)
    return await save(services, loaded, ctx, "UpdatePlugin", dependencies)


async def roll_back_plugin(cmd: RollBackPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    plugin = loaded.aggregate
    plugin.check_installed()
    target = await checked_manifest(services, plugin.previous_version(cmd.to_version)["manifest"])
    check_host_compatibility(target, services.host_version)
    dependencies = await follow_dependencies(services, cmd.plugin_id, plugin.manifest, target)
    plugin.roll_back(cmd.to_version, await reseal(services, plugin, target))
    return await save(services, loaded, ctx, "RollBackPlugin", dependencies)


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
    old = unseal(services, plugin.config)
    clear, sealed = await prepare(services, plugin.manifest.config_schema, cmd.config, old, plugin.classified)
    plugin.configure(sealed, changed_keys(old, clear))
    return await save(services, loaded, ctx, "ConfigurePlugin")


async def declassify_config(cmd: DeclassifyConfig, ctx: CommandContext, services: PluginServices) -> CommandResult:
    """Store named sealed fields in clear from now on, unless the current schema still marks them secret."""
    loaded = await load(services, cmd.plugin_id, ctx)
    plugin = loaded.aggregate
    locations = plugin.classified_at(cmd.fields)
    schema = plugin.manifest.config_schema
    clear = unseal(services, plugin.config)
    marked = set(await services.sandbox.run(secret_locations, schema, clear, over_limit=config_over_limit))
    still = [path_of(loc) for loc in locations if loc in marked]
    if still:
        raise DeclassifyRefused(
            f"{still[0]} is marked secret by the schema of version {plugin.current_version}; a field the schema marks"
            " secret cannot be declassified",
            field=f"fields.{[path_of(loc) for loc in locations].index(still[0])}",
            still_secret=still,
        )
    config = map_locations(plugin.config, locations, lambda _p, v: services.cipher.unseal(v) if is_sealed(v) else v)
    plugin.declassify([path_of(loc) for loc in locations], cmd.reason, config)
    return await save(services, loaded, ctx, "DeclassifyConfig")


async def uninstall_plugin(cmd: UninstallPlugin, ctx: CommandContext, services: PluginServices) -> CommandResult:
    loaded = await load(services, cmd.plugin_id, ctx)
    plugin = loaded.aggregate
    plugin.check_installed()
    dependencies = await follow_dependencies(services, cmd.plugin_id, plugin.manifest, None, cmd.force)
    activations = await closing_activations(services, cmd.plugin_id, cmd.reason)
    plugin.uninstall(cmd.reason, cmd.force, cmd.cleanup_data)
    return await save(services, loaded, ctx, "UninstallPlugin", [*dependencies, activations])


HANDLERS = {
    InstallPlugin: install_plugin,
    UpdatePlugin: update_plugin,
    RollBackPlugin: roll_back_plugin,
    EnablePlugin: enable_plugin,
    DisablePlugin: disable_plugin,
    RestartPlugin: restart_plugin,
    ReloadPlugin: reload_plugin,
    ConfigurePlugin: configure_plugin,
    DeclassifyConfig: declassify_config,
    UninstallPlugin: uninstall_plugin,
}
