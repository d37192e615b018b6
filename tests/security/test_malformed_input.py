"""Malformed input is a 400 naming the field, never a 500: NUL characters, broken UTF-8, integers beyond
64 bits, deep nesting, control characters in ids. A NUL in one request never fails another's write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.errors import EventNotStorable
from application.ports import AppendResult
from infrastructure.eventlog.eventstore import EventStore, create_pool
from tests.e2e.plugin_kit import PLUGINS, archive, assert_error, install, installed, manifest, nothing_written, unique_id
from tests.integration.test_event_store import new_event, new_stream, request, rows_of

ROLES = "/api/v1/admin/roles"
USERS = "/api/v1/admin/users"


def raw_json(client, method: str, url: str, raw: bytes):
    return client.request(method, url, content=raw, headers={"content-type": "application/json"})


async def asgi_request(app, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> tuple[int, dict]:
    """Straight to the ASGI app: the test client re-encodes header values, so it cannot send broken UTF-8."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver.local"), *headers], "client": ("127.0.0.1", 1), "server": ("testserver.local", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def nested(depth: int) -> bytes:
    return b'{"config": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


class TestNulCharacters:
    async def test_a_nul_in_a_reason_is_refused_naming_it(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "maintenance\u0000now"})

        assert_error(response, 400, "VALIDATION_FAILED", field="reason")

    async def test_a_nul_in_a_config_value_is_refused_naming_it(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.put(f"{PLUGINS}/{pid}/config", json={"config": {"mode": {"name": "a\u0000b"}}})

        assert_error(response, 400, "VALIDATION_FAILED", field="config.mode.name")

    async def test_a_nul_in_a_config_key_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.put(f"{PLUGINS}/{pid}/config", json={"config": {"a\u0000": 1}})

        assert_error(response, 400, "VALIDATION_FAILED", field="config")

    async def test_a_nul_in_the_config_of_an_archive_install_is_refused(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await install(client, manifest(pid), config={"mode": "\u0000"})

        assert_error(response, 400, "VALIDATION_FAILED", field="config.mode")

    async def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await raw_json(client, "POST", f"{PLUGINS}/{pid}/disable", b'{"reason": "C:\\\\u0000"}')

        assert response.status_code == 200, response.text

    async def test_a_nul_in_a_query_parameter_is_refused_naming_it(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await client.delete(f"{PLUGINS}/{pid}?reason=gone%00now")

        assert_error(response, 400, "VALIDATION_FAILED", field="reason")

    async def test_a_nul_in_a_search_is_refused(self, client) -> None:
        response = await client.get(f"{PLUGINS}?search=%00")

        assert_error(response, 400, "VALIDATION_FAILED", field="search")

    async def test_a_nul_in_a_user_name_is_refused(self, client) -> None:
        response = await client.post(
            USERS, json={"email": f"{unique_id('nul')}@charter.test", "password": "a-long-password-1", "full_name": "A\u0000B"}
        )

        assert_error(response, 400, "VALIDATION_FAILED", field="full_name")

    async def test_requests_with_nul_do_not_fail_concurrent_valid_writes(self, client) -> None:
        """20 installs and commands run at once with requests carrying NUL: every valid one is written."""
        targets = [unique_id("busy") for _ in range(10)]
        for pid in targets:
            await installed(client, manifest(pid))
        fresh = [unique_id("fresh") for _ in range(10)]
        bad_target = unique_id("bad")
        await installed(client, manifest(bad_target))

        valid = [install(client, manifest(pid), config={"mode": "fast"}) for pid in fresh] + [
            client.post(f"{PLUGINS}/{pid}/disable", json={"reason": "maintenance"}) for pid in targets
        ]
        hostile = [
            client.post(f"{PLUGINS}/{bad_target}/disable", json={"reason": f"x\u0000{i}"}) for i in range(5)
        ] + [install(client, manifest(unique_id("nul")), config={"mode": "\u0000"}) for _ in range(5)]
        responses = await asyncio.gather(*valid, *hostile)

        assert [r.status_code for r in responses[:10]] == [201] * 10, [r.text for r in responses[:10]]
        assert [r.status_code for r in responses[10:20]] == [200] * 10, [r.text for r in responses[10:20]]
        for response in responses[20:]:
            assert_error(response, 400, "VALIDATION_FAILED")


@pytest.fixture
async def single_writer(database_url: str) -> AsyncIterator[EventStore]:
    """One writer task: everything queued while it commits goes into its next batch."""
    pool = await create_pool(database_url)
    store = EventStore(pool, writers=1)
    await store.start()
    yield store
    await store.stop()
    await pool.close()


class TestTheEventStoreRefusesUnstorableDataAlone:
    """Defence in depth: data PostgreSQL refuses (NUL in jsonb or text) reached the store anyway."""

    @pytest.mark.parametrize(
        "poison",
        [
            {"payload": {"reason": "x\u0000y"}},
            {"metadata": {"correlation_id": "a\u0000b"}},
            {"payload": {"nested": [{"k\u0000": 1}]}},
        ],
        ids=["payload", "metadata", "key"],
    )
    async def test_a_nul_event_fails_alone_and_the_batch_commits(self, single_writer: EventStore, poison) -> None:
        streams = [new_stream("ok") for _ in range(20)]
        requests = [request(s, expected=0) for s in streams]
        bad_stream = new_stream("nul")
        bad = request(bad_stream, expected=0)
        event = bad.events[0]
        bad.events[0] = new_event(bad_stream, 1, poison.get("payload", event.payload), **poison.get("metadata", {}))
        requests.insert(7, bad)

        outcomes = await asyncio.gather(*(single_writer.append(r) for r in requests), return_exceptions=True)

        refused = outcomes.pop(7)
        assert isinstance(refused, EventNotStorable), refused
        assert refused.code == "VALIDATION_FAILED"
        assert all(isinstance(o, AppendResult) for o in outcomes), outcomes
        assert len(await rows_of(single_writer.pool, *streams)) == 20
        assert await rows_of(single_writer.pool, bad_stream) == []

    async def test_several_bad_commands_in_one_batch_are_each_settled(self, single_writer: EventStore) -> None:
        streams = [new_stream("ok") for _ in range(30)]
        requests = [request(s, expected=0) for s in streams]
        bad_streams = [new_stream("nul") for _ in range(3)]
        for i, stream in enumerate(bad_streams):
            bad = request(stream, expected=0)
            bad.events[0] = new_event(stream, 1, {"v": "\u0000"})
            requests.insert(i * 10, bad)

        outcomes = await asyncio.gather(*(single_writer.append(r) for r in requests), return_exceptions=True)

        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(refused) == 3 and all(isinstance(o, EventNotStorable) for o in refused), refused
        assert len(await rows_of(single_writer.pool, *streams)) == 30


class TestBrokenUtf8:
    async def test_in_a_json_body(self, client) -> None:
        response = await raw_json(client, "POST", f"{PLUGINS}/install", b'{"source": "entrypoint", "entrypoint": "\xff\xfe"}')

        assert_error(response, 400, "MALFORMED_JSON", field="body")

    async def test_in_a_multipart_config_field(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid):
            response = await client.post(
                f"{PLUGINS}/install",
                files={"archive": ("p.zip", archive(manifest(pid)), "application/zip"), "config": (None, b'{"mode": "\xff"}')},
            )

        assert_error(response, 400, "VALIDATION_FAILED", field="body")

    async def test_in_a_query_parameter(self, client) -> None:
        response = await client.get(f"{PLUGINS}?search=%FF%FE")

        assert_error(response, 400, "VALIDATION_FAILED", field="search")

    async def test_in_a_path_parameter(self, client) -> None:
        response = await client.get(f"{PLUGINS}/%FF%FE")

        assert_error(response, 400, "VALIDATION_FAILED", field="plugin_id")

    async def test_in_a_header_charter_reads(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        auth = client.headers["authorization"].encode()
        headers = [(b"authorization", auth), (b"x-correlation-id", b"\xff\xfe")]

        status, body = await asgi_request(client.app, "POST", f"{PLUGINS}/{pid}/restart", headers)

        assert (status, body["error"]["code"], body["error"]["details"]["field"]) == (400, "VALIDATION_FAILED", "X-Correlation-Id")


class TestIntegersBeyond64Bits:
    async def test_in_a_config_value(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await raw_json(client, "PUT", f"{PLUGINS}/{pid}/config", b'{"config": {"n": [1, 18446744073709551616]}}')

        assert_error(response, 400, "VALIDATION_FAILED", field="config.n[1]")

    async def test_the_largest_64_bit_integers_are_accepted(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await raw_json(
            client, "PUT", f"{PLUGINS}/{pid}/config", b'{"config": {"max": 9223372036854775807, "min": -9223372036854775808}}'
        )

        assert response.status_code == 200, response.text

    @pytest.mark.parametrize(
        ("url", "field"),
        [
            (f"{PLUGINS}?skip=99999999999999999999", "skip"),
            (f"{PLUGINS}?limit=-99999999999999999999", "limit"),
            ("/api/v1/events?after_position=9223372036854775808", "after_position"),
            (f"/api/v1/events?skip={'9' * 5000}", "skip"),
        ],
    )
    async def test_in_a_query_parameter(self, client, url: str, field: str) -> None:
        response = await client.get(url)

        assert_error(response, 400, "VALIDATION_FAILED", field=field)


class TestDeepNesting:
    async def test_a_config_nested_deeper_than_64_levels_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        async with nothing_written(database_url, pid):
            response = await raw_json(client, "PUT", f"{PLUGINS}/{pid}/config", nested(70))

        error = assert_error(response, 400, "VALIDATION_FAILED")
        assert error["details"]["field"].startswith("config.a")

    async def test_nesting_that_stops_the_decoder_is_refused(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await raw_json(client, "PUT", f"{PLUGINS}/{pid}/config", nested(100_000))

        assert_error(response, 400, "VALIDATION_FAILED", field="body")

    async def test_a_config_nested_within_the_limit_is_accepted(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))

        response = await raw_json(client, "PUT", f"{PLUGINS}/{pid}/config", nested(60))

        assert response.status_code == 200, response.text

    async def test_a_json_body_over_a_mebibyte_is_too_large(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid))
        big = json.dumps({"config": {"blob": "x" * (1024 * 1024)}}).encode()

        response = await raw_json(client, "PUT", f"{PLUGINS}/{pid}/config", big)

        assert_error(response, 413, "PAYLOAD_TOO_LARGE", field="body")


class TestControlCharactersInIds:
    async def test_a_plugin_id_with_a_newline_in_the_manifest(self, client, database_url) -> None:
        pid = unique_id()

        async with nothing_written(database_url, pid, f"{pid}\n"):
            response = await install(client, manifest(f"{pid}\n"))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.id")

    async def test_a_dependency_id_with_a_newline(self, client) -> None:
        response = await install(client, manifest(unique_id(), dependencies={"base\n": ">=1"}))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.dependencies.base\n")

    @pytest.mark.parametrize("char", ["%0A", "%0D", "%09", "%1B", "%7F"])
    async def test_a_plugin_id_in_the_path(self, client, char: str) -> None:
        response = await client.post(f"{PLUGINS}/plugin{char}x/enable")

        assert_error(response, 400, "VALIDATION_FAILED", field="plugin_id")

    async def test_a_role_name_with_a_newline(self, client) -> None:
        response = await client.post(ROLES, json={"name": "ops\n", "permissions": ["plugins:read"]})

        assert_error(response, 400, "VALIDATION_FAILED", field="name")

    async def test_a_role_in_the_path_with_a_newline(self, client) -> None:
        me = (await client.get("/api/v1/auth/me")).json()["id"]

        response = await client.post(f"{USERS}/{me}/roles/viewer%0A")

        assert_error(response, 400, "VALIDATION_FAILED", field="role")

    async def test_a_site_id_with_a_newline(self, client) -> None:
        me = (await client.get("/api/v1/auth/me")).json()["id"]

        response = await client.post(f"{USERS}/{me}/roles/viewer?site_id=site-1%0A")

        assert_error(response, 400, "VALIDATION_FAILED", field="site_id")

    async def test_a_site_id_filter_with_a_control_character(self, client) -> None:
        response = await client.get("/api/v1/events?site_id=site%01one")

        assert_error(response, 400, "VALIDATION_FAILED", field="site_id")


# -- fuzzing: hostile text anywhere a few routes take it, and never a 500 ------------------------------

HOSTILE = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.sampled_from(["\x00", "\n", "\r", "\x1b", "\x7f", "\ufffd", "\u202e", "\\", '"', "%", "'", "a"]), max_size=20),
    st.integers().map(str),
)
HOSTILE_BYTES = st.binary(max_size=60)


def hostile_json() -> st.SearchStrategy:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), HOSTILE)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE, inner, max_size=3), max_leaves=12)


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
async def fuzz_target(client) -> str:
    pid = unique_id("fuzz")
    await installed(client, manifest(pid))
    return pid


