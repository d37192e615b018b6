"""The sites command handlers against an in-memory repository (no I/O): one class per command."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from application.commands import UninstallPlugin
from application.context import CommandContext
from application.plugins.handlers import HANDLERS as PLUGIN_HANDLERS
from application.plugins.handlers import PluginServices
from application.sites.batch import ActivateAtSites, DeactivateAtSites, run_batch
from application.sites.commands import (
    ActivateExtension, CreateSite, DeactivateExtension, ReconfigureExtension, RecordSignoff, RenameSite, RetireSite,
)
from application.sites.handlers import HANDLERS
from application.sites.proposals import SiteServices
from application.sites.validation import validate_activation, validate_combination
from domain.identity.access import BUILTIN_ROLES, Grant, resolve_access
from domain.identity.user import User
from domain.plugins.manifest import parse_manifest
from domain.plugins.plugin import Plugin
from domain.plugins.errors import ConfigurationInvalid
from domain.sites.config_hash import configuration_hash
from domain.sites.errors import (
    ActivationRefused, ForceNotAllowed, HasActiveDependents, PluginActiveAtSites, ReauthenticationFailed,
    SameSignerRefused, SignerLacksRole, SignerNotAllowed, SiteExists, SiteInvalid, SiteNotFound,
)
from domain.sites.site import Site, site_uuid
from tests.unit.sites.fakes import InlineSandbox, MemoryRepository, PasswordTable, ReversibleCipher

KEY = b"h" * 32
SITE = "plant-1"
NOW = datetime(2024, 11, 1, 10, 0, tzinfo=timezone.utc)
SCHEMA = {
    "type": "object",
    "properties": {"endpoint": {"type": "string", "pattern": "^https://"}, "token": {"type": "string", "secret": True}},
    "required": ["endpoint"],
}
ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved for production"},
                       {"name": "audit", "role": "compliance-officer", "meaning": "Reviewed"}],
           "distinct_signers": [["esig", "audit"]]}
CONFIG = {"endpoint": "https://sap.example", "token": "s3cret"}


class World:
    """A repository with plugins and users in it, and the services the handlers take."""

    def __init__(self) -> None:
        self.repository = MemoryRepository()
        self.reauth = PasswordTable()
        self.services = SiteServices(self.repository, ReversibleCipher(), InlineSandbox(), self.reauth, KEY, lambda: NOW)

    async def run(self, command: Any, ctx: CommandContext | None = None):
        return await HANDLERS[type(command)](command, ctx or CommandContext(), self.services)

    async def install(self, plugin_id: str, version: str = "1.0", enabled: bool = True, **manifest: Any) -> None:
        raw = parse_manifest({"id": plugin_id, "name": plugin_id, "version": version, **manifest}).to_dict()
        loaded = await self.repository.load(Plugin, "plugin", plugin_id, Plugin.create_id(plugin_id))
        if loaded.aggregate is None:
            loaded = self.repository.new("plugin", plugin_id)
            loaded.aggregate = Plugin(plugin_id=plugin_id, manifest=raw, source={}, config={}, enabled=enabled)
        if not enabled:
            loaded.aggregate.disable("kill switch")
        await self.repository.save(loaded, {})

    async def user(self, name: str, *grants: tuple[str, str | None], password: str = "pw") -> str:
        user = User(email=f"{name.lower()}@example.com", full_name=name, password_hash="x", active=True)
        for role, site in grants:
            user.grant_role(role, site)
        fresh = self.repository.new("user", str(user.id))
        fresh.aggregate = user
        await self.repository.save(fresh, {})
        self.reauth.passwords[str(user.id)] = password
        return str(user.id)

    async def site(self, site_id: str = SITE) -> Site:
        return (await self.repository.load(Site, "site", site_id, site_uuid(site_id))).aggregate

    async def sign(self, user_id: str, aspect: str, plugin_id: str = "sap", configuration: dict | None = None,
                   password: str = "pw", site_id: str = SITE):
        validation = await validate_activation(self.services, site_id, plugin_id, None, configuration or CONFIG)
        return await self.run(
            RecordSignoff(site_id=site_id, plugin_id=plugin_id, aspect=aspect,
                          configuration_hash=validation.configuration_hash, notes="checked", password=password),
            CommandContext(actor=user_id),
        )


def as_holder(*grants: tuple[str, str | None], actor: str = "caller") -> CommandContext:
    roles = {name: permissions for name, (_, permissions) in BUILTIN_ROLES.items()}
    return CommandContext(actor=actor, access=resolve_access(actor, [Grant(r, s) for r, s in grants], roles))


@pytest.fixture
async def world() -> World:
    world = World()
    await world.run(CreateSite(site_id=SITE, name="Plant 1", timezone="Europe/Paris"))
    await world.install("sap", config_schema=SCHEMA, compliance=ASPECTS, capabilities=["erp"],
                        exclusive_capabilities=["erp"])
    return world


async def signed_by_both(world: World, configuration: dict | None = None) -> tuple[str, str]:
    ann = await world.user("Ann", ("quality-focal", SITE))
    bob = await world.user("Bob", ("compliance-officer", None))
    await world.sign(ann, "esig", configuration=configuration)
    await world.sign(bob, "audit", configuration=configuration)
    return ann, bob


class TestCreateSite:
    async def test_records_created_saved_with_the_site_id(self, world: World) -> None:
        assert world.repository.event_types("site:plant-1") == ["Created"]
        assert world.repository.sites["site:plant-1"] == ["plant-1"]

    async def test_a_second_site_with_that_id_is_refused(self, world: World) -> None:
        with pytest.raises(SiteExists):
            await world.run(CreateSite(site_id=SITE, name="Again"))

    async def test_rename_and_retire(self, world: World) -> None:
        await world.run(RenameSite(site_id=SITE, name="Plant One"))
        await world.run(RetireSite(site_id=SITE, reason="closed"))

        assert world.repository.event_types("site:plant-1") == ["Created", "Renamed", "Retired"]

    async def test_an_unknown_site_is_not_found(self, world: World) -> None:
        with pytest.raises(SiteNotFound):
            await world.run(RenameSite(site_id="nowhere", name="X"))


class TestValidate:
    async def test_lists_every_problem_and_records_nothing(self, world: World) -> None:
        validation = await validate_activation(world.services, SITE, "sap", None, {"endpoint": "ftp://x"})

        assert [(p.code, p.field) for p in validation.problems if p.severity == "error"] == [
            ("CONFIGURATION_INVALID", "configuration.endpoint"), ("SIGNOFF_MISSING", "signoffs.esig"),
            ("SIGNOFF_MISSING", "signoffs.audit"),
        ]
        assert not validation.valid and validation.configuration_hash == ""
        assert world.repository.event_types("site:plant-1") == ["Created"]

    async def test_answers_the_hash_a_signer_approves(self, world: World) -> None:
        validation = await validate_activation(world.services, SITE, "sap", None, CONFIG)

        assert validation.configuration_hash == configuration_hash(CONFIG, [("token",)], KEY)
        assert validation.missing_signoffs() == ["esig", "audit"]

    async def test_a_combination_lists_clashes_once_and_warns_of_signoffs(self, world: World) -> None:
        await world.install("oracle", capabilities=["erp"])

        validation = await validate_combination(world.services, SITE, [("sap", None), ("oracle", "1.0")])

        assert [(p.code, p.severity) for p in validation.problems] == [
            ("CAPABILITY_CLASH", "error"), ("COMPLIANCE_SIGNOFF_REQUIRED", "warning"),
            ("COMPLIANCE_SIGNOFF_REQUIRED", "warning"),
        ]


class TestActivateExtension:
    async def test_rejects_activation_without_signoffs_listing_them(self, world: World) -> None:
        with pytest.raises(ActivationRefused) as refused:
            await world.run(ActivateExtension(site_id=SITE, plugin_id="sap", configuration=CONFIG))

        assert [p["field"] for p in refused.value.details["problems"] if p["severity"] == "error"] == [
            "signoffs.esig", "signoffs.audit"]
        assert world.repository.event_types("site:plant-1") == ["Created"]

    async def test_activates_once_signed_sealing_secrets_and_adding_the_site_to_the_registry(self, world: World) -> None:
        await signed_by_both(world)

        await world.run(ActivateExtension(site_id=SITE, plugin_id="sap", configuration=CONFIG, reason="go live"))

        activated = world.repository.payloads("site:plant-1")[-1]
        assert world.repository.event_types("site:plant-1")[-1] == "ExtensionActivated"
        assert "s3cret" not in repr(activated)
        assert activated["configuration"]["endpoint"] == "https://sap.example"
        assert activated["configuration_hash"] == configuration_hash(CONFIG, [("token",)], KEY)
        assert len(activated["signoffs"]) == 2
        assert world.repository.event_types("plugin-sites:sap") == ["Opened", "SiteAdded"]
        assert world.repository.sites["plugin-sites:sap"] == [SITE, SITE]
        assert set(world.repository.sites["site:plant-1"]) == {SITE}

    async def test_a_plugin_that_is_not_installed_is_refused(self, world: World) -> None:
        with pytest.raises(ActivationRefused) as refused:
            await world.run(ActivateExtension(site_id=SITE, plugin_id="ghost"))

        assert [p["code"] for p in refused.value.details["problems"]] == ["PLUGIN_NOT_INSTALLED"]

    async def test_a_plugin_disabled_everywhere_cannot_be_activated(self, world: World) -> None:
        await world.install("mes", enabled=False)

        with pytest.raises(ActivationRefused) as refused:
            await world.run(ActivateExtension(site_id=SITE, plugin_id="mes"))

        assert [p["code"] for p in refused.value.details["problems"]] == ["PLUGIN_DISABLED"]

    async def test_a_dependency_disabled_everywhere_counts_as_inactive(self, world: World) -> None:
        await world.install("base")
        await world.install("mes", dependencies={"base": ">=1"})
        await world.run(ActivateExtension(site_id=SITE, plugin_id="base"))
        await world.install("base", enabled=False)

        with pytest.raises(ActivationRefused) as refused:
            await world.run(ActivateExtension(site_id=SITE, plugin_id="mes"))

        assert [p["code"] for p in refused.value.details["problems"]] == ["DEPENDENCY_INACTIVE"]


class TestRecordSignoff:
    async def test_records_printed_name_role_meaning_hash_and_utc_time(self, world: World) -> None:
        ann = await world.user("Ann", ("quality-focal", SITE))

        await world.sign(ann, "esig")

        signed = world.repository.payloads("site:plant-1")[-1]
        assert (signed["signer_id"], signed["signer_name"], signed["role"], signed["meaning"]) == (
            ann, "Ann", "quality-focal", "Approved for production")
        assert signed["signed_at"] == "2024-11-01T10:00:00+00:00"
        assert signed["configuration_hash"] == configuration_hash(CONFIG, [("token",)], KEY)
        assert world.reauth.asked == [ann]

    async def test_rejects_a_signer_holding_the_role_at_another_site_only(self, world: World) -> None:
        ann = await world.user("Ann", ("quality-focal", "plant-2"), ("viewer", SITE))

        with pytest.raises(SignerLacksRole):
            await world.sign(ann, "esig")

    async def test_rejects_a_wrong_password(self, world: World) -> None:
        ann = await world.user("Ann", ("quality-focal", SITE))

        with pytest.raises(ReauthenticationFailed):
            await world.sign(ann, "esig", password="guess")

    async def test_rejects_signing_without_re_authentication(self, world: World) -> None:
        ann = await world.user("Ann", ("quality-focal", SITE))

        with pytest.raises(ReauthenticationFailed):
            await world.run(RecordSignoff(site_id=SITE, plugin_id="sap", aspect="esig",
                                          configuration_hash="sha256:" + "0" * 64), CommandContext(actor=ann))

    async def test_the_system_cannot_sign(self, world: World) -> None:
        with pytest.raises(SignerNotAllowed):
            await world.run(RecordSignoff(site_id=SITE, plugin_id="sap", aspect="esig",
                                          configuration_hash="sha256:" + "0" * 64, password="pw"))

    async def test_before_activation_the_hash_must_be_named(self, world: World) -> None:
        ann = await world.user("Ann", ("quality-focal", SITE))

        with pytest.raises(SiteInvalid) as refused:
            await world.run(RecordSignoff(site_id=SITE, plugin_id="sap", aspect="esig", password="pw"),
                            CommandContext(actor=ann))

        assert refused.value.details["field"] == "configuration_hash"

    async def test_one_person_cannot_sign_both_aspects_needing_different_signers(self, world: World) -> None:
        ann = await world.user("Ann", ("quality-focal", SITE), ("compliance-officer", SITE))
        await world.sign(ann, "esig")

        with pytest.raises(SameSignerRefused):
            await world.sign(ann, "audit")


class TestReconfigureExtension:
    async def test_invalidates_signoffs_so_they_are_pending_again(self, world: World) -> None:
        await signed_by_both(world)
        await world.run(ActivateExtension(site_id=SITE, plugin_id="sap", configuration=CONFIG))

        await world.run(ReconfigureExtension(site_id=SITE, plugin_id="sap", reason="new endpoint",
                                             configuration={"endpoint": "https://sap2.example", "token": "********"}))

        types = world.repository.event_types("site:plant-1")
        assert types[-3:] == ["ExtensionReconfigured", "SignoffInvalidated", "SignoffInvalidated"]
        reconfigured = world.repository.payloads("site:plant-1")[-3]
        assert reconfigured["changed_keys"] == ["endpoint"]
        assert reconfigured["new_hash"] == configuration_hash({**CONFIG, "endpoint": "https://sap2.example"},
                                                               [("token",)], KEY)
        site = await world.site()
        assert site.signoffs_of("sap") == []

    async def test_a_masked_secret_sent_back_keeps_its_value_and_changes_nothing(self, world: World) -> None:
        await signed_by_both(world)
        await world.run(ActivateExtension(site_id=SITE, plugin_id="sap", configuration=CONFIG))

        await world.run(ReconfigureExtension(site_id=SITE, plugin_id="sap",
                                             configuration={"endpoint": "https://sap.example", "token": "********"}))

        assert world.repository.event_types("site:plant-1")[-1] == "ExtensionActivated"

    async def test_a_configuration_breaking_the_schema_is_refused_naming_the_field(self, world: World) -> None:
        await signed_by_both(world)
        await world.run(ActivateExtension(site_id=SITE, plugin_id="sap", configuration=CONFIG))

        with pytest.raises(ConfigurationInvalid) as refused:
            await world.run(ReconfigureExtension(site_id=SITE, plugin_id="sap", configuration={"endpoint": "ftp://x"}))

        assert refused.value.details["field"] == "configuration.endpoint"


class TestDeactivateExtension:
    @pytest.fixture
    async def with_dependent(self, world: World) -> World:
        await world.install("base")
        await world.install("procurement", dependencies={"base": ""})
        await world.run(ActivateExtension(site_id=SITE, plugin_id="base"))
        await world.run(ActivateExtension(site_id=SITE, plugin_id="procurement"))
        return world

    async def test_refused_while_an_active_dependent_exists(self, with_dependent: World) -> None:
        with pytest.raises(HasActiveDependents) as refused:
            await with_dependent.run(DeactivateExtension(site_id=SITE, plugin_id="base"))

        assert refused.value.details["dependents"] == ["procurement"]

    async def test_forcing_takes_extensions_force_at_the_site(self, with_dependent: World) -> None:
        with pytest.raises(ForceNotAllowed):
            await with_dependent.run(DeactivateExtension(site_id=SITE, plugin_id="base", force=True, reason="r"),
                                     as_holder(("site-admin", "plant-2"), ("quality-focal", SITE)))

    async def test_a_site_admin_forces_it_with_a_reason(self, with_dependent: World) -> None:
        await with_dependent.run(DeactivateExtension(site_id=SITE, plugin_id="base", force=True, reason="contract ended"),
                                 as_holder(("site-admin", SITE)))

        deactivated = with_dependent.repository.payloads("site:plant-1")[-1]
        assert (deactivated["forced"], deactivated["dependents"]) == (True, ["procurement"])
        assert with_dependent.repository.event_types("plugin-sites:base")[-1] == "SiteRemoved"


class TestUninstallPlugin:
    async def test_refused_while_a_site_has_it_active_then_allowed(self, world: World) -> None:
        await world.install("base")
        await world.run(ActivateExtension(site_id=SITE, plugin_id="base"))
        plugins = PluginServices(world.repository, ReversibleCipher(), None, "1.0.0", InlineSandbox())

        with pytest.raises(PluginActiveAtSites) as refused:
            await PLUGIN_HANDLERS[UninstallPlugin](UninstallPlugin(plugin_id="base"), CommandContext(), plugins)
        assert refused.value.details["sites"] == [SITE]

        await world.run(DeactivateExtension(site_id=SITE, plugin_id="base"))
        await PLUGIN_HANDLERS[UninstallPlugin](UninstallPlugin(plugin_id="base"), CommandContext(), plugins)
        assert world.repository.event_types("plugin:base")[-1] == "Uninstalled"
        assert world.repository.event_types("plugin-sites:base")[-1] == "Closed"


class TestBatch:
    async def test_each_site_has_its_own_outcome(self, world: World) -> None:
        await world.install("base")
        await world.run(CreateSite(site_id="plant-2", name="Plant 2"))
        await world.run(CreateSite(site_id="plant-3", name="Plant 3"))

        async def execute(command, ctx):
            return await world.run(command, ctx)

        ctx = as_holder(("site-admin", SITE), ("site-admin", "plant-2"), ("site-admin", "ghost"))
        outcomes = await run_batch(execute, ActivateAtSites(plugin_id="base", site_ids=[SITE, "plant-2", "ghost",
                                                                                          "plant-3", SITE]), ctx)

        assert [(o.site_id, o.ok, o.code) for o in outcomes] == [
            (SITE, True, None), ("plant-2", True, None), ("ghost", False, "SITE_NOT_FOUND"),
            ("plant-3", False, "FORBIDDEN"),
        ]
        assert world.repository.event_types("plugin-sites:base") == ["Opened", "SiteAdded", "SiteAdded"]

        outcomes = await run_batch(execute, DeactivateAtSites(plugin_id="base", site_ids=[SITE, "plant-2"]), ctx)
        assert all(o.ok for o in outcomes)


class TestTheBus:
    async def test_dispatches_site_commands_once_registered(self, world: World) -> None:
        from application.bus import Application

        plugins = PluginServices(world.repository, ReversibleCipher(), None, "1.0.0", InlineSandbox())
        app = Application(None, plugins, fingerprint_key=b"f" * 32, sites=world.services)

        result = await app.execute(CreateSite(site_id="plant-9", name="Plant 9"), CommandContext())

        assert result.stream_id == "site:plant-9"
