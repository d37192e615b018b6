"""Commands decide from the event log, not from read models: with every projector stopped, unique role
names and an uninstall's dependents are still enforced, at once and over HTTP (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.e2e.access_kit import ROLES, unique_name
from tests.e2e.conftest import live_server, make_settings
from tests.e2e.plugin_kit import PLUGINS, assert_error, install, manifest, unique_id


async def stop_projectors(runtime) -> None:
    """Cancel the projection runners: from here on the read models stay where they are."""
    runners = [task for task in runtime.tasks if task.get_name().startswith("projection-")]
    assert runners, "the app was expected to run projectors (so that stopping them shows something)"
    for task in runners:
        task.cancel()
    await asyncio.gather(*runners, return_exceptions=True)


@pytest.fixture(scope="module")
async def http(databases, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    database_url = await databases.create("no_projectors")
    settings = make_settings(database_url, tmp_path_factory.mktemp("charter-no-projectors"), consistency_timeout=2.0)
    async with live_server(settings) as live:
        await stop_projectors(live.runtime)
        async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=30) as client:
            client.database_url = database_url  # type: ignore[attr-defined]
            yield client


async def events_of(database_url: str, stream_id: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version", stream_id)
        return [r["event_type"] for r in rows]
    finally:
        await conn.close()


async def create_role(http: httpx.AsyncClient, name: str) -> httpx.Response:
    return await http.post(ROLES, json={"name": name, "description": "", "permissions": ["plugins:read"]})


class TestRoleNames:
    async def test_two_creates_of_one_name_at_once_give_one_201_and_one_409(self, http) -> None:
        name = unique_name()

        responses = await asyncio.gather(create_role(http, name), create_role(http, name))

        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
        assert_error(next(r for r in responses if r.status_code == 409), 409, "ROLE_ALREADY_EXISTS", field="name")
        assert await events_of(http.database_url, f"role:{name}") == ["Role.Created"]
        assert await events_of(http.database_url, f"role-name:{name}") == ["RoleName.Claimed"]
        # the read model never saw the role: the decision was the log's
        assert (await http.get(f"{ROLES}/{name}")).status_code == 404

    async def test_rename_and_delete_decide_by_the_log(self, http) -> None:
        first, second, third = unique_name("first"), unique_name("second"), unique_name("third")
        for name in (first, second):
            assert (await create_role(http, name)).status_code == 201

        assert_error(await http.put(f"{ROLES}/{first}", json={"name": second}), 409, "ROLE_ALREADY_EXISTS", field="name")
        assert (await http.put(f"{ROLES}/{first}", json={"name": third})).status_code == 200, "renamed"
        assert_error(await create_role(http, third), 409, "ROLE_ALREADY_EXISTS", field="name")
        assert (await http.delete(f"{ROLES}/{third}")).status_code == 200, "deleted by its new name"

        assert (await create_role(http, third)).status_code == 201  # the name it had is free again
        assert_error(await http.delete(f"{ROLES}/{first}"), 404, "ROLE_NOT_FOUND")


class TestUninstallDependents:
    async def test_refused_with_the_dependents_listed_then_allowed_once_they_are_gone(self, http) -> None:
        base, child = unique_id("base"), unique_id("child")
        assert (await install(http, manifest(base))).status_code == 201
        assert (await install(http, manifest(child, dependencies={base: ">=1"}))).status_code == 201
        assert (await http.get(f"{PLUGINS}/{child}")).status_code == 404, "the plugins read model is stopped"

        error = assert_error(await http.delete(f"{PLUGINS}/{base}"), 409, "PLUGIN_HAS_DEPENDENTS")

        assert error["details"]["dependents"] == [child]
        assert await events_of(http.database_url, f"plugin:{base}") == ["Plugin.Installed"]
        assert (await http.delete(f"{PLUGINS}/{child}")).status_code == 200
        assert (await http.delete(f"{PLUGINS}/{base}")).status_code == 200
