"""Racing writers through HTTP: without If-Match every command is decided again and succeeds; with a
stale If-Match it answers 412, also when the race is lost between the check and the append.

Through a live server (uvicorn): the in-memory AsyncTestClient runs one request at a time, so its
requests never race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.plugin_kit import (
    PLUGINS,
    assert_error,
    assert_written,
    current,
    event_types,
    install,
    installed,
    manifest,
    unique_id,
    update,
)


@pytest.fixture
async def client(fanout_server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fanout_server.url, headers=fanout_server.headers, timeout=30) as http:
        yield http


@pytest.fixture
def database_url(fanout_server) -> str:
    return fanout_server.runtime.settings.database_url


class TestWithoutIfMatch:
    async def test_thirty_concurrent_restarts_of_one_plugin_all_succeed(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        responses = await asyncio.gather(
            *(client.post(f"{PLUGINS}/{pid}/restart", json={"reason": f"user {i}"}) for i in range(30))
        )

        versions = sorted(assert_written(r, pid)["stream_version"] for r in responses)
        assert versions == list(range(2, 32))
        assert await event_types(database_url, pid) == ["Plugin.Installed"] + ["Plugin.Restarted"] * 30
        assert (await current(client, pid))["restarts"] == 30

    async def test_concurrent_installs_of_one_plugin_refuse_all_but_one_as_already_installed(
        self, client, database_url
    ) -> None:
        pid = unique_id()

        responses = await asyncio.gather(*(install(client, manifest(pid)) for _ in range(5)))

        assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409], [r.text for r in responses]
        for response in responses:
            if response.status_code == 409:
                assert_error(response, 409, "PLUGIN_ALREADY_INSTALLED")
        assert await event_types(database_url, pid) == ["Plugin.Installed"]

    async def test_a_racing_command_the_domain_now_refuses_gets_the_refusal(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        responses = await asyncio.gather(*(client.delete(f"{PLUGINS}/{pid}") for _ in range(5)))

        assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409], [r.text for r in responses]
        for response in responses:
            if response.status_code == 409:
                assert_error(response, 409, "PLUGIN_NOT_INSTALLED")
        assert await event_types(database_url, pid) == ["Plugin.Installed", "Plugin.Uninstalled"]


class TestWithIfMatch:
    async def test_ten_concurrent_updates_naming_one_version_one_wins_the_rest_fail_the_precondition(
        self, client, database_url
    ) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        responses = await asyncio.gather(
            *(update(client, pid, manifest(pid, f"2.0.{i}"), headers={"If-Match": '"1"'}) for i in range(10))
        )

        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [412] * 9, [r.text for r in responses]
        for response in responses:
            if response.status_code == 412:
                error = assert_error(response, 412, "PRECONDITION_FAILED")
                assert error["details"]["expected_version"] == 1
                assert response.headers["etag"] == '"2"'
        assert await event_types(database_url, pid) == ["Plugin.Installed", "Plugin.Updated"]

    async def test_ten_concurrent_updates_with_a_stale_version_all_fail_the_precondition(
        self, client, database_url
    ) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.post(f"{PLUGINS}/{pid}/restart")

        responses = await asyncio.gather(
            *(update(client, pid, manifest(pid, f"2.0.{i}"), headers={"If-Match": '"1"'}) for i in range(10))
        )

        for response in responses:
            assert_error(response, 412, "PRECONDITION_FAILED")
        assert await event_types(database_url, pid) == ["Plugin.Installed", "Plugin.Restarted"]
