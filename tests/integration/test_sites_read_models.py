"""The `sites` read model against the real event store: commands run through the application bus, the
projector folds the log, and the queries answer what HTTP will show: sites (retired ones on request),
features with masked configurations, capability providers, site status by the domain's policies,
signoffs given and pending (pending again after a reconfiguration), pending signoffs per user, audit
trails in order; and a rebuild from the log gives the same rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from application.commands import DisablePlugin, InstallPlugin
from application.context import CommandContext
from application.identity.handlers import CreateRole, GrantRole, RegisterUser
from application.sites.commands import (
    ActivateExtension, CreateSite, DeactivateExtension, ReconfigureExtension, RecordSignoff, RetireSite,
)
from application.sites.validation import validate_activation
from domain.identity.access import Grant
from infrastructure.eventlog.projector import apply_batch, connect, ensure_projection
from infrastructure.eventlog.rebuild import rebuild
from infrastructure.settings import Settings
from interfaces.runtime import Runtime, start_runtime, stop_runtime
from projections.sites.projection import SCHEMA, SitesProjection
from projections.sites.queries import SiteQueries

PASSWORD = "correct horse battery staple"
SECRET = "token-that-must-never-show"
SCHEMA_WITH_SECRET = {
    "type": "object",
    "properties": {"token": {"type": "string", "secret": True}, "level": {"type": "integer"}},
}
ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved for production"}]}
TABLES = {
    "sites": "site_id", "site_extensions": "site_id, plugin_id", "signoffs": "signoff_id",
    "plugin_switches": "plugin_id", "audit_trail": "site_id, seq",
}


@pytest.fixture
async def runtime(fresh_database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=fresh_database_url, run_projectors=False, data_dir=tmp_path,
        secret_key=Fernet.generate_key().decode(),
    )  # fmt: skip
    started = await start_runtime(settings)
    yield started
    await stop_runtime(started)


async def project(dsn: str) -> None:
    """Run the sites projector until it has folded every committed event."""
    projection = SitesProjection()
    conn = await connect(dsn)
    try:
        await ensure_projection(conn, projection)
        await conn.execute(f'SET search_path TO "{SCHEMA}", public')
        while await apply_batch(conn, projection, 7):  # small batches: many batches over one story
            pass
    finally:
        await conn.close()


async def read_model(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    return {t: [dict(r) for r in await pool.fetch(f"SELECT * FROM {SCHEMA}.{t} ORDER BY {o}")] for t, o in TABLES.items()}


class Story:
    """Two sites, two plugins (one depending on the other, with a compliance aspect and a secret), two
    signers each holding the signing role at one site."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        tag = uuid.uuid4().hex[:6]
        self.site, self.other = f"plant-{tag}", f"depot-{tag}"
        self.base, self.erp = f"base-{tag}", f"erp-{tag}"
        self.ann = self.bob = ""

    async def run(self, command: Any, actor: str = "admin") -> Any:
        return await self.runtime.application.execute(command, CommandContext(actor=actor, request_id="sites"))

    async def user(self, name: str, site_id: str) -> str:
        result = await self.run(RegisterUser(email=f"{name}-{self.site}@example.org", password=PASSWORD, full_name=name))
        user_id = result.stream_id.split(":", 1)[1]
        await self.run(GrantRole(user_id=user_id, role="quality-focal", site_id=site_id))
        return user_id

    async def install(self, plugin_id: str, **manifest: Any) -> None:
        body = {"id": plugin_id, "name": plugin_id, "version": "1.0.0", **manifest}
        await self.run(InstallPlugin(manifest=body, source={"kind": "test"}, auto_enable=True))

    async def hash_of(self, plugin_id: str, configuration: dict[str, Any]) -> str:
        validation = await validate_activation(self.runtime.sites, self.site, plugin_id, None, configuration)
        return validation.configuration_hash

    async def begin(self) -> None:
        """Both sites, the signers, both plugins; base active; erp signed by Ann, then activated."""
        await self.run(CreateSite(site_id=self.site, name="Plant", timezone="Europe/Paris", metadata={"region": "eu"}))
        await self.run(CreateSite(site_id=self.other, name="Depot"))
        await self.run(CreateRole(name="quality-focal", permissions=["plugins:read"]))
        self.ann, self.bob = await self.user("Ann", self.site), await self.user("Bob", self.other)
        await self.install(self.base, capabilities=["mes-core"])
        await self.install(
            self.erp, capabilities=["erp-integration"], exclusive_capabilities=["erp-integration"],
            dependencies={self.base: ">=1.0"}, compliance=ASPECTS, config_schema=SCHEMA_WITH_SECRET,
        )  # fmt: skip
        await self.run(ActivateExtension(site_id=self.site, plugin_id=self.base, reason="first"))
        configuration = {"token": SECRET, "level": 1}
        await self.run(RecordSignoff(site_id=self.site, plugin_id=self.erp, aspect="esig", notes="checked",
                                     configuration_hash=await self.hash_of(self.erp, configuration), password=PASSWORD),
                       actor=self.ann)  # fmt: skip
        await self.run(ActivateExtension(site_id=self.site, plugin_id=self.erp, configuration=configuration))


