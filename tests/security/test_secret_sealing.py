"""A planted secret, through every schema shape that can mark it, never shows in clear anywhere Charter
writes: HTTP responses (bodies and headers), the server's log output, any table of the database (the
`events` log, read models, everything else) or the JetStream stream. Also: sealed fields stay sealed
across updates and rollbacks until an administrator declassifies them.

The server is a real `charter serve` process (see charter_process.py) logging at debug level.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.access_kit import account_with
from tests.e2e.plugin_kit import MASK, PLUGINS, assert_error, install, manifest, unique_id, update
from tests.security.charter_process import Served, charter_process, jetstream_messages

SPEC = {"type": "string", "pattern": "^PLANTED-[0-9a-f]{32}$"}
SECRET = {**SPEC, "secret": True}
WRITE_ONLY = {**SPEC, "writeOnly": True}
PASSWORD = {**SPEC, "format": "password"}

Config = Callable[[str], dict[str, Any]]

# name: (schema marking the secret, the same schema no longer marking it, config holding a value there)
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any], Config]] = {
    "secret: true": ({"properties": {"k": SECRET}}, {"properties": {"k": SPEC}}, lambda v: {"k": v}),
    "writeOnly": ({"properties": {"k": WRITE_ONLY}}, {"properties": {"k": SPEC}}, lambda v: {"k": v}),
    "format: password": ({"properties": {"k": PASSWORD}}, {"properties": {"k": SPEC}}, lambda v: {"k": v}),
    "$ref/$defs": (
        {"$defs": {"pw": SECRET}, "properties": {"db": {"type": "object", "properties": {"password": {"$ref": "#/$defs/pw"}}}}},
        {"$defs": {"pw": SPEC}, "properties": {"db": {"type": "object", "properties": {"password": {"$ref": "#/$defs/pw"}}}}},
        lambda v: {"db": {"password": v, "host": "db.local"}},
    ),
    "items": (
        {"properties": {"servers": {"type": "array", "items": {"type": "object", "properties": {"password": SECRET}}}}},
        {"properties": {"servers": {"type": "array", "items": {"type": "object", "properties": {"password": SPEC}}}}},
        lambda v: {"servers": [{"name": "a", "password": v}]},
    ),
    "prefixItems": (
        {"properties": {"pair": {"type": "array", "prefixItems": [{"type": "string"}, SECRET]}}},
        {"properties": {"pair": {"type": "array", "prefixItems": [{"type": "string"}, SPEC]}}},
        lambda v: {"pair": ["user", v]},
    ),
    "additionalProperties": (
        {"properties": {"tokens": {"type": "object", "additionalProperties": SECRET}}},
        {"properties": {"tokens": {"type": "object", "additionalProperties": SPEC}}},
        lambda v: {"tokens": {"github": v}},
    ),
    "patternProperties": (
        {"properties": {"env": {"type": "object", "patternProperties": {"^SECRET_": SECRET}}}},
        {"properties": {"env": {"type": "object", "patternProperties": {"^SECRET_": SPEC}}}},
        lambda v: {"env": {"SECRET_KEY": v, "PLAIN": "visible"}},
    ),
    "allOf": ({"allOf": [{"properties": {"k": SECRET}}]}, {"allOf": [{"properties": {"k": SPEC}}]}, lambda v: {"k": v}),
    "anyOf": (
        {"properties": {"k": {"anyOf": [{"type": "integer"}, SECRET]}}},
        {"properties": {"k": {"anyOf": [{"type": "integer"}, SPEC]}}},
        lambda v: {"k": v},
    ),
    "oneOf": (
        {"properties": {"k": {"oneOf": [{"type": "integer"}, SECRET]}}},
        {"properties": {"k": {"oneOf": [{"type": "integer"}, SPEC]}}},
        lambda v: {"k": v},
    ),
    "if/then": (
        {"if": {"properties": {"mode": {"const": "a"}}}, "then": {"properties": {"k": SECRET}}, "else": {"properties": {"k2": SECRET}}},
        {"if": {"properties": {"mode": {"const": "a"}}}, "then": {"properties": {"k": SPEC}}},
        lambda v: {"mode": "a", "k": v},
    ),
    "if/else": (
        {"if": {"properties": {"mode": {"const": "a"}}}, "then": {"properties": {"k": SECRET}}, "else": {"properties": {"k2": SECRET}}},
        {"if": {"properties": {"mode": {"const": "a"}}}, "else": {"properties": {"k2": SPEC}}},
        lambda v: {"mode": "b", "k2": v},
    ),
}


def schema_of(shape: dict[str, Any]) -> dict[str, Any]:
    """The shape in an object schema that also refuses more than 3 properties, so a parent-level error
    (whose jsonschema message quotes the whole object, secret included) can be provoked."""
    return {"type": "object", "maxProperties": 3, **shape}


def planted() -> str:
    return f"PLANTED-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
async def served(databases, nats_url, jetstream_streams, tmp_path_factory) -> AsyncIterator[Served]:
    async with charter_process(
        await databases.create("sealing"), nats_url, jetstream_streams.new("sealing"), tmp_path_factory.mktemp("charter-sealing")
    ) as server:
        yield server


class Recorder:
    """Keeps every response (status line, headers, body) the client received."""

    def __init__(self) -> None:
        self.responses: list[str] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.responses.append(f"{response.request.method} {response.request.url} {response.status_code}\n{headers}\n{response.text}")


async def database_text(database_url: str) -> dict[str, str]:
    """Every row of every table in the database, as text, by table."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'"
        )
        out = {}
        for schema, table in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{schema}"."{table}" t')
            out[f"{schema}.{table}"] = "\n".join(r["row"] for r in rows)
        return out
    finally:
        await conn.close()