@FUZZ
@given(reason=HOSTILE)
async def test_fuzz_a_lifecycle_reason_is_never_a_server_error(client, fuzz_target, reason: str) -> None:
    response = await client.post(f"{PLUGINS}/{fuzz_target}/restart", json={"reason": reason})

    assert response.status_code in (200, 400), response.text


@FUZZ
@given(config=hostile_json())
async def test_fuzz_a_configuration_is_never_a_server_error(client, fuzz_target, config) -> None:
    response = await client.put(f"{PLUGINS}/{fuzz_target}/config", json={"config": config})

    assert response.status_code in (200, 400), response.text


@FUZZ
@given(raw=HOSTILE_BYTES)
async def test_fuzz_raw_bodies_are_never_a_server_error(client, fuzz_target, raw: bytes) -> None:
    response = await raw_json(client, "POST", f"{PLUGINS}/{fuzz_target}/reload", raw)

    assert response.status_code < 500, response.text


@FUZZ
@given(name=st.sampled_from(["search", "site_id", "skip", "limit", "sort_by", "tag", "status"]), value=HOSTILE_BYTES)
async def test_fuzz_query_parameters_are_never_a_server_error(client, name: str, value: bytes) -> None:
    from urllib.parse import quote_from_bytes

    response = await client.get(f"{PLUGINS}?{name}={quote_from_bytes(value)}")

    assert response.status_code < 500, response.text


@FUZZ
@given(segment=HOSTILE_BYTES.filter(lambda b: b not in (b"", b".", b"..")))
async def test_fuzz_path_parameters_are_never_a_server_error(client, segment: bytes) -> None:
    from urllib.parse import quote_from_bytes

    response = await client.get(f"{PLUGINS}/{quote_from_bytes(segment, safe='')}/config")

    assert response.status_code < 500, response.text
