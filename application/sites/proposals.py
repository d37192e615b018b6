"""From a request to a policy's input: the plugin as its stream has it, the configuration checked against
the plugin version's JSON Schema and sealed exactly as plugin configurations are, and its hash.

Used alike by the activation command and by the validation queries (`validate_activation`,
`validate_combination`), so `POST .../validate` answers what activation would decide.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec

from application.ports import Sandbox, SecretCipher
from application.unit import Repository
from domain.plugins.configuration import Location, map_locations, map_sealed, prepare_config
from domain.plugins.errors import ConfigurationInvalid
from domain.plugins.manifest import Manifest
from domain.plugins.plugin import STREAM_TYPE as PLUGIN_STREAM
from domain.plugins.plugin import Plugin, plugin_uuid
from domain.sites.config_hash import configuration_hash
from domain.sites.extensions import ExtensionRules
from domain.sites.policies import Candidate
from application.sites.ports import Reauthentication


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class SiteServices:
    repository: Repository
    cipher: SecretCipher
    sandbox: Sandbox
    reauthentication: Reauthentication
    hash_key: bytes  # the configuration-hash key (secrets are hashed with it, domain/sites/config_hash.py)
    clock: Callable[[], datetime] = utcnow


@dataclass(frozen=True)
class Sealed:
    """A configuration checked and sealed: `clear` (never stored), `stored` (secrets sealed), its hash."""

    clear: dict[str, Any]
    stored: dict[str, Any]
    configuration_hash: str


@dataclass(frozen=True)
class Proposal:
    candidate: Candidate
    sealed: Sealed | None  # None when the configuration broke the schema (see candidate.schema_errors)
    disabled: frozenset[str]  # the candidate's dependencies disabled everywhere


def over_limit(reason: str) -> ConfigurationInvalid:
    return ConfigurationInvalid(
        f"configuration could not be validated against the plugin's schema: it {reason}", field="configuration"
    )


def renamed(field: str) -> str:
    """Plugin configuration errors name `config.x`; a site's request calls it `configuration.x`."""
    return "configuration" + field[len("config"):] if field == "config" or field.startswith("config.") else field


def configuration_invalid(exc: ConfigurationInvalid) -> ConfigurationInvalid:
    """The same refusal, with its fields named as the site request names them."""
    violations = exc.details.get("violations") or [{"field": exc.details.get("field", "config"), "message": exc.message}]
    violations = [{"field": renamed(v["field"]), "message": v["message"]} for v in violations]
    first = violations[0]
    message = exc.message.replace(exc.details.get("field", "\0"), first["field"], 1)
    return ConfigurationInvalid(message, field=first["field"], violations=violations)


async def load_plugin(services: SiteServices, plugin_id: str) -> Plugin | None:
    loaded = await services.repository.load(Plugin, PLUGIN_STREAM, plugin_id, plugin_uuid(plugin_id))
    return loaded.aggregate if loaded.aggregate is not None and loaded.aggregate.installed else None


def unseal(services: SiteServices, stored: dict[str, Any]) -> dict[str, Any]:
    return map_sealed(stored, lambda _path, value: services.cipher.unseal(value))


async def seal(
    services: SiteServices, schema: dict[str, Any], new: dict[str, Any], old: dict[str, Any] | None = None,
    classified: Collection[Location] = (),
) -> Sealed:
    """`new` checked against `schema` (in the sandbox: the schema is the plugin author's) and sealed where
    the schema marks a secret or a value was sealed before; raises ConfigurationInvalid (fields named
    `configuration.x`, messages never quoting a secret)."""
    old = old or {}
    try:
        if not schema and not classified:
            clear, secret = prepare_config(schema, new, old)
        else:
            clear, secret = await services.sandbox.run(
                prepare_config, schema, new, old, sorted(classified, key=str), over_limit=over_limit
            )
    except ConfigurationInvalid as exc:
        raise configuration_invalid(exc) from None
    stored = map_locations(clear, secret, lambda _path, value: services.cipher.seal(value))
    return Sealed(clear, stored, configuration_hash(clear, secret, services.hash_key))


def manifest_of(plugin: Plugin, version: str) -> Manifest | None:
    """The manifest of `version` of an installed plugin (its current one, or one installed before)."""
    if version == plugin.current_version:
        return plugin.manifest
    for known in reversed(plugin.versions):
        if known["version"] == version:
            return msgspec.convert(known["manifest"], Manifest)
    return None


async def disabled_dependencies(services: SiteServices, rules: ExtensionRules) -> frozenset[str]:
    """The dependencies whose plugin is disabled everywhere (kill switch) or no longer installed: both
    count as inactive for the dependent."""
    off = set()
    for dep_id in rules.dependencies:
        plugin = await load_plugin(services, dep_id)
        if plugin is None or plugin.status == "disabled":
            off.add(dep_id)
    return frozenset(off)


async def propose(
    services: SiteServices, plugin_id: str, version: str | None, configuration: dict[str, Any]
) -> Proposal:
    """The activation candidate for `plugin_id` (at `version`, default the installed one)."""
    plugin = await load_plugin(services, plugin_id)
    if plugin is None:
        candidate = Candidate(plugin_id, version or "", None, False, ExtensionRules())
        return Proposal(candidate, None, frozenset())
    version = version or plugin.current_version
    manifest = plugin.manifest
    rules = ExtensionRules.of(manifest)
    sealed: Sealed | None = None
    schema_errors: tuple[dict[str, str], ...] = ()
    try:
        sealed = await seal(services, manifest.config_schema, configuration)
    except ConfigurationInvalid as exc:
        schema_errors = tuple(exc.details["violations"])
    candidate = Candidate(
        plugin_id, version, plugin.current_version, plugin.status != "disabled", rules,
        sealed.configuration_hash if sealed else "", schema_errors,
    )
    return Proposal(candidate, sealed, await disabled_dependencies(services, rules))