async def event_total(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()


def leaks(secrets: list[str], places: dict[str, str]) -> list[str]:
    return [f"{secret} in {where}" for where, text in places.items() for secret in secrets if secret in text]


async def exercise(api: httpx.AsyncClient, peek: httpx.AsyncClient, name: str, secrets: list[str]) -> None:
    """Every path a configuration takes, successful and failing, for one schema shape."""
    marked, unmarked, config = SHAPES[name]
    pid = unique_id("seal")
    first, second = planted(), planted()
    secrets += [first, second]
    bad = first + "!"  # breaks the pattern: the failing value still holds the planted secret
    crowded = {**config(first), "x1": 1, "x2": 2, "x3": 3}  # breaks maxProperties of the object holding it

    for refused_config in (config(bad), crowded):
        response = await install(api, manifest(unique_id("seal"), config_schema=schema_of(marked)), config=refused_config)
        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR")
    response = await install(api, manifest(pid, config_schema=schema_of(marked)), config=config(first))
    assert response.status_code == 201, f"{name}: {response.text}"

    for refused_config in (config(bad), crowded):
        response = await api.put(f"{PLUGINS}/{pid}/config", json={"config": refused_config})
        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR")
    shown = (await api.get(f"{PLUGINS}/{pid}/config", params={"consistent": "true"})).json()
    assert MASK in json.dumps(shown["config"]), f"{name}: {shown}"
    assert (await api.put(f"{PLUGINS}/{pid}/config", json={"config": shown["config"]})).status_code == 200
    assert (await api.put(f"{PLUGINS}/{pid}/config", json={"config": config(second)})).status_code == 200

    # A new version whose schema no longer marks the field, then a rollback: the value stays sealed.
    response = await update(api, pid, manifest(pid, "2.0.0", config_schema=schema_of(unmarked)))
    assert response.status_code == 200, f"{name}: {response.text}"
    after_update = (await api.get(f"{PLUGINS}/{pid}/config", params={"consistent": "true"})).json()
    assert after_update["sealed"] and MASK in json.dumps(after_update["config"]), f"{name}: {after_update}"
    response = await api.put(f"{PLUGINS}/{pid}/config", json={"config": config(bad)})
    assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR")  # classified: the message must still hide it
    assert (await api.post(f"{PLUGINS}/{pid}/rollback", json={})).status_code == 200
    for path in (f"{PLUGINS}/{pid}", f"{PLUGINS}/{pid}/config", PLUGINS, "/api/v1/events"):
        params = {"consistent": "true"} | ({"stream": f"plugin:{pid}"} if path == "/api/v1/events" else {})
        assert (await api.get(path, params=params)).status_code == 200

    opened = (await peek.get(f"{PLUGINS}/{pid}/config", params={"include_secrets": "true", "consistent": "true"})).json()
    assert second in json.dumps(opened["config"]), f"{name}: the sealed value did not survive: {opened}"


async def test_a_planted_secret_never_leaves_in_clear_through_any_schema_shape(served: Served) -> None:
    recorder = Recorder()
    secrets: list[str] = []
    async with (
        httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=30, event_hooks={"response": [recorder]}) as api,
        httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=30) as peek,  # include_secrets: not recorded
    ):
        for name in SHAPES:
            await exercise(api, peek, name, secrets)

    published = await jetstream_messages(served, await event_total(served.database_url))
    places = {
        **{f"response {i}": text for i, text in enumerate(recorder.responses)},
        "server log": served.log_text(),
        **{f"table {name}": text for name, text in (await database_text(served.database_url)).items()},
        **{f"JetStream message {i}": text for i, text in enumerate(published)},
    }

    events_table = next(text for where, text in places.items() if where.endswith(".events"))
    assert len(recorder.responses) >= 16 * len(SHAPES)
    assert any("Plugin.ConfigurationChanged" in text for text in published)
    assert events_table.count("$sealed") >= 4 * len(SHAPES), "the secrets were not stored sealed"
    assert leaks(secrets, places) == []


