"""Hostile requests meet the full path even when the same read was answered from what was kept: a kept
decision is only ever reused for the exact request line and token that earned it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from interfaces.app import create_app
from tests.e2e.access_kit import account_with, send
from tests.e2e.conftest import admin_token, make_settings
from tests.e2e.plugin_kit import assert_error
from tests.e2e.test_read_cache import warm

URL = "/api/v1/plugins?limit=7"


@pytest.fixture(scope="module")
async def client(databases: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient]:
    app = create_app(make_settings(await databases.create("kept"), tmp_path_factory.mktemp("charter-kept")))
    async with AsyncTestClient(app=app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {await admin_token(test_client)}"
        yield test_client


async def test_a_kept_read_refuses_a_malformed_consistency_header(client: Any) -> None:
    viewer = await account_with(client, ("viewer", None), prefix="hostile-kept")
    await warm(client, viewer.tokens["access_token"], URL)
    response = await send(client, "GET", URL, token=viewer.tokens["access_token"], headers={"Charter-Min-Position": "1; DROP"})
    assert_error(response, 400, "VALIDATION_FAILED", "Charter-Min-Position")


async def test_a_kept_read_is_not_given_without_the_token_or_with_another(client: Any) -> None:
    viewer = await account_with(client, ("viewer", None), prefix="hostile-token")
    token = viewer.tokens["access_token"]
    await warm(client, token, URL)
    assert (await send(client, "GET", URL, anonymous=True)).status_code == 401
    assert (await send(client, "GET", URL, authorization=f"Bearer {token}x")).status_code == 401
    assert (await send(client, "GET", URL, authorization=f"bearer  {token}")).status_code == 200  # decided afresh


async def test_a_kept_read_of_a_caller_without_the_permission_is_never_answered(client: Any) -> None:
    nobody = await account_with(client, prefix="hostile-nobody")
    for _ in range(2):
        response = await send(client, "GET", URL, token=nobody.tokens["access_token"])
        assert_error(response, 403, "FORBIDDEN")
    assert not any(nobody.tokens["access_token"].encode() in line[2] for line in client.app.state.kept_reads.entries)