@pytest.fixture
async def story(runtime: Runtime) -> Story:
    told = Story(runtime)
    await told.begin()
    await project(runtime.settings.database_url)
    return told


async def test_sites_are_listed_by_id_filtered_to_the_callers_sites_retired_ones_on_request(runtime: Runtime, story: Story) -> None:
    queries = SiteQueries(runtime.pool)
    await story.run(RetireSite(site_id=story.other, reason="closed"))
    await project(runtime.settings.database_url)

    total, active = await queries.list_sites(None, 0, 10)
    _, every = await queries.list_sites(None, 0, 10, include_retired=True)
    mine = await queries.list_sites({story.other}, 0, 10, include_retired=True)
    site = await queries.get_site(story.site)

    assert (total, [s["site_id"] for s in active]) == (1, [story.site])
    assert [s["site_id"] for s in every] == sorted([story.site, story.other])
    assert (mine[0], mine[1][0]["status"], mine[1][0]["retire_reason"]) == (1, "retired", "closed")
    assert {k: site[k] for k in ("site_id", "name", "timezone", "metadata", "status", "active_extensions")} == {
        "site_id": story.site, "name": "Plant", "timezone": "Europe/Paris", "metadata": {"region": "eu"},
        "status": "active", "active_extensions": 2,
    }
    assert isinstance(site["created_at"], str) and await queries.get_site("nowhere") is None


async def test_features_show_the_active_set_with_masked_configuration_and_signing_state(runtime: Runtime, story: Story) -> None:
    features = await SiteQueries(runtime.pool).features(story.site)

    assert [f["plugin_id"] for f in features] == sorted([story.base, story.erp])
    erp = next(f for f in features if f["plugin_id"] == story.erp)
    assert erp["configuration"] == {"token": "********", "level": 1}
    assert erp["configuration_hash"].startswith("sha256:") and erp["version"] == "1.0.0"
    assert (erp["capabilities"], erp["activated_by"], erp["is_fully_signed"], erp["pending_aspects"]) == (
        ["erp-integration"], "admin", True, [],
    )
    assert await SiteQueries(runtime.pool).features(story.other) == []


async def test_no_secret_reaches_the_read_model_in_clear_or_sealed(runtime: Runtime, story: Story) -> None:
    await story.run(ReconfigureExtension(site_id=story.site, plugin_id=story.erp, configuration={"token": "rotated-x", "level": 2}))
    await project(runtime.settings.database_url)
    sealed = await runtime.pool.fetchval(
        "SELECT payload->'configuration'->'token'->>'$sealed' FROM events WHERE event_type = 'Site.ExtensionActivated'"
        " AND payload->>'plugin_id' = $1", story.erp,
    )  # fmt: skip

    stored = repr(await read_model(runtime.pool))

    assert sealed and sealed not in stored and "$sealed" not in stored
    assert SECRET not in stored and "rotated-x" not in stored


async def test_capability_providers_name_the_extension_and_whether_the_capability_is_exclusive(runtime: Runtime, story: Story) -> None:
    queries = SiteQueries(runtime.pool)

    providers = await queries.capability_providers(story.site, "erp-integration")

    assert [(p["plugin_id"], p["version"], p["exclusive"], p["enabled"]) for p in providers] == [
        (story.erp, "1.0.0", True, True)
    ]
    assert await queries.capability_providers(story.other, "erp-integration") == []
    assert await queries.capability_providers(story.site, "nothing") == []


