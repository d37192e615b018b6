"""What every plugin write honours: If-Match (optimistic concurrency) and Idempotency-Key (safe retries)."""

from __future__ import annotations

import asyncio
import uuid

from tests.e2e.plugin_kit import (
    PLUGINS,
    archive,
    assert_error,
    assert_written,
    current,
    event_count,
    install,
    installed,
    manifest,
    nothing_written,
    unique_id,
    update,
    upload,
)


def key() -> str:
    return f"e2e-{uuid.uuid4()}"


class TestIfMatch:
    async def test_a_write_naming_the_current_version_succeeds(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        etag = (await client.get(f"{PLUGINS}/{pid}", params={"consistent": "true"})).headers["etag"]

        response = await client.post(f"{PLUGINS}/{pid}/enable", headers={"If-Match": etag})

        assert assert_written(response, pid)["stream_version"] == 2

    async def test_a_stale_version_is_refused_with_the_current_one(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.post(f"{PLUGINS}/{pid}/enable")

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/disable", headers={"If-Match": '"1"'})

        error = assert_error(response, 412, "PRECONDITION_FAILED")
        assert (error["details"]["expected_version"], error["details"]["current_version"]) == (1, 2)
        assert response.headers["etag"] == '"2"'
        assert (await current(client, pid))["status"] == "enabled"

    async def test_a_weak_etag_is_understood(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        assert_written(await client.post(f"{PLUGINS}/{pid}/restart", headers={"If-Match": 'W/"1"'}), pid)

    async def test_a_star_matches_any_version(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        await client.post(f"{PLUGINS}/{pid}/restart")

        assert_written(await client.post(f"{PLUGINS}/{pid}/restart", headers={"If-Match": "*"}), pid)

    async def test_a_malformed_if_match_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/restart", headers={"If-Match": "version one"})

        assert_error(response, 400, "VALIDATION_FAILED", field="If-Match")

    async def test_is_honoured_by_update_configuration_and_uninstall(self, client, database_url) -> None:
        pid = unique_id()
        schema = {"type": "object", "properties": {"level": {"type": "integer"}}}
        await installed(client, manifest(pid, config_schema=schema))
        await client.post(f"{PLUGINS}/{pid}/restart")
        stale = {"If-Match": '"1"'}

        async with nothing_written(database_url, pid):
            responses = [
                await update(client, pid, manifest(pid, "2.0.0", config_schema=schema), headers=stale),
                await client.put(f"{PLUGINS}/{pid}/config", json={"config": {"level": 1}}, headers=stale),
                await client.post(f"{PLUGINS}/{pid}/rollback", headers=stale),
                await client.delete(f"{PLUGINS}/{pid}", headers=stale),
            ]

        for response in responses:
            assert_error(response, 412, "PRECONDITION_FAILED")

    async def test_install_of_a_new_plugin_accepts_version_zero(self, client) -> None:
        pid = unique_id()

        assert_written(await install(client, manifest(pid), headers={"If-Match": '"0"'}), pid, 201)

    async def test_concurrent_writers_with_the_same_version_exactly_one_wins(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        headers = {"If-Match": '"1"'}

        responses = await asyncio.gather(
            *(client.post(f"{PLUGINS}/{pid}/restart", json={"reason": f"r{i}"}, headers=headers) for i in range(5))
        )

        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) == 1, [r.text for r in responses]
        for response in responses:
            if response.status_code != 200:
                assert response.status_code in (409, 412), response.text
                assert response.json()["error"]["code"] in ("VERSION_CONFLICT", "PRECONDITION_FAILED")
        assert await event_count(database_url, pid) == 2

    async def test_concurrent_writers_without_if_match_lose_no_event(self, client, database_url) -> None:
        """Every writer either appends its event or is told of the conflict: nothing is lost or doubled."""
        pid = unique_id()
        await installed(client, manifest(pid))

        responses = await asyncio.gather(*(client.post(f"{PLUGINS}/{pid}/restart") for _ in range(6)))

        won = [r for r in responses if r.status_code == 200]
        for response in responses:
            if response.status_code != 200:
                assert_error(response, 409, "VERSION_CONFLICT")
        assert won
        assert sorted(r.json()["stream_version"] for r in won) == list(range(2, 2 + len(won)))
        assert await event_count(database_url, pid) == 1 + len(won)
        assert (await current(client, pid))["restarts"] == len(won)


class TestIdempotencyKey:
    async def test_a_retried_install_answers_the_first_result_without_writing_again(self, client, database_url) -> None:
        pid, k = unique_id(), key()
        content = archive(manifest(pid))
        first = await install(client, content, headers={"Idempotency-Key": k})
        written = assert_written(first, pid, 201)

        async with nothing_written(database_url, pid):
            retry = await install(client, content, headers={"Idempotency-Key": k})

        assert retry.status_code in (200, 201), retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        body = retry.json()
        assert (body["stream_version"], body["position"], body["duplicate"]) == (
            written["stream_version"],
            written["position"],
            True,
        )
        assert retry.headers["etag"] == first.headers["etag"]

    async def test_a_retry_after_later_writes_still_answers_the_first_result(self, client, database_url) -> None:
        pid, k = unique_id(), key()
        await installed(client, manifest(pid))
        first = assert_written(await client.post(f"{PLUGINS}/{pid}/restart", headers={"Idempotency-Key": k}), pid)
        await client.post(f"{PLUGINS}/{pid}/reload")

        async with nothing_written(database_url, pid):
            retry = await client.post(f"{PLUGINS}/{pid}/restart", headers={"Idempotency-Key": k})

        assert retry.status_code == 200
        assert retry.json()["stream_version"] == first["stream_version"] == 2
        assert retry.headers["idempotent-replayed"] == "true"
        assert (await current(client, pid))["restarts"] == 1

    async def test_a_first_answer_is_not_marked_replayed(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await client.post(f"{PLUGINS}/{pid}/enable", headers={"Idempotency-Key": key()})

        assert response.status_code == 200
        assert "idempotent-replayed" not in response.headers
        assert response.json()["duplicate"] is False

    async def test_a_key_reused_with_another_body_is_refused(self, client, database_url) -> None:
        pid, k = unique_id(), key()
        await installed(client, manifest(pid), headers={"Idempotency-Key": k})

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid, "9.9.9"), headers={"Idempotency-Key": k})

        error = assert_error(response, 422, "IDEMPOTENCY_KEY_REUSED")
        assert error["details"]["key"] == k

    async def test_a_key_reused_for_another_command_is_refused(self, client, database_url) -> None:
        pid, k = unique_id(), key()
        await installed(client, manifest(pid))
        await client.post(f"{PLUGINS}/{pid}/restart", headers={"Idempotency-Key": k})

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/reload", headers={"Idempotency-Key": k})

        assert_error(response, 422, "IDEMPOTENCY_KEY_REUSED")

    async def test_a_key_reused_for_another_plugin_is_refused(self, client, database_url) -> None:
        first, second, k = unique_id(), unique_id(), key()
        await installed(client, manifest(first))
        await installed(client, manifest(second))
        await client.post(f"{PLUGINS}/{first}/restart", headers={"Idempotency-Key": k})

        async with nothing_written(database_url, second):
            response = await client.post(f"{PLUGINS}/{second}/restart", headers={"Idempotency-Key": k})

        assert_error(response, 422, "IDEMPOTENCY_KEY_REUSED")

    async def test_a_key_longer_than_200_characters_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/restart", headers={"Idempotency-Key": "k" * 201})

        assert_error(response, 400, "VALIDATION_FAILED", field="Idempotency-Key")

    async def test_concurrent_retries_of_one_install_write_it_once(self, client, database_url) -> None:
        pid, k = unique_id(), key()
        content = archive(manifest(pid))

        responses = await asyncio.gather(
            *(client.post(f"{PLUGINS}/install", files=upload(content), headers={"Idempotency-Key": k}) for _ in range(4))
        )

        assert await event_count(database_url, pid) == 1
        ok = [r for r in responses if r.status_code in (200, 201)]
        assert ok, [r.text for r in responses]
        assert {r.json()["stream_version"] for r in ok} == {1}
        for response in responses:
            if response not in ok:  # a retry racing the first attempt may be told of the conflict instead
                assert_error(response, 409, "VERSION_CONFLICT")


class TestReadYourWrites:
    async def test_a_read_naming_the_writes_position_sees_the_write(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        write = await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "audit"})
        read = await client.get(f"{PLUGINS}/{pid}", headers={"Charter-Min-Position": write.headers["charter-position"]})

        assert read.status_code == 200
        assert (read.json()["status"], read.json()["disabled_reason"]) == ("disabled", "audit")
        assert read.headers["etag"] == write.headers["etag"]

    async def test_a_consistent_list_sees_a_fresh_install(self, client) -> None:
        category = unique_id("cat")
        pid = unique_id()
        await installed(client, manifest(pid, category=category))

        page = (await client.get(PLUGINS, params={"category": category, "consistent": "true"})).json()

        assert [item["id"] for item in page["items"]] == [pid]

    async def test_a_position_that_is_not_a_number_is_refused(self, client) -> None:
        response = await client.get(PLUGINS, headers={"Charter-Min-Position": "latest"})

        assert_error(response, 400, "VALIDATION_FAILED", field="Charter-Min-Position")
