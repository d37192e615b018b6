"""Access tokens die with their sign-in: each names its session (`sid`, the refresh-token family), and
logout or the reuse of a rotated refresh token makes every access token of that session answer 401 at
once on the replica that saw it, and within about a second on the others; an open event stream ends
within a second of a logout, a refresh-token reuse or a revoked role."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from interfaces.app import create_app
from tests.e2e.access_kit import AUTH, USERS, account_with, login, me, revoke, send
from tests.e2e.conftest import LiveServer, admin_token, live_server, make_settings
from tests.e2e.plugin_kit import assert_error
from tests.e2e.test_event_stream import SSE, append_probe, count_of, probe_type, sse

SECRET = "session-revocation-tests"  # every app of this module signs with it, so replicas accept each other's tokens


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def refresh(client: Any, token: str) -> Any:
    return send(client, "POST", f"{AUTH}/refresh", json={"refresh_token": token}, anonymous=True)


def logout(client: Any, tokens: dict[str, Any]) -> Any:
    return send(client, "POST", f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]}, token=tokens["access_token"])


def assert_revoked(response: Any) -> None:
    assert_error(response, 401, "SESSION_REVOKED")


@pytest.fixture(scope="module")
async def db(databases) -> str:
    return await databases.create("sessions")


@pytest.fixture(scope="module")
async def client(db, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    app = create_app(make_settings(db, tmp_path_factory.mktemp("charter-sessions"), jwt_secret=SECRET))
    async with AsyncTestClient(app=app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {await admin_token(test_client)}"
        yield test_client


@pytest.fixture(scope="module")
async def person(client):
    return await account_with(client, ("viewer", None), prefix="session-person")


class TestTheAccessTokenNamesItsSignIn:
    async def test_sid_is_the_sign_in_and_survives_refresh(self, client, person) -> None:
        first = await login(client, person.email)
        second = await login(client, person.email)
        rotated = (await refresh(client, first["refresh_token"])).json()

        assert claims_of(first["access_token"])["sid"] == claims_of(rotated["access_token"])["sid"]
        assert claims_of(first["access_token"])["sid"] != claims_of(second["access_token"])["sid"]


class TestLogout:
    async def test_the_same_access_token_answers_401_at_once(self, client, person) -> None:
        tokens = await login(client, person.email)
        assert (await me(client, tokens["access_token"])).status_code == 200

        response = await logout(client, tokens)

        assert response.status_code == 200, response.text
        assert_revoked(await me(client, tokens["access_token"]))
        assert_revoked(await send(client, "GET", "/api/v1/plugins", token=tokens["access_token"]))
        assert_error(await refresh(client, tokens["refresh_token"]), 401, "REFRESH_TOKEN_REVOKED")

    async def test_every_access_token_of_the_sign_in_dies_not_only_the_one_presented(self, client, person) -> None:
        tokens = await login(client, person.email)
        rotated = (await refresh(client, tokens["refresh_token"])).json()

        assert (await logout(client, rotated)).status_code == 200

        assert_revoked(await me(client, tokens["access_token"]))
        assert_revoked(await me(client, rotated["access_token"]))

    async def test_other_sign_ins_of_the_same_user_go_on(self, client, person) -> None:
        leaving, staying = await login(client, person.email), await login(client, person.email)

        assert (await logout(client, leaving)).status_code == 200

        assert (await me(client, staying["access_token"])).status_code == 200
        assert (await refresh(client, staying["refresh_token"])).status_code == 200

    async def test_logging_out_twice_is_refused_as_signed_out(self, client, person) -> None:
        tokens = await login(client, person.email)
        assert (await logout(client, tokens)).status_code == 200

        assert_revoked(await logout(client, tokens))


class TestRefreshTokenReuse:
    async def test_both_access_tokens_of_the_stolen_family_answer_401(self, client, person) -> None:
        tokens = await login(client, person.email)
        rotated = (await refresh(client, tokens["refresh_token"])).json()
        assert (await me(client, rotated["access_token"])).status_code == 200

        reused = await refresh(client, tokens["refresh_token"])

        assert_error(reused, 401, "REFRESH_TOKEN_REUSED")
        assert_revoked(await me(client, tokens["access_token"]))
        assert_revoked(await me(client, rotated["access_token"]))

    async def test_another_sign_in_is_not_touched(self, client, person) -> None:
        tokens, other = await login(client, person.email), await login(client, person.email)
        await refresh(client, tokens["refresh_token"])

        assert_error(await refresh(client, tokens["refresh_token"]), 401, "REFRESH_TOKEN_REUSED")

        assert (await me(client, other["access_token"])).status_code == 200


class TestOtherReplicas:
    @pytest.mark.parametrize("how", ["logout", "reuse"])
    async def test_refuse_the_sign_ins_access_tokens_within_about_a_second(self, client, db, person, tmp_path_factory, how) -> None:
        replica_app = create_app(make_settings(db, tmp_path_factory.mktemp("charter-sessions-replica"), jwt_secret=SECRET))
        async with AsyncTestClient(app=replica_app) as replica:
            tokens = await login(client, person.email)
            assert (await me(replica, tokens["access_token"])).status_code == 200  # cached there as valid

            if how == "logout":
                assert (await logout(client, tokens)).status_code == 200
            else:
                await refresh(client, tokens["refresh_token"])
                assert_error(await refresh(client, tokens["refresh_token"]), 401, "REFRESH_TOKEN_REUSED")
            revoked_at = time.monotonic()

            while (answer := await me(replica, tokens["access_token"])).status_code == 200:
                assert time.monotonic() - revoked_at < 2.0, "the other replica still accepts the token"
                await asyncio.sleep(0.05)
            assert_revoked(answer)


# -- open event streams ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def live(databases, nats_url, jetstream_streams, tmp_path_factory) -> AsyncIterator[LiveServer]:
    """A real server with the event hub; heartbeats every 30 s, so a stream that ends within a second
    was ended by the revocation, not by a periodic check."""
    stream = jetstream_streams.new("sessions")
    settings = make_settings(
        await databases.create("sessions-live"),
        tmp_path_factory.mktemp("charter-sessions-live"),
        nats_url=nats_url,
        nats_stream=stream.name,
        nats_subject_prefix=stream.prefix,
        sse_heartbeat=30.0,
    )
    async with live_server(settings) as served:
        yield served


@pytest.fixture
async def api(live) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=10) as http:
        yield http


async def seconds_to_end(stream: SSE, started: float, timeout: float = 5.0) -> float:
    """Read until the server ends the stream; seconds from `started` (a monotonic time) until it did."""
    comments = []
    async with asyncio.timeout(timeout):
        while (frame := await stream.next_frame()) is not None:
            comments += frame.comments
    assert any("access changed" in c for c in comments), comments
    return time.monotonic() - started


class TestOpenStreams:
    async def test_end_within_a_second_of_logout(self, api) -> None:
        reader = await account_with(api, ("auditor", None), prefix="session-sse-logout")
        async with sse(api, headers=reader.headers) as stream:
            response = await logout(api, reader.tokens)
            assert response.status_code == 200, response.text

            assert await seconds_to_end(stream, time.monotonic()) < 1.0

    async def test_end_within_a_second_of_a_refresh_token_reuse(self, api) -> None:
        reader = await account_with(api, ("auditor", None), prefix="session-sse-reuse")
        async with sse(api, headers=reader.headers) as stream:
            await refresh(api, reader.refresh_token)
            reused = await refresh(api, reader.refresh_token)
            assert_error(reused, 401, "REFRESH_TOKEN_REUSED")

            assert await seconds_to_end(stream, time.monotonic()) < 1.0

    async def test_end_within_a_second_of_a_revoked_role(self, api) -> None:
        reader = await account_with(api, ("auditor", None), prefix="session-sse-role")
        async with sse(api, headers=reader.headers) as stream:
            await revoke(api, reader.id, "auditor")

            assert await seconds_to_end(stream, time.monotonic()) < 1.0

    async def test_another_sign_ins_stream_goes_on(self, api, live) -> None:
        reader = await account_with(api, ("auditor", None), prefix="session-sse-other")
        other = await login(api, reader.email)
        kind = probe_type()
        async with sse(api, headers=reader.headers) as leaving, sse(
            api, {"stream_type": kind}, headers={"Authorization": f"Bearer {other['access_token']}"}
        ) as staying:
            assert (await logout(api, reader.tokens)).status_code == 200
            await seconds_to_end(leaving, time.monotonic())

            stream_id = await append_probe(live.runtime, kind)

            await staying.events_until(count_of(stream_id, 1))

    async def test_a_revoked_sign_in_cannot_open_a_stream(self, api) -> None:
        reader = await account_with(api, ("auditor", None), prefix="session-sse-reopen")
        assert (await logout(api, reader.tokens)).status_code == 200

        response = await api.get("/api/v1/events/stream", headers=reader.headers)

        assert_revoked(response)


async def test_deactivating_a_user_ends_their_stream_soon(api) -> None:
    """Deactivation reaches open streams through the access read model (the guard's refresh, every
    second, after the projection): soon, if not within the second of a logout."""
    reader = await account_with(api, ("auditor", None), prefix="session-sse-deactivated")
    async with sse(api, headers=reader.headers) as stream:
        response = await api.post(f"{USERS}/{reader.id}/deactivate", json={"reason": "left"})
        assert response.status_code == 200, response.text

        assert await seconds_to_end(stream, time.monotonic()) < 3.0
