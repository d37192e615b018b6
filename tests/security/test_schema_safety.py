"""Hostile plugin config schemas against a real `charter serve` process: nothing fetched, no
catastrophic backtracking, validation bounded in time off the event loop, /health answering throughout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.plugin_kit import PLUGINS, assert_error, install, manifest, unique_id
from tests.security.charter_process import Served, charter_process

TIMEOUT = 2.0  # CHARTER_SCHEMA_VALIDATION_TIMEOUT of the server under test
HEALTH_WITHIN = 0.5


@pytest.fixture(scope="module")
async def served(databases, nats_url, jetstream_streams, tmp_path_factory) -> AsyncIterator[Served]:
    async with charter_process(
        await databases.create("schema"),
        nats_url,
        jetstream_streams.new("schema"),
        tmp_path_factory.mktemp("charter-schema"),
        schema_validation_timeout=str(TIMEOUT),
    ) as server:
        yield server


@pytest.fixture
async def api(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=30) as client:
        yield client


class Listener:
    """A local TCP server counting the connections it gets: a `$ref` to it must never connect."""

    def __init__(self) -> None:
        self.connections = 0

    async def __aenter__(self) -> "Listener":
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()
        await self.server.wait_closed()


async def event_count(served: Served) -> int:
    import asyncpg

    conn = await asyncpg.connect(served.database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM events WHERE stream_type = 'plugin'")
    finally:
        await conn.close()


def schema_with(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": spec}}


class TestReferencesAreNeverFetched:
    async def test_an_http_reference_to_a_local_listener_is_refused_without_a_connection(self, api, served) -> None:
        before = await event_count(served)
        async with Listener() as listener:
            for ref in (f"http://127.0.0.1:{listener.port}/x", f"http://127.0.0.1:{listener.port}/x#/defs/a"):
                response = await install(api, manifest(unique_id(), config_schema=schema_with({"$ref": ref})), config={"x": 1})
                assert_error(response, 400, "MANIFEST_INVALID", field="manifest.config_schema.properties.x.$ref")
            relative = {"$id": f"http://127.0.0.1:{listener.port}/root.json", **schema_with({"$ref": "other.json"})}
            response = await install(api, manifest(unique_id(), config_schema=relative), config={"x": 1})
            assert_error(response, 400, "MANIFEST_INVALID", field="manifest.config_schema.properties.x.$ref")

        assert listener.connections == 0
        assert await event_count(served) == before

    async def test_a_file_reference_is_refused_and_nothing_of_the_file_is_shown(self, api) -> None:
        response = await install(api, manifest(unique_id(), config_schema=schema_with({"$ref": "file:///etc/passwd"})))

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.config_schema.properties.x.$ref")
        assert "root:" not in response.text


class TestRegularExpressions:
    async def test_a_redos_pattern_answers_at_once(self, api) -> None:
        schema = schema_with({"type": "string", "pattern": "^(a+)+$"})

        started = time.perf_counter()
        response = await install(api, manifest(unique_id(), config_schema=schema), config={"x": "a" * 50 + "!"})

        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.x")
        assert time.perf_counter() - started < TIMEOUT, "the pattern ran on a backtracking engine"

    async def test_redos_pattern_properties_answer_at_once(self, api) -> None:
        schema = {"type": "object", "patternProperties": {"^(a|aa)+$": {"type": "integer"}}, "additionalProperties": False}

        started = time.perf_counter()
        response = await install(api, manifest(unique_id(), config_schema=schema), config={"a" * 60 + "!": 1})

        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR")
        assert time.perf_counter() - started < TIMEOUT

    @pytest.mark.parametrize(
        ("schema", "field"),
        [
            (schema_with({"type": "string", "pattern": "(a)\\1"}), "manifest.config_schema.properties.x.pattern"),
            (schema_with({"type": "string", "pattern": "^(?!admin).*"}), "manifest.config_schema.properties.x.pattern"),
            ({"patternProperties": {"(?<=a)b": {}}}, "manifest.config_schema.patternProperties"),
        ],
    )
    async def test_a_pattern_re2_cannot_compile_is_refused_at_install(self, api, schema, field) -> None:
        assert_error(await install(api, manifest(unique_id(), config_schema=schema)), 400, "MANIFEST_INVALID", field=field)


def exponential(levels: int = 40) -> dict[str, Any]:
    """A few hundred bytes asking for 2**levels evaluations (allOf through $ref): no size cap stops it."""
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "object"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def exponential_any_of(levels: int = 30) -> dict[str, Any]:
    """anyOf where the first branch always fails at the bottom, so every branch is explored."""
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "array"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


class TestValidationIsBounded:
    @pytest.mark.parametrize("schema", [exponential(), exponential_any_of()], ids=["allOf", "anyOf"])
    async def test_an_exponential_schema_is_stopped_at_the_time_limit_while_health_answers(self, api, served, schema) -> None:
        before = await event_count(served)
        started = time.perf_counter()
        hostile = asyncio.create_task(install(api, manifest(unique_id(), config_schema=schema), config={}))
        delays = []
        async with httpx.AsyncClient(base_url=served.url, timeout=5) as probe:
            while not hostile.done():
                sent = time.perf_counter()
                assert (await probe.get("/health")).status_code == 200
                delays.append(time.perf_counter() - sent)
        response = await hostile

        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config")
        assert "longer than the limit" in response.json()["error"]["message"]
        assert TIMEOUT <= time.perf_counter() - started < TIMEOUT + 10
        assert len(delays) >= 3 and max(delays) < HEALTH_WITHIN, delays
        assert await event_count(served) == before

    async def test_the_server_validates_normally_after_a_worker_was_killed(self, api) -> None:
        await install(api, manifest(unique_id(), config_schema=exponential()), config={})
        pid = unique_id()

        response = await install(api, manifest(pid, config_schema=schema_with({"type": "integer"})), config={"x": 3})

        assert response.status_code == 201, response.text

    async def test_a_configure_with_a_hostile_stored_schema_is_stopped_too(self, api) -> None:
        """A schema that is slow only for some configurations passes install, then is bounded on configure."""
        pid = unique_id()
        slow = {"type": "object", "$defs": exponential()["$defs"], "properties": {"x": {"$ref": "#/$defs/d0"}}}
        assert (await install(api, manifest(pid, config_schema=slow), config={})).status_code == 201

        response = await api.put(f"{PLUGINS}/{pid}/config", json={"config": {"x": {}}})

        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config")

    async def test_huge_unique_items_arrays_are_checked_in_linear_time(self, api) -> None:
        schema = schema_with({"type": "array", "uniqueItems": True, "minItems": 10**15})
        items = [{"n": i} for i in range(20_000)]  # pairwise comparison: 2e8 deep comparisons, minutes

        started = time.perf_counter()
        response = await install(api, manifest(unique_id(), config_schema=schema), config={"x": items})

        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.x")
        assert "minItems" in response.text or "too short" in response.text
        assert time.perf_counter() - started < TIMEOUT + 5

    async def test_a_schema_too_deep_or_too_big_is_refused_naming_it(self, api) -> None:
        deep: dict[str, Any] = {"type": "object"}
        for _ in range(200):
            deep = {"properties": {"a": deep}}
        wide = {"properties": {f"p{i}": {"type": "integer"} for i in range(5000)}}

        for schema in (deep, wide):
            response = await install(api, manifest(unique_id(), config_schema=schema))
            assert_error(response, 400, "MANIFEST_INVALID", field="manifest.config_schema")