async def test_a_reconfiguration_leaves_the_signoffs_pending_again(runtime: Runtime, story: Story) -> None:
    queries = SiteQueries(runtime.pool)
    before = await queries.signoffs(story.site, story.erp)
    ann_grants, bob_grants = [Grant("quality-focal", story.site)], [Grant("quality-focal", story.other)]
    assert await queries.pending_for_user(story.ann, ann_grants) == []

    await story.run(ReconfigureExtension(site_id=story.site, plugin_id=story.erp, configuration={"token": "********", "level": 5},
                                         reason="tuning"))
    await project(runtime.settings.database_url)
    after = await queries.signoffs(story.site, story.erp)

    assert before["is_fully_signed"] and before["pending"] == []
    (given,) = before["given"]
    assert (given["aspect"], given["signer_id"], given["signer_name"], given["role"], given["notes"]) == (
        "esig", story.ann, "Ann", "quality-focal", "checked",
    )
    assert given["configuration_hash"] == before["configuration_hash"] and given["approves_current"]
    assert not after["is_fully_signed"] and after["configuration_hash"] != before["configuration_hash"]
    assert after["pending"] == [{"aspect": "esig", "required_role": "quality-focal", "meaning": "Approved for production"}]
    assert [(g["invalidated"], g["approves_current"]) for g in after["given"]] == [(True, False)]
    assert [f["pending_aspects"] for f in await queries.features(story.site) if f["plugin_id"] == story.erp] == [["esig"]]
    assert await queries.pending_for_user(story.ann, ann_grants) == [{
        "site_id": story.site, "plugin_id": story.erp, "version": "1.0.0", "aspect": "esig", "role": "quality-focal",
        "meaning": "Approved for production", "configuration_hash": after["configuration_hash"],
    }]  # fmt: skip
    assert await queries.pending_for_user(story.bob, bob_grants) == []  # the role at another site does not count
    assert len(await queries.pending_for_user(story.bob, [Grant("quality-focal")])) == 1  # held everywhere
    base = await queries.signoffs(story.site, story.base)  # active, no aspect: nothing to sign
    assert (base["given"], base["pending"], base["is_fully_signed"]) == ([], [], True)
    assert await queries.signoffs(story.other, story.erp) is None  # not active there, never signed
    status = await queries.status(story.site)
    assert (status["unsigned_compliance"], [a["plugin_id"] for a in status["requires_attention"]]) == (1, [story.erp])


async def test_status_counts_by_the_domain_policies_with_the_kill_switch(runtime: Runtime, story: Story) -> None:
    queries = SiteQueries(runtime.pool)
    clean = await queries.status(story.site)

    await story.run(DisablePlugin(plugin_id=story.base, reason="incident"))
    await project(runtime.settings.database_url)
    killed = await queries.status(story.site)

    assert {k: clean[k] for k in ("active", "valid", "invalid", "conflicting", "unsigned_compliance")} == {
        "active": 2, "valid": 2, "invalid": 0, "conflicting": 0, "unsigned_compliance": 0,
    }
    assert clean["requires_attention"] == []
    assert (killed["valid"], killed["invalid"]) == (0, 2)
    codes = {a["plugin_id"]: [p["code"] for p in a["problems"]] for a in killed["requires_attention"]}
    assert codes == {story.base: ["PLUGIN_DISABLED"], story.erp: ["DEPENDENCY_INACTIVE"]}
    assert await queries.status("nowhere") is None


async def test_a_forced_deactivation_leaves_its_dependent_invalid_and_is_audited(runtime: Runtime, story: Story) -> None:
    queries = SiteQueries(runtime.pool)

    await story.run(DeactivateExtension(site_id=story.site, plugin_id=story.base, reason="replaced", force=True))
    await project(runtime.settings.database_url)

    assert [f["plugin_id"] for f in await queries.features(story.site)] == [story.erp]
    status = await queries.status(story.site)
    assert (status["active"], status["invalid"]) == (1, 1)
    assert status["requires_attention"][0]["problems"][0]["code"] == "DEPENDENCY_MISSING"
    _, trail = await queries.extension_audit_trail(story.site, story.base, 0, 10)
    assert [(a["kind"], a["actor"], a["reason"], a["forced"], a["dependents"]) for a in trail] == [
        ("activated", "admin", "first", False, []), ("deactivated", "admin", "replaced", True, [story.erp]),
    ]
    assert trail[1]["old_hash"] == trail[0]["new_hash"] and trail[1]["version"] == "1.0.0"


