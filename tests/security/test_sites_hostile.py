"""Hostile input on the sites routes: oversized, malformed and unknown-field bodies, over-long or
malformed ids, huge configurations, bounds on every list, a password never echoed nor recorded, other
sites hidden (404, the same answer as a site that does not exist) and missing permissions (403). Every
refusal is a 4xx naming the field, and writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from domain.limits import MAX_ID
from interfaces.http.wellformed import MAX_JSON_BYTES
from tests.e2e.access_kit import account_with, send, unique_name
from tests.e2e.plugin_kit import assert_error, unique_id
from tests.e2e.site_kit import ASPECTS, SCHEMA, SITES, created_site, extension, installed_plugin, site, validate

PASSWORD_PLANTED = "hostile-planted-password-7f3a"


@pytest.fixture
async def world(client) -> dict[str, Any]:
    site_id = await created_site(client)
    plugin = await installed_plugin(client, unique_id("hostile"), config_schema=SCHEMA, compliance=ASPECTS)
    return {"site": site_id, "plugin": plugin}


async def site_events(database_url: str, site_id: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT payload::text || metadata::text AS text FROM events WHERE stream_id = $1 ORDER BY stream_version",
            f"site:{site_id}",
        )
        return [r["text"] for r in rows]
    finally:
        await conn.close()


@asynccontextmanager
async def nothing_written(database_url: str, site_id: str) -> AsyncIterator[None]:
    before = await site_events(database_url, site_id)
    yield
    assert await site_events(database_url, site_id) == before, "a refused request wrote to the site's stream"


def raw(client, method: str, url: str, content: bytes, **kwargs):
    return send(client, method, url, content=content, headers={"content-type": "application/json"}, **kwargs)


class TestBodies:
    async def test_an_unknown_field_is_refused_naming_it(self, client, world, database_url) -> None:
        async with nothing_written(database_url, world["site"]):
            response = await send(client, "POST", f"{extension(world['site'], world['plugin'])}/activate",
                                  json={"configuration": {}, "complianceSignoffs": []})

        assert_error(response, 400, "VALIDATION_FAILED", field="complianceSignoffs")

    async def test_malformed_json_is_refused(self, client, world, database_url) -> None:
        async with nothing_written(database_url, world["site"]):
            response = await raw(client, "POST", f"{extension(world['site'], world['plugin'])}/activate", b'{"configuration": {')

        assert_error(response, 400, "MALFORMED_JSON")

    async def test_a_body_past_a_mebibyte_is_refused_before_it_is_read(self, client, world) -> None:
        body = b'{"configuration": {"endpoint": "' + b"x" * (MAX_JSON_BYTES + 10) + b'"}}'

        response = await raw(client, "POST", f"{extension(world['site'], world['plugin'])}/activate", body)

        assert_error(response, 413, "PAYLOAD_TOO_LARGE", field="body")

    async def test_a_huge_configuration_under_the_body_limit_is_refused_and_not_recorded(self, client, world, database_url) -> None:
        huge = {"endpoint": "x" * (MAX_JSON_BYTES - 4096)}

        async with nothing_written(database_url, world["site"]):
            response = await send(client, "POST", f"{extension(world['site'], world['plugin'])}/activate",
                                  json={"configuration": huge})

        assert 400 <= response.status_code < 500, response.text[:500]
        assert len(response.content) < 64 * 1024, "the refusal echoes the configuration"

    async def test_a_deeply_nested_configuration_is_refused(self, client, world, database_url) -> None:
        nested: Any = "leaf"
        for _ in range(200):
            nested = {"n": nested}

        async with nothing_written(database_url, world["site"]):
            response = await send(client, "POST", f"{extension(world['site'], world['plugin'])}/validate",
                                  json={"configuration": nested})

        assert response.status_code == 400, response.text[:500]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"site_id": "x" * (MAX_ID + 1), "name": "n"}, "site_id"),
            ({"site_id": "has spaces", "name": "n"}, "site_id"),
            ({"site_id": "global", "name": "n"}, "site_id"),
            ({"site_id": "ok-site", "name": "n" * 201}, "name"),
            ({"site_id": "ok-site", "name": "n", "timezone": "Z" * 65}, "timezone"),
            ({"site_id": "ok-site", "name": "n", "metadata": {f"k{i}": "v" for i in range(33)}}, "metadata"),
            ({"site_id": "ok-site", "name": "n", "metadata": {"k": "v" * 501}}, "metadata"),
            ({"site_id": "ok-site", "name": "n", "metadata": {"k": 3}}, "metadata"),
            ({"site_id": "ok-site"}, "name"),
        ],
        ids=["long-id", "bad-id", "reserved-id", "long-name", "long-timezone", "many-metadata", "long-metadata",
             "typed-metadata", "no-name"],
    )
    async def test_a_bad_site_is_refused_naming_the_field(self, client, body, field) -> None:
        response = await client.post(SITES, json=body)

        assert_error(response, 400, "VALIDATION_FAILED", field=field)

    async def test_batches_and_combinations_are_bounded(self, client, world) -> None:
        many_sites = await client.post(f"{SITES}/extensions/{world['plugin']}/activate",
                                       json={"site_ids": [f"s{i}" for i in range(101)]})
        no_sites = await client.post(f"{SITES}/extensions/{world['plugin']}/deactivate", json={"site_ids": []})
        many_extensions = await client.post(f"{site(world['site'])}/extensions/validate-combination",
                                            json={"extensions": [{"id": f"p{i}"} for i in range(65)]})

        assert_error(many_sites, 400, "VALIDATION_FAILED", field="site_ids")
        assert_error(no_sites, 400, "VALIDATION_FAILED", field="site_ids")
        assert_error(many_extensions, 400, "VALIDATION_FAILED", field="extensions")

    async def test_an_over_long_path_id_is_refused_naming_it(self, client, world) -> None:
        long_site = await client.post(f"{extension('s' * 300, world['plugin'])}/validate", json={})
        long_plugin = await client.post(f"{extension(world['site'], 'p' * 300)}/activate", json={})

        assert_error(long_site, 400, "VALIDATION_FAILED", field="site_id")
        assert_error(long_plugin, 400, "VALIDATION_FAILED", field="plugin_id")

    async def test_paging_is_bounded(self, client, world) -> None:
        response = await client.get(f"{site(world['site'])}/audit-trail", params={"limit": 1000})

        assert_error(response, 400, "VALIDATION_FAILED", field="limit")

    async def test_a_malformed_configuration_hash_is_refused(self, client, world, database_url) -> None:
        signer = await account_with(client, ("quality-focal", world["site"]))

        async with nothing_written(database_url, world["site"]):
            response = await send(client, "POST", f"{extension(world['site'], world['plugin'])}/signoffs",
                                  json={"aspect": "esig", "configuration_hash": "md5:abc", "password": signer.password},
                                  token=signer.access_token)

        assert_error(response, 400, "VALIDATION_FAILED", field="configuration_hash")


class TestPasswords:
    async def test_a_signing_password_is_never_echoed_nor_recorded(self, client, world, database_url) -> None:
        signer = await account_with(client, ("quality-focal", world["site"]))
        approved = (await validate(client, world["site"], world["plugin"], {"token": "t"}))["configuration_hash"]
        url = f"{extension(world['site'], world['plugin'])}/signoffs"

        wrong = await send(client, "POST", url, json={"aspect": "esig", "configuration_hash": approved,
                                                      "password": PASSWORD_PLANTED}, token=signer.access_token)
        too_long = await send(client, "POST", url, json={"aspect": "esig", "configuration_hash": approved,
                                                         "password": PASSWORD_PLANTED * 100}, token=signer.access_token)
        unknown = await send(client, "POST", url, json={"aspect": "esig", "pass": PASSWORD_PLANTED}, token=signer.access_token)
        signed = await send(client, "POST", url, json={"aspect": "esig", "configuration_hash": approved,
                                                       "password": signer.password}, token=signer.access_token)

        assert_error(wrong, 401, "REAUTHENTICATION_REQUIRED")
        assert_error(too_long, 400, "VALIDATION_FAILED", field="password")
        assert_error(unknown, 400, "VALIDATION_FAILED", field="pass")
        assert signed.status_code == 201, signed.text
        for response in (wrong, too_long, unknown, signed):
            assert PASSWORD_PLANTED not in response.text and signer.password not in response.text
        recorded = "".join(await site_events(database_url, world["site"]))
        assert "SignoffRecorded" in recorded or "esig" in recorded
        assert PASSWORD_PLANTED not in recorded and signer.password not in recorded


class TestOtherSites:
    async def test_a_site_the_caller_cannot_see_answers_as_one_that_does_not_exist(self, client, world, database_url) -> None:
        elsewhere = await created_site(client)
        admin_there = await account_with(client, ("site-admin", elsewhere))

        async with nothing_written(database_url, world["site"]):
            hidden = await send(client, "POST", f"{extension(world['site'], world['plugin'])}/activate", json={},
                                token=admin_there.access_token)
        missing = await send(client, "POST", f"{extension('no-such-site-hostile', world['plugin'])}/activate", json={},
                             token=admin_there.access_token)
        reads = [await send(client, "GET", f"{site(world['site'])}{tail}", token=admin_there.access_token)
                 for tail in ("", "/features", "/status", "/audit-trail", "/capabilities/erp")]

        for response, site_id in [(hidden, world["site"]), (missing, "no-such-site-hostile")] + [(r, world["site"]) for r in reads]:
            error = assert_error(response, 404, "SITE_NOT_FOUND")
            assert error["message"] == f"site {site_id} is not known" and error["details"] == {"site_id": site_id}
        listed = await send(client, "GET", SITES, params={"limit": 100}, token=admin_there.access_token)
        assert [s["site_id"] for s in listed.json()["items"]] == [elsewhere]

    async def test_a_caller_who_sees_the_site_without_the_permission_gets_403(self, client, world, database_url) -> None:
        viewer = await account_with(client, ("viewer", world["site"]))

        async with nothing_written(database_url, world["site"]):
            response = await send(client, "POST", f"{extension(world['site'], world['plugin'])}/activate", json={},
                                  token=viewer.access_token)
            signing = await send(client, "POST", f"{extension(world['site'], world['plugin'])}/signoffs",
                                 json={"aspect": "esig", "password": viewer.password}, token=viewer.access_token)

        error = assert_error(response, 403, "FORBIDDEN")
        assert error["details"] == {"required_permission": "extensions:activate", "site_id": world["site"]}
        assert assert_error(signing, 403, "FORBIDDEN")["details"]["required_permission"] == "signoffs:sign"

    async def test_forcing_a_deactivation_takes_extensions_force(self, client, world) -> None:
        base = await installed_plugin(client, unique_id("hostile-base"))
        dependent = await installed_plugin(client, unique_id("hostile-dep"), dependencies={base: ">=1.0"})
        for plugin_id in (base, dependent):
            assert (await client.post(f"{extension(world['site'], plugin_id)}/activate", json={})).status_code == 200
        role = unique_name("deactivator")
        created = await client.post("/api/v1/admin/roles", json={"name": role, "permissions": ["sites:read", "extensions:deactivate"]})
        assert created.status_code == 201, created.text
        deactivator = await account_with(client, (role, world["site"]))

        refused = await send(client, "DELETE", extension(world["site"], base), json={"force": True, "reason": "r"},
                             token=deactivator.access_token)

        error = assert_error(refused, 403, "FORBIDDEN")
        assert error["details"]["required_permission"] == "extensions:force"
