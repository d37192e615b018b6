"""Command handlers of the sites feature: load the site, call one Site method, append (with the
plugin's activation registry when an activation or deactivation changes where the plugin runs)."""

from __future__ import annotations

import re
from datetime import timezone
from uuid import UUID

from application.context import CommandContext, CommandResult
from application.errors import ConcurrencyError, PreconditionFailed
from application.sites.commands import (
    FORCE,
    ActivateExtension,
    CreateSite,
    DeactivateExtension,
    ReconfigureExtension,
    RecordSignoff,
    RenameSite,
    RetireSite,
)
from application.sites.registry import load_activations
from application.sites.proposals import SiteServices, load_plugin, manifest_of, propose, seal, unseal
from application.sites.validation import load_site
from application.unit import Loaded
from domain.identity.user import STREAM_TYPE as USER_STREAM
from domain.identity.user import User
from domain.plugins.configuration import changed_keys, sealed_locations
from domain.plugins.errors import PluginNotFound
from domain.plugins.site_rules import Compliance
from domain.sites.activations import PluginActivations
from domain.sites.errors import (
    ForceNotAllowed,
    ReauthenticationFailed,
    SignerNotAllowed,
    SiteExists,
    SiteInvalid,
)
from domain.sites.signoff import check_aspect, check_signer_role
from domain.sites.site import STREAM_TYPE, Site

HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


async def load(services: SiteServices, site_id: str, ctx: CommandContext) -> Loaded[Site]:
    loaded = await load_site(services, site_id)
    if ctx.expected_version is not None and ctx.expected_version != loaded.version:
        raise PreconditionFailed(loaded.stream_id, ctx.expected_version, loaded.version)
    return loaded


async def save(services: SiteServices, loaded: Loaded[Site], ctx: CommandContext, command: str,
               registry: Loaded[PluginActivations] | None = None) -> CommandResult:
    """The site's events (and the registry's, in the same transaction), each saved with the site's id."""
    site_id = loaded.aggregate.site_id
    items = [(loaded, site_id), *([(registry, site_id)] if registry is not None else [])]
    first = (await services.repository.save_all(items, ctx.metadata(command), ctx.idempotency))[0]
    return CommandResult(first.stream_id, first.version, first.position, first.duplicate)


# -- the site itself -------------------------------------------------------------------------------


async def create_site(cmd: CreateSite, ctx: CommandContext, services: SiteServices) -> CommandResult:
    site = Site.create(cmd.site_id, cmd.name, cmd.timezone, cmd.metadata)
    fresh = services.repository.new(STREAM_TYPE, cmd.site_id)
    fresh.aggregate = site
    try:
        return await save(services, fresh, ctx, "CreateSite")
    except ConcurrencyError:
        raise SiteExists(f"site {cmd.site_id} already exists", field="site_id", site_id=cmd.site_id) from None


async def rename_site(cmd: RenameSite, ctx: CommandContext, services: SiteServices) -> CommandResult:
    loaded = await load(services, cmd.site_id, ctx)
    loaded.aggregate.rename(cmd.name)
    return await save(services, loaded, ctx, "RenameSite")


async def retire_site(cmd: RetireSite, ctx: CommandContext, services: SiteServices) -> CommandResult:
    loaded = await load(services, cmd.site_id, ctx)
    loaded.aggregate.retire(cmd.reason)
    return await save(services, loaded, ctx, "RetireSite")


# -- extensions ------------------------------------------------------------------------------------


async def activate_extension(cmd: ActivateExtension, ctx: CommandContext, services: SiteServices) -> CommandResult:
    """Re-runs the validation policy inside the Site aggregate: refused with every problem listed."""
    loaded = await load(services, cmd.site_id, ctx)
    proposal = await propose(services, cmd.plugin_id, cmd.version, cmd.configuration)
    stored = proposal.sealed.stored if proposal.sealed else {}
    loaded.aggregate.activate(proposal.candidate, stored, proposal.disabled, cmd.reason)
    registry = await load_activations(services.repository, cmd.plugin_id)
    registry.aggregate.add(cmd.site_id)
    return await save(services, loaded, ctx, "ActivateExtension", registry)