class TestDeclassify:
    async def test_a_sealed_field_is_declassified_only_by_an_administrator_with_a_reason(self, served: Served) -> None:
        pid, value = unique_id("declassify"), f"no-longer-secret-{uuid.uuid4().hex}"
        async with httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=30) as api:
            marked = {"type": "object", "properties": {"k": {"type": "string", "secret": True}, "n": {"type": "integer"}}}
            assert (await install(api, manifest(pid, config_schema=marked), config={"k": value, "n": 1})).status_code == 201
            url = f"{PLUGINS}/{pid}/config/declassify"

            still = await api.post(url, json={"fields": ["k"], "reason": "published in the docs"})
            assert_error(still, 409, "PLUGIN_DECLASSIFY_REFUSED", field="fields.0")

            unmarked = {"type": "object", "properties": {"k": {"type": "string"}, "n": {"type": "integer"}}}
            assert (await update(api, pid, manifest(pid, "2.0.0", config_schema=unmarked))).status_code == 200
            shown = (await api.get(f"{PLUGINS}/{pid}/config", params={"consistent": "true"})).json()
            assert shown["config"] == {"k": MASK, "n": 1} and shown["sealed"] == ["k"]

            plugin_admin = await account_with(api, ("plugin-admin", None), prefix="pluginadmin")
            forbidden = await api.post(url, json={"fields": ["k"], "reason": "mine"}, headers=plugin_admin.headers)
            assert_error(forbidden, 403, "FORBIDDEN")
            assert_error(await api.post(url, json={"fields": ["n"], "reason": "r"}), 400, "VALIDATION_FAILED", field="fields.0")
            assert_error(await api.post(url, json={"fields": ["k"], "reason": "  "}), 400, "VALIDATION_FAILED", field="reason")
            assert_error(await api.post(url, json={"fields": [], "reason": "r"}), 400, "VALIDATION_FAILED", field="fields")

            done = await api.post(url, json={"fields": ["k"], "reason": "published in the docs"})
            assert done.status_code == 200, done.text

            shown = (await api.get(f"{PLUGINS}/{pid}/config", params={"consistent": "true"})).json()
            assert shown["config"] == {"k": value, "n": 1} and shown["sealed"] == []
            log = (await api.get("/api/v1/events", params={"stream": f"plugin:{pid}", "consistent": "true"})).json()["items"]
        declassified = [e for e in log if e["event_type"] == "Plugin.Declassified"]
        assert len(declassified) == 1
        assert declassified[0]["payload"]["fields"] == ["k"] and declassified[0]["payload"]["reason"] == "published in the docs"
        assert declassified[0]["metadata"]["command"] == "DeclassifyConfig"
        assert declassified[0]["metadata"].get("actor")