async def test_audit_trails_list_every_event_in_order_with_actor_time_and_hashes(runtime: Runtime, story: Story) -> None:
    queries = SiteQueries(runtime.pool)
    await story.run(ReconfigureExtension(site_id=story.site, plugin_id=story.erp, configuration={"token": "********", "level": 9},
                                         reason="tuning"))
    await project(runtime.settings.database_url)

    total, trail = await queries.extension_audit_trail(story.site, story.erp, 0, 10)
    paged_total, page = await queries.extension_audit_trail(story.site, story.erp, 1, 2)
    site_total, site_trail = await queries.site_audit_trail(story.site, 0, 100)

    assert [(a["kind"], a["actor"]) for a in trail] == [
        ("signoff_recorded", story.ann), ("activated", "admin"), ("reconfigured", "admin"), ("signoff_invalidated", "admin"),
    ]
    signed, activated, reconfigured, invalidated = trail
    assert signed["details"]["aspect"] == "esig" and signed["new_hash"] == activated["new_hash"]
    assert (reconfigured["old_hash"], reconfigured["reason"]) == (activated["new_hash"], "tuning")
    assert reconfigured["new_hash"] != reconfigured["old_hash"] and reconfigured["details"] == {"changed_keys": ["level"]}
    assert invalidated["old_hash"] == activated["new_hash"]
    assert [a["seq"] for a in trail] == sorted(a["seq"] for a in trail)
    assert all(isinstance(a["recorded_at"], str) and a["id"] for a in trail)
    assert (paged_total, [a["kind"] for a in page]) == (4, ["activated", "reconfigured"])
    assert site_total == len(site_trail) == 6
    assert [a["kind"] for a in site_trail][:2] == ["site_created", "activated"]
    assert (await queries.site_audit_trail(story.other, 0, 10))[0] == 1


async def test_a_rebuild_from_the_log_gives_the_same_rows(runtime: Runtime, story: Story) -> None:
    dsn = runtime.settings.database_url
    await story.run(ReconfigureExtension(site_id=story.site, plugin_id=story.erp, configuration={"token": "********", "level": 3}))
    await story.run(DisablePlugin(plugin_id=story.erp, reason="incident"))
    await story.run(DeactivateExtension(site_id=story.site, plugin_id=story.erp, reason="done"))
    await story.run(RetireSite(site_id=story.other, reason="closed"))
    await project(dsn)
    live = await read_model(runtime.pool)

    replayed = await rebuild(dsn, [SitesProjection()], chunk=3, fresh=True)

    # the events of the stream types the projection folds: a rebuild reads only those
    assert replayed == await runtime.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_type = ANY($1)", sorted(SitesProjection.stream_types)
    )
    assert await read_model(runtime.pool) == live
    assert len(live["audit_trail"]) == 9 and live["site_extensions"][0]["plugin_id"] == story.base


async def test_pending_for_a_user_leaves_out_an_aspect_they_may_not_sign_beside_one_they_signed(
    runtime: Runtime, story: Story
) -> None:
    queries = SiteQueries(runtime.pool)
    qms = f"qms-{story.site}"
    two = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved"},
                       {"name": "audit", "role": "quality-focal", "meaning": "Reviewed"}],
           "distinct_signers": [["esig", "audit"]]}
    await story.install(qms, compliance=two)
    carl = await story.user("Carl", story.site)
    first = await story.hash_of(qms, {})
    for aspect, signer in (("esig", story.ann), ("audit", carl)):
        await story.run(RecordSignoff(site_id=story.site, plugin_id=qms, aspect=aspect, configuration_hash=first,
                                      password=PASSWORD), actor=signer)
    await story.run(ActivateExtension(site_id=story.site, plugin_id=qms))
    await story.run(ReconfigureExtension(site_id=story.site, plugin_id=qms, configuration={"mode": "strict"}))
    await story.run(RecordSignoff(site_id=story.site, plugin_id=qms, aspect="esig", password=PASSWORD), actor=story.ann)
    await project(runtime.settings.database_url)
    grants = [Grant("quality-focal", story.site)]

    ann_pending = await queries.pending_for_user(story.ann, grants)
    carl_pending = await queries.pending_for_user(carl, grants)

    assert ann_pending == []
    assert [(p["plugin_id"], p["aspect"], p["meaning"]) for p in carl_pending] == [(qms, "audit", "Reviewed")]
    signoffs = await queries.signoffs(story.site, qms)
    assert [(g["aspect"], g["invalidated"], g["approves_current"]) for g in signoffs["given"]] == [
        ("esig", True, False), ("audit", True, False), ("esig", False, True),
    ]
    assert [p["aspect"] for p in signoffs["pending"]] == ["audit"]
