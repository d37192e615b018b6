"""Issue 11 over HTTP: a site is created, a plugin with compliance aspects is validated (every problem
listed), refused without signoffs, signed (403 for a signer without the role at the site, refused on
stale authentication), activated, reconfigured (signoffs pending again), refused deactivation while a
dependent is active (409 listing it) and force-deactivated; batches report each site; reads follow."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.access_kit import account_with, send
from tests.e2e.plugin_kit import MASK, assert_error, unique_id
from tests.e2e.site_kit import (
    ASPECTS,
    CONFIG,
    SCHEMA,
    SITES,
    activate,
    activated,
    codes,
    created_site,
    extension,
    installed_plugin,
    read,
    read_ok,
    sign_off,
    site,
    stale_token,
    validate,
)


@pytest.fixture
async def world(client) -> dict[str, Any]:
    """A site, a base plugin providing `erp`, and a plugin depending on it with two compliance aspects."""
    site_id = await created_site(client)
    base = await installed_plugin(client, unique_id("erp-base"), capabilities=["erp"], exclusive_capabilities=["erp"])
    plugin = await installed_plugin(
        client, unique_id("erp-sync"), config_schema=SCHEMA, compliance=ASPECTS, dependencies={base: ">=1.0"},
        capabilities=["erp-sync"],
    )
    return {"site": site_id, "base": base, "plugin": plugin}


class TestTheWholeFlow:
    async def test_from_validation_to_forced_deactivation(self, client, world) -> None:
        s, base, plugin = world["site"], world["base"], world["plugin"]
        quality = await account_with(client, ("quality-focal", s), prefix="quality")
        compliance = await account_with(client, ("compliance-officer", s), prefix="compliance")
        site_admin = await account_with(client, ("site-admin", s), prefix="site-admin")

        # validate: every problem at once (schema, dependency, missing signoffs), answered 200
        found = await validate(client, s, plugin, {"retries": "three", "extra": 1})
        assert found["valid"] is False
        assert {"CONFIGURATION_INVALID", "DEPENDENCY_MISSING", "SIGNOFF_MISSING"} <= set(codes(found["problems"]))
        assert all({"code", "field", "message", "severity"} <= set(p) for p in found["problems"])
        assert any(p["field"].startswith("configuration") for p in found["problems"] if p["code"] == "CONFIGURATION_INVALID")
        assert sorted(found["missing_signoffs"]) == ["audit-trail", "esig"]

        assert (await activated(client, s, base))["stream_id"] == f"site:{s}"
        found = await validate(client, s, plugin, CONFIG)
        assert [p["code"] for p in found["problems"] if p["severity"] == "error"] == ["SIGNOFF_MISSING"] * 2
        approved = found["configuration_hash"]
        assert approved.startswith("sha256:") and CONFIG["token"] not in str(found)

        # activate without signoffs: refused with every problem
        refused = assert_error(await activate(client, s, plugin, CONFIG), 422, "VALIDATION_FAILED")
        assert codes([p for p in refused["details"]["problems"] if p["severity"] == "error"]) == ["SIGNOFF_MISSING"] * 2

        # sign: without the aspect's role at the site, with stale authentication, then rightly
        wrong_role = await sign_off(client, s, plugin, compliance, "esig", approved)
        assert_error(wrong_role, 403, "SIGNER_LACKS_ROLE")
        stale = await sign_off(client, s, plugin, quality, "esig", approved, access_token=stale_token(client, quality.id))
        assert_error(stale, 401, "REAUTHENTICATION_REQUIRED")
        bad_password = await sign_off(client, s, plugin, quality, "esig", approved, password="not-my-password")
        assert_error(bad_password, 401, "REAUTHENTICATION_REQUIRED")
        signed = await sign_off(client, s, plugin, quality, "esig", approved, access_token=quality.access_token)
        assert signed.status_code == 201, signed.text
        assert (await sign_off(client, s, plugin, compliance, "audit-trail", approved)).status_code == 201

        # activate
        assert (await activate(client, s, plugin, CONFIG, token=site_admin.access_token, reason="go live")).status_code == 200
        signoffs = await read_ok(client, f"{extension(s, plugin)}/signoffs")
        assert signoffs["is_fully_signed"] is True and signoffs["pending"] == []
        features = await read_ok(client, f"{site(s)}/features")
        active = {f["plugin_id"]: f for f in features["features"]}
        assert set(active) == {base, plugin}
        assert active[plugin]["configuration"]["token"] == MASK and active[plugin]["configuration_hash"] == approved

        # reconfigure: the signoffs bound to the old hash are invalidated, the aspects pending again
        changed = {**CONFIG, "retries": 5}
        response = await send(client, "PUT", f"{extension(s, plugin)}/configuration",
                              json={"configuration": changed, "reason": "more retries"}, token=site_admin.access_token)
        assert response.status_code == 200, response.text
        signoffs = await read_ok(client, f"{extension(s, plugin)}/signoffs")
        assert signoffs["is_fully_signed"] is False
        assert sorted(p["aspect"] for p in signoffs["pending"]) == ["audit-trail", "esig"]
        assert signoffs["configuration_hash"] != approved
        mine = (await read(client, f"{SITES}/signoffs/pending", token=quality.access_token)).json()
        assert [(p["site_id"], p["plugin_id"], p["aspect"]) for p in mine["items"]] == [(s, plugin, "esig")]

        # deactivate the dependency: refused while the dependent is active, then forced with a reason
        refused = assert_error(await send(client, "DELETE", extension(s, base), token=site_admin.access_token),
                               409, "DEACTIVATION_FAILED")
        assert refused["details"]["dependents"] == [plugin]
        no_reason = await send(client, "DELETE", extension(s, base), json={"force": True}, token=site_admin.access_token)
        assert_error(no_reason, 400, "VALIDATION_FAILED", field="reason")
        forced = await send(client, "DELETE", extension(s, base), json={"force": True, "reason": "ERP replaced"},
                            token=site_admin.access_token)
        assert forced.status_code == 200, forced.text

        # the reads follow
        status = await read_ok(client, f"{site(s)}/status")
        assert status["active"] == 1 and status["unsigned_compliance"] == 1
        assert [a["plugin_id"] for a in status["requires_attention"]] == [plugin]
        trail = await read_ok(client, f"{extension(s, plugin)}/audit-trail")
        kinds = [e["kind"] for e in trail["items"]]
        assert kinds == ["signoff_recorded"] * 2 + ["activated", "reconfigured"] + ["signoff_invalidated"] * 2, kinds
        reconfigured = trail["items"][3]
        assert (reconfigured["old_hash"], reconfigured["actor"], reconfigured["reason"]) == (approved, site_admin.id, "more retries")
        assert reconfigured["new_hash"] == signoffs["configuration_hash"]
        assert [e["position"] for e in trail["items"]] == sorted(e["position"] for e in trail["items"])
        site_trail = await read_ok(client, f"{site(s)}/audit-trail", limit=2)
        assert site_trail["limit"] == 2 and len(site_trail["items"]) == 2 and site_trail["has_more"] is True
        assert CONFIG["token"] not in str(trail) + str(features) + str(signoffs)


class TestSites:
    async def test_a_created_site_is_listed_and_read(self, client) -> None:
        s = await created_site(client, metadata={"region": "emea"})

        detail = await read_ok(client, site(s))
        listed = await read_ok(client, SITES, limit=100)

        assert detail["site_id"] == s and detail["timezone"] == "Europe/Paris" and detail["metadata"] == {"region": "emea"}
        assert detail["status"] == "active"
        assert listed["total"] >= 1

    async def test_a_site_id_is_taken_once(self, client) -> None:
        s = await created_site(client)

        response = await client.post(SITES, json={"site_id": s, "name": "Again"})

        assert_error(response, 409, "SITE_ALREADY_EXISTS")

    async def test_an_unknown_timezone_is_refused_naming_the_field(self, client) -> None:
        response = await client.post(SITES, json={"site_id": unique_id("tz"), "name": "X", "timezone": "Mars/Olympus"})

        assert_error(response, 400, "VALIDATION_FAILED", field="timezone")

    async def test_an_unknown_site_answers_404(self, client) -> None:
        assert_error(await read(client, f"{site('no-such-site-x')}/features"), 404, "SITE_NOT_FOUND")
        assert_error(await activate(client, "no-such-site-x", "p"), 404, "SITE_NOT_FOUND")

    async def test_capability_providers_name_the_active_extension(self, client, world) -> None:
        await activated(client, world["site"], world["base"])

        found = await read_ok(client, f"{site(world['site'])}/capabilities/erp")
        none = await read_ok(client, f"{site(world['site'])}/capabilities/nothing-provides-this")

        assert found["enabled"] is True and [p["plugin_id"] for p in found["providers"]] == [world["base"]]
        assert none == {"site_id": world["site"], "name": "nothing-provides-this", "enabled": False, "providers": []}


class TestCombinations:
    async def test_two_exclusive_providers_conflict(self, client, world) -> None:
        rival = await installed_plugin(client, unique_id("erp-rival"), capabilities=["erp"], exclusive_capabilities=["erp"])

        response = await client.post(f"{site(world['site'])}/extensions/validate-combination",
                                     json={"extensions": [{"id": world["base"]}, {"id": rival, "version": "1.0.0"}]})

        assert response.status_code == 200, response.text
        assert response.json()["valid"] is False
        assert "CAPABILITY_CLASH" in codes(response.json()["problems"])

    async def test_an_activation_clashing_with_an_active_provider_is_refused(self, client, world) -> None:
        rival = await installed_plugin(client, unique_id("erp-rival"), capabilities=["erp"], exclusive_capabilities=["erp"])
        await activated(client, world["site"], world["base"])

        refused = assert_error(await activate(client, world["site"], rival), 422, "VALIDATION_FAILED")

        assert "CAPABILITY_CLASH" in codes(refused["details"]["problems"])


class TestBatches:
    async def test_all_sites_succeeding_answer_200(self, client, world) -> None:
        sites = [await created_site(client) for _ in range(3)]

        response = await client.post(f"{SITES}/extensions/{world['base']}/activate", json={"site_ids": sites})

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["succeeded"] == 3 and body["failed"] == 0
        assert [r["site_id"] for r in body["results"]] == sites and all(r["ok"] for r in body["results"])

    async def test_a_partial_success_answers_207_with_each_sites_result(self, client, world) -> None:
        ready = await created_site(client)
        unknown = unique_id("nowhere")

        response = await client.post(f"{SITES}/extensions/{world['base']}/activate",
                                     json={"site_ids": [ready, unknown, world["site"]], "reason": "roll-out"})
        again = await client.post(f"{SITES}/extensions/{world['base']}/activate", json={"site_ids": [ready]})
        off = await client.post(f"{SITES}/extensions/{world['base']}/deactivate", json={"site_ids": [ready, unknown]})

        assert response.status_code == 207, response.text
        results = {r["site_id"]: r for r in response.json()["results"]}
        assert results[ready]["ok"] and results[world["site"]]["ok"]
        assert results[unknown] | {"message": None} == {
            "site_id": unknown, "ok": False, "stream_version": None, "position": None, "code": "SITE_NOT_FOUND",
            "message": None, "details": {"site_id": unknown},
        }
        assert again.status_code == 207 and again.json()["results"][0]["code"] == "EXTENSION_ALREADY_ACTIVE"
        assert off.status_code == 207 and [r["ok"] for r in off.json()["results"]] == [True, False]
        features = await read_ok(client, f"{site(ready)}/features")
        assert features["features"] == []

    async def test_sites_the_caller_may_not_activate_at_are_refused_each(self, client, world) -> None:
        mine, theirs = await created_site(client), await created_site(client)
        admin_of_one = await account_with(client, ("site-admin", mine))

        response = await send(client, "POST", f"{SITES}/extensions/{world['base']}/activate",
                              json={"site_ids": [mine, theirs]}, token=admin_of_one.access_token)

        assert response.status_code == 207, response.text
        results = response.json()["results"]
        assert [r["ok"] for r in results] == [True, False] and results[1]["code"] == "FORBIDDEN"
