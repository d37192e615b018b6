"""One site's history for the compliance report tests, with the three points they look at.

    create the site; Ann signs `esig` and Carl `audit` of erp's first configuration H1; Bob activates erp
    -- point 1: erp 1.0 at hash H1, fully signed (esig by Ann, audit by Carl)
    Bob activates mes (no aspects); Bob reconfigures erp (H2): both signoffs of H1 are invalidated;
    Ann signs `esig` of H2
    -- point 2: erp at H2, esig signed by Ann, audit pending; mes active
    Carl signs `audit` of H2; Bob deactivates mes
    -- point 3: erp at H2, fully signed again; mes gone

`World` tells it through the command handlers on the real event store (its own pool, in the test's
event loop); the e2e tests then read it through the app, which reads the same database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from cryptography.fernet import Fernet

from application.context import CommandContext
from application.sites.commands import (
    ActivateExtension, CreateSite, DeactivateExtension, ReconfigureExtension, RecordSignoff,
)
from application.sites.handlers import HANDLERS
from application.sites.proposals import SiteServices
from application.sites.validation import validate_activation
from domain.identity.user import User
from domain.plugins.manifest import parse_manifest
from domain.plugins.plugin import Plugin
from infrastructure.eventlog.as_of import StoreHistory
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.repository import AggregateRepository
from infrastructure.plugins.secrets import FernetCipher
from tests.unit.sites.fakes import InlineSandbox, PasswordTable

SCHEMA = {"type": "object", "properties": {"endpoint": {"type": "string"}, "token": {"type": "string", "secret": True}}}
ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved for production"},
                       {"name": "audit", "role": "quality-focal", "meaning": "Reviewed the audit trail"}],
           "distinct_signers": [["esig", "audit"]]}
FIRST = {"endpoint": "https://erp.example/v1", "token": "first-secret"}
SECOND = {"endpoint": "https://erp.example/v2", "token": "first-secret"}
PASSWORD = "correct-horse-battery"

Run = Callable[[Any, str], Awaitable[Any]]
MakeUser = Callable[[str, str, str], Awaitable[str]]
Validate = Callable[[str, str, dict[str, Any]], Awaitable[str]]  # site, plugin, configuration -> hash


@dataclass
class Point:
    position: int  # the last event of the site's stream at this point
    instant: datetime  # a moment after that event and before the next one


@dataclass
class Story:
    site_id: str
    erp: str
    mes: str
    ann: str = ""
    bob: str = ""
    carl: str = ""
    h1: str = ""
    h2: str = ""
    points: list[Point] = field(default_factory=list)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def mark(story: Story, result: Any) -> None:
    await asyncio.sleep(0.005)
    story.points.append(Point(result.position, datetime.now(timezone.utc)))
    await asyncio.sleep(0.005)


async def tell(run: Run, user: MakeUser, validate: Validate, erp: str, mes: str) -> Story:
    """Run the story at a new site (the plugins `erp`, with ASPECTS and SCHEMA, and `mes` are installed)."""
    story = Story(unique("plant"), erp, mes)
    await run(CreateSite(site_id=story.site_id, name="Plant <North> & \"Co\"", timezone="Europe/Paris"), "system")
    story.ann = await user("Ann Quality", "quality-focal", story.site_id)
    story.carl = await user("Carl Review", "quality-focal", story.site_id)
    story.bob = await user("Bob Admin", "site-admin", story.site_id)
    story.h1 = await validate(story.site_id, erp, FIRST)
    await run(RecordSignoff(site_id=story.site_id, plugin_id=erp, aspect="esig", configuration_hash=story.h1,
                            notes="=HYPERLINK(\"http://evil\")", password=PASSWORD), story.ann)
    await run(RecordSignoff(site_id=story.site_id, plugin_id=erp, aspect="audit", configuration_hash=story.h1,
                            notes="<script>alert(1)</script>", password=PASSWORD), story.carl)
    await mark(story, await run(ActivateExtension(site_id=story.site_id, plugin_id=erp, configuration=FIRST,
                                                  reason="go live"), story.bob))
    await run(ActivateExtension(site_id=story.site_id, plugin_id=mes), story.bob)
    story.h2 = await validate(story.site_id, erp, SECOND)
    await run(ReconfigureExtension(site_id=story.site_id, plugin_id=erp, configuration=SECOND, reason="v2 endpoint"),
              story.bob)
    await mark(story, await run(RecordSignoff(site_id=story.site_id, plugin_id=erp, aspect="esig", password=PASSWORD),
                                story.ann))
    await run(RecordSignoff(site_id=story.site_id, plugin_id=erp, aspect="audit", password=PASSWORD, notes="checked"),
              story.carl)
    await mark(story, await run(DeactivateExtension(site_id=story.site_id, plugin_id=mes, reason="replaced"), story.bob))
    return story


class World:
    def __init__(self, store: EventStore, pool: Any) -> None:
        self.store = store
        self.repository = AggregateRepository(store)
        self.reauth = PasswordTable()
        self.sites = SiteServices(self.repository, FernetCipher(Fernet.generate_key()), InlineSandbox(), self.reauth,
                                  b"k" * 32)
        self.history = StoreHistory(pool)

    async def run(self, command: Any, actor: str) -> Any:
        return await HANDLERS[type(command)](command, CommandContext(actor=actor), self.sites)

    async def user(self, name: str, role: str, site_id: str) -> str:
        user = User(email=f"{unique('u')}@example.com", full_name=name, password_hash="x", active=True)
        user.grant_role(role, site_id)
        fresh = self.repository.new("user", str(user.id))
        fresh.aggregate = user
        await self.repository.save(fresh, {})
        self.reauth.passwords[str(user.id)] = PASSWORD
        return str(user.id)

    async def install(self, plugin_id: str, **manifest: Any) -> None:
        raw = parse_manifest({"id": plugin_id, "name": plugin_id, "version": "1.0", **manifest}).to_dict()
        fresh = self.repository.new("plugin", plugin_id)
        fresh.aggregate = Plugin(plugin_id=plugin_id, manifest=raw, source={}, config={}, enabled=True)
        await self.repository.save(fresh, {})

    async def validate(self, site_id: str, plugin_id: str, configuration: dict[str, Any]) -> str:
        return (await validate_activation(self.sites, site_id, plugin_id, None, configuration)).configuration_hash

    async def story(self) -> Story:
        erp, mes = unique("erp"), unique("mes")
        await self.install(erp, config_schema=SCHEMA, compliance=ASPECTS, capabilities=["erp-integration"])
        await self.install(mes)
        return await tell(self.run, self.user, self.validate, erp, mes)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    store = EventStore(pool)
    await store.start()
    yield World(store, pool)
    await store.stop()
    await pool.close()
