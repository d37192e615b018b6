"""The read cache and the kept reads: a catalog read answered again from what was kept, and stopped at once
when the caller's access or the read model moves."""

from __future__ import annotations

from typing import Any

from tests.e2e.access_kit import USERS, account_with, bearer, grant, revoke, send
from tests.e2e.plugin_kit import installed, manifest, unique_id

PLUGINS = "/api/v1/plugins"


def kept(client: Any) -> Any:
    return client.app.state.kept_reads


async def warm(client: Any, token: str, url: str) -> Any:
    """Read twice: the second answer comes from the kept decision and the kept answer (once the read model
    has caught up with what earlier tests wrote, so no batch of theirs ends the generation in between)."""
    caught_up = await send(client, "GET", url + ("&" if "?" in url else "?") + "consistent=true", token=token)
    assert caught_up.status_code == 200, caught_up.text
    first = await send(client, "GET", url, token=token)
    assert first.status_code == 200, first.text
    hits = client.app.state.runtime.read_cache.hits
    second = await send(client, "GET", url, token=token)
    assert second.status_code == 200 and second.content == first.content
    assert client.app.state.runtime.read_cache.hits > hits
    return second


class TestKeptReads:
    async def test_a_repeated_read_is_answered_from_what_was_kept(self, client: Any) -> None:
        await installed(client, manifest(unique_id("kept")))
        viewer = await account_with(client, ("viewer", None), prefix="kept")
        token = viewer.tokens["access_token"]
        url = f"{PLUGINS}?limit=5&sort_by=updated_at&sort_order=desc"
        second = await warm(client, token, url)
        assert any(token.encode() == line[2].split(b" ", 1)[1] for line in kept(client).entries)
        assert second.headers["content-type"].startswith("application/json")
        for name in ("x-request-id", "x-content-type-options", "x-ratelimit-limit"):
            assert name in second.headers, name  # the request context's headers, as on the full path

    async def test_the_detail_keeps_its_etag(self, client: Any) -> None:
        plugin_id = unique_id("etag")
        await installed(client, manifest(plugin_id))
        viewer = await account_with(client, ("viewer", None), prefix="etag")
        second = await warm(client, viewer.tokens["access_token"], f"{PLUGINS}/{plugin_id}")
        assert second.headers["etag"] == f'"{second.json()["stream_version"]}"'


class TestAccessChangesStopKeptReads:
    async def test_a_revoked_grant_stops_a_cached_read_at_once(self, client: Any) -> None:
        viewer = await account_with(client, ("viewer", None), prefix="revoked")
        token = viewer.tokens["access_token"]
        await warm(client, token, f"{PLUGINS}?limit=3")
        await revoke(client, viewer.id, "viewer")
        refused = await send(client, "GET", f"{PLUGINS}?limit=3", token=token)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "FORBIDDEN"

    async def test_a_deactivated_user_is_refused_at_once(self, client: Any) -> None:
        viewer = await account_with(client, ("viewer", None), prefix="deactivated")
        token = viewer.tokens["access_token"]
        await warm(client, token, f"{PLUGINS}?limit=4")
        response = await send(client, "POST", f"{USERS}/{viewer.id}/deactivate")
        assert response.status_code == 200, response.text
        refused = await send(client, "GET", f"{PLUGINS}?limit=4", token=token)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "USER_INACTIVE"

    async def test_a_grant_elsewhere_voids_every_kept_decision(self, client: Any) -> None:
        viewer = await account_with(client, ("viewer", None), prefix="elsewhere")
        other = await account_with(client, prefix="other")
        await warm(client, viewer.tokens["access_token"], f"{PLUGINS}?limit=6")
        version = client.app.state.runtime.authority.version
        await grant(client, other.id, "auditor")
        assert client.app.state.runtime.authority.version > version
        again = await send(client, "GET", f"{PLUGINS}?limit=6", token=viewer.tokens["access_token"])
        assert again.status_code == 200  # decided again on the full path, and allowed


class TestReadModelChanges:
    async def test_a_write_then_a_read_with_its_position_shows_the_write(self, client: Any) -> None:
        plugin_id = unique_id("moved")
        await installed(client, manifest(plugin_id))
        viewer = await account_with(client, ("viewer", None), prefix="moved")
        token = viewer.tokens["access_token"]
        before = await warm(client, token, f"{PLUGINS}/{plugin_id}")
        written = await send(client, "POST", f"{PLUGINS}/{plugin_id}/disable", json={"reason": "moved"})
        assert written.status_code == 200, written.text
        after = await send(
            client, "GET", f"{PLUGINS}/{plugin_id}", token=token,
            headers={"Charter-Min-Position": written.headers["Charter-Position"]},
        )
        assert after.status_code == 200
        assert after.json()["stream_version"] == written.json()["stream_version"] > before.json()["stream_version"]
        assert after.json()["enabled"] is False
