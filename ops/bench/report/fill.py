"""A site with a long history for `charter bench report`, written through the Site aggregate itself
(its checks run; no command bus, no sandbox): activations, reconfigurations that invalidate signoffs,
signoffs and deactivations, round after round, appended in chunks."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from domain.identity.user import User
from domain.plugins.site_rules import Compliance, ComplianceAspect
from domain.sites.extensions import ExtensionRules
from domain.sites.policies import Candidate
from domain.sites.site import STREAM_TYPE, Site, site_uuid
from infrastructure.eventlog.eventstore import EventStore, create_pool
from infrastructure.eventlog.repository import AggregateRepository

SITE = "bench-site"
PLUGINS = 20
CHUNK = 500  # events per append
RULES = ExtensionRules(compliance=Compliance(aspects=[
    ComplianceAspect(name="esig", role="quality-focal", meaning="Approved for production"),
    ComplianceAspect(name="audit", role="quality-focal", meaning="Reviewed the audit trail"),
]))


def config_hash(plugin_id: str, generation: int) -> str:
    return "sha256:" + hashlib.sha256(f"{plugin_id}:{generation}".encode()).hexdigest()


def step(site: Site, plugin_id: str, generation: int, signer: str) -> None:
    """One move of a plugin's life at the site: sign and activate, reconfigure and sign again, or deactivate."""
    now = datetime.now(timezone.utc).isoformat()
    new = config_hash(plugin_id, generation)

    def sign(h: str) -> None:
        for aspect in ("esig", "audit"):
            site.record_signoff(plugin_id, RULES.compliance, aspect, signer, "Bench Signer", "", h, now)

    if plugin_id not in site.extensions:
        sign(new)
        site.activate(Candidate(plugin_id, "1.0", "1.0", True, RULES, new), {"generation": generation}, reason="bench")
    elif generation % 5 == 4:
        site.deactivate(plugin_id, "bench")
    else:
        site.reconfigure(plugin_id, {"generation": generation}, new, ["generation"], "bench")
        sign(new)


async def fill(dsn: str, events: int, tick) -> dict[str, int]:
    """Write the site until its stream holds at least `events` events; answers the counts written."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    store = EventStore(pool)
    repository = AggregateRepository(store)
    try:
        user = User(email="signer@bench.example", full_name="Bench Signer", password_hash="x", active=True)
        fresh = repository.new("user", str(user.id))
        fresh.aggregate = user
        await repository.save(fresh, {})
        actor = {"actor": str(user.id), "command": "bench"}
        loaded = repository.new(STREAM_TYPE, SITE)
        loaded.aggregate = Site.create(SITE, "Bench plant", "Europe/Paris")
        written, generation = 0, 0
        while written < events:
            site = loaded.aggregate
            while len(site.pending_events) < CHUNK and written + len(site.pending_events) < events:
                step(site, f"ext-{generation % PLUGINS:02d}", generation, str(user.id))
                generation += 1
            written += len(site.pending_events)
            await repository.save(loaded, actor, site_id=SITE)
            loaded = await repository.load(Site, STREAM_TYPE, SITE, site_uuid(SITE))
            tick(written)
        return {"site_events": written, "user_events": 1}
    finally:
        await store.stop()
        await pool.close()