async def reconfigure_extension(
    cmd: ReconfigureExtension, ctx: CommandContext, services: SiteServices
) -> CommandResult:
    """Checked against the schema of the version active at the site, sealed like plugin configurations
    (a value sealed before stays sealed); signoffs bound to the old hash are invalidated."""
    loaded = await load(services, cmd.site_id, ctx)
    site = loaded.aggregate
    site.check_open()
    current = site.active(cmd.plugin_id)
    plugin = await load_plugin(services, cmd.plugin_id)
    manifest = manifest_of(plugin, current.version) if plugin is not None else None
    if manifest is None:
        raise PluginNotFound(f"plugin {cmd.plugin_id} {current.version} is no longer installed", plugin_id=cmd.plugin_id)
    old = unseal(services, current.configuration)
    sealed = await seal(services, manifest.config_schema, cmd.configuration, old, sealed_locations(current.configuration))
    site.reconfigure(cmd.plugin_id, sealed.stored, sealed.configuration_hash, changed_keys(old, sealed.clear), cmd.reason)
    return await save(services, loaded, ctx, "ReconfigureExtension")


async def deactivate_extension(
    cmd: DeactivateExtension, ctx: CommandContext, services: SiteServices
) -> CommandResult:
    if cmd.force and ctx.access is not None and not ctx.access.allows(FORCE, cmd.site_id):
        raise ForceNotAllowed(
            f"forcing a deactivation past its dependents takes {FORCE} at site {cmd.site_id}",
            required_permission=FORCE, site_id=cmd.site_id,
        )
    loaded = await load(services, cmd.site_id, ctx)
    loaded.aggregate.deactivate(cmd.plugin_id, cmd.reason, cmd.force)
    registry = await load_activations(services.repository, cmd.plugin_id)
    registry.aggregate.remove(cmd.site_id)
    return await save(services, loaded, ctx, "DeactivateExtension", registry)


# -- signoffs --------------------------------------------------------------------------------------


async def load_signer(services: SiteServices, user_id: str) -> User:
    """The caller as a signer: a known, active user (a system actor or a deactivated user cannot sign)."""
    try:
        uid = UUID(user_id)
    except ValueError:
        raise SignerNotAllowed("only a signed-in user can sign", signer=user_id) from None
    user = (await services.repository.load(User, USER_STREAM, str(uid), uid)).aggregate
    if user is None or not user.active:
        raise SignerNotAllowed("only an active user can sign", signer=user_id)
    return user


async def compliance_for(services: SiteServices, site: Site, plugin_id: str) -> Compliance:
    """The aspects of the version active at the site, or of the installed version before activation."""
    active = site.compliance_of(plugin_id)
    if active is not None:
        return active
    plugin = await load_plugin(services, plugin_id)
    if plugin is None:
        raise PluginNotFound(f"plugin {plugin_id} is not installed", plugin_id=plugin_id)
    return plugin.manifest.compliance


async def record_signoff(cmd: RecordSignoff, ctx: CommandContext, services: SiteServices) -> CommandResult:
    """An electronic signature: the caller re-authenticates, must hold the aspect's role at the site,
    and signs the configuration hash (the active one unless named)."""
    loaded = await load(services, cmd.site_id, ctx)
    site = loaded.aggregate
    site.check_open()
    compliance = await compliance_for(services, site, cmd.plugin_id)
    check_aspect(compliance, cmd.plugin_id, cmd.aspect)
    configuration_hash = cmd.configuration_hash
    if configuration_hash is None and cmd.plugin_id in site.extensions:
        configuration_hash = site.extensions[cmd.plugin_id].configuration_hash
    if configuration_hash is None or not HASH.fullmatch(configuration_hash):
        raise SiteInvalid(
            "configuration_hash: name the configuration you approve (sha256:<64 hex digits>, as validation answers it)",
            field="configuration_hash",
        )
    signer = await load_signer(services, ctx.actor)
    if not cmd.password and not cmd.access_token:
        raise ReauthenticationFailed("signing requires your password or an access token issued less than 5 minutes ago")
    await services.reauthentication.confirm(ctx.actor, cmd.password, cmd.access_token)
    check_signer_role(signer.grants, compliance.aspect(cmd.aspect).role, cmd.site_id, cmd.aspect)
    signed_at = services.clock().astimezone(timezone.utc).isoformat()
    site.record_signoff(cmd.plugin_id, compliance, cmd.aspect, ctx.actor, signer.full_name or signer.email, cmd.notes,
                        configuration_hash, signed_at)
    return await save(services, loaded, ctx, "RecordSignoff")


HANDLERS = {
    CreateSite: create_site,
    RenameSite: rename_site,
    RetireSite: retire_site,
    ActivateExtension: activate_extension,
    ReconfigureExtension: reconfigure_extension,
    DeactivateExtension: deactivate_extension,
    RecordSignoff: record_signoff,
}
