"""Sites against the real event store: every site event (and the activation registry's) is stored with
the site's id, no secret reaches the log in clear, the site replays from its stream, and an uninstall
racing an activation of the same plugin lets exactly one of them through."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet

from application.commands import UninstallPlugin
from application.context import CommandContext
from application.plugins.handlers import HANDLERS as PLUGIN_HANDLERS
from application.plugins.handlers import PluginServices
from application.sites.commands import ActivateExtension, CreateSite, RecordSignoff
from application.sites.handlers import HANDLERS
from application.sites.proposals import SiteServices
from application.sites.validation import validate_activation
from domain.identity.user import User
from domain.plugins.manifest import parse_manifest
from domain.plugins.plugin import Plugin
from domain.sites.site import Site, site_uuid
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.plugins.secrets import FernetCipher
from tests.unit.sites.fakes import InlineSandbox, PasswordTable

SCHEMA = {"type": "object", "properties": {"token": {"type": "string", "secret": True}}}
ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved"}]}


class NoDependents:
    async def dependents_of(self, plugin_id: str) -> list[str]:
        return []


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[tuple[SiteServices, PluginServices, EventStore]]:
    pool = await create_pool(database_url)
    store = EventStore(pool)
    await store.start()
    repository = AggregateRepository(store)
    cipher = FernetCipher(Fernet.generate_key())
    sites = SiteServices(repository, cipher, InlineSandbox(), PasswordTable(), b"k" * 32)
    plugins = PluginServices(repository, NoDependents(), cipher, None, "1.0.0", InlineSandbox())
    yield sites, plugins, store
    await store.stop()
    await pool.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def install(services: SiteServices, plugin_id: str, **manifest) -> None:
    raw = parse_manifest({"id": plugin_id, "name": plugin_id, "version": "1.0", **manifest}).to_dict()
    fresh = services.repository.new("plugin", plugin_id)
    fresh.aggregate = Plugin(plugin_id=plugin_id, manifest=raw, source={}, config={}, enabled=True)
    await services.repository.save(fresh, {})


async def signer(services: SiteServices, site_id: str) -> str:
    user = User(email=f"{unique('ann')}@example.com", full_name="Ann", password_hash="x", active=True)
    user.grant_role("quality-focal", site_id)
    fresh = services.repository.new("user", str(user.id))
    fresh.aggregate = user
    await services.repository.save(fresh, {})
    services.reauthentication.passwords[str(user.id)] = "pw"
    return str(user.id)


async def test_site_events_are_stored_with_the_site_id_and_without_secrets(world) -> None:
    sites, _, store = world
    site_id, plugin_id = unique("plant"), unique("erp")
    await install(sites, plugin_id, config_schema=SCHEMA, compliance=ASPECTS)
    run = lambda cmd, ctx=CommandContext(): HANDLERS[type(cmd)](cmd, ctx, sites)  # noqa: E731
    await run(CreateSite(site_id=site_id, name="Plant", timezone="America/Chicago", metadata={"region": "na"}))
    configuration = {"token": "very-secret-value"}
    validation = await validate_activation(sites, site_id, plugin_id, None, configuration)
    ann = await signer(sites, site_id)
    await run(RecordSignoff(site_id=site_id, plugin_id=plugin_id, aspect="esig",
                            configuration_hash=validation.configuration_hash, password="pw"), CommandContext(actor=ann))

    await run(ActivateExtension(site_id=site_id, plugin_id=plugin_id, configuration=configuration))

    site_events = await store.read_stream(f"site:{site_id}")
    registry = await store.read_stream(f"plugin-sites:{plugin_id}")
    assert [e.event_type for e in site_events] == ["Site.Created", "Site.SignoffRecorded", "Site.ExtensionActivated"]
    assert [e.event_type for e in registry] == ["PluginActivations.Opened", "PluginActivations.SiteAdded"]
    assert {e.site_id for e in [*site_events, *registry]} == {site_id}
    assert all(e.payload["site_id"] == site_id for e in site_events)
    assert "very-secret-value" not in repr([e.payload for e in site_events])
    site = (await sites.repository.load(Site, "site", site_id, site_uuid(site_id))).aggregate
    assert site.extensions[plugin_id].configuration_hash == validation.configuration_hash
    assert [s.aspect for s in site.signoffs_of(plugin_id, validation.configuration_hash)] == ["esig"]


async def test_an_uninstall_racing_an_activation_lets_exactly_one_through(world) -> None:
    sites, plugins, store = world
    for _ in range(5):
        site_id, plugin_id = unique("plant"), unique("mes")
        await install(sites, plugin_id)
        await HANDLERS[CreateSite](CreateSite(site_id=site_id, name="Plant"), CommandContext(), sites)

        outcomes = await asyncio.gather(
            HANDLERS[ActivateExtension](ActivateExtension(site_id=site_id, plugin_id=plugin_id), CommandContext(), sites),
            PLUGIN_HANDLERS[UninstallPlugin](UninstallPlugin(plugin_id=plugin_id), CommandContext(), plugins),
            return_exceptions=True,
        )

        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1, outcomes
        active = [e.event_type for e in await store.read_stream(f"site:{site_id}")][-1] == "Site.ExtensionActivated"
        uninstalled = [e.event_type for e in await store.read_stream(f"plugin:{plugin_id}")][-1] == "Plugin.Uninstalled"
        assert active != uninstalled
