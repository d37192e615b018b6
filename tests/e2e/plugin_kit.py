"""Helpers for the plugin e2e tests: manifests, archives, installs, error checks and event counts."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from httpx import Response

PLUGINS = "/api/v1/plugins"
MASK = "********"


def unique_id(prefix: str = "e2e") -> str:
    """A plugin id no other test uses (the e2e tests share one database)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def manifest(plugin_id: str, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    return {"id": plugin_id, "name": f"Plugin {plugin_id}", "version": version, **fields}


def archive(content: dict[str, Any] | str | bytes, name: str = "charter-plugin.json", **extra: str) -> bytes:
    """A zip with the manifest (a dict, or raw text for malformed cases) at its root, plus `extra` files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, content if isinstance(content, (str, bytes)) else json.dumps(content))
        for path, text in extra.items():
            zf.writestr(path, text)
    return buffer.getvalue()


def upload(content: bytes, filename: str = "plugin.zip") -> dict[str, Any]:
    return {"archive": (filename, content, "application/zip")}


async def install(
    client: Any,
    plugin: dict[str, Any] | bytes,
    *,
    config: dict[str, Any] | str | None = None,
    auto_enable: bool | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """POST /plugins/install with an uploaded archive (a manifest dict is zipped first)."""
    content = plugin if isinstance(plugin, bytes) else archive(plugin)
    data: dict[str, str] = {}
    if config is not None:
        data["config"] = config if isinstance(config, str) else json.dumps(config)
    if auto_enable is not None:
        data["auto_enable"] = "true" if auto_enable else "false"
    return await client.post(f"{PLUGINS}/install", files=upload(content), data=data, headers=headers or {})


async def installed(client: Any, plugin: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Install and assert it worked; answers the write's body."""
    response = await install(client, plugin, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


async def update(client: Any, plugin_id: str, plugin: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> Response:
    content = plugin if isinstance(plugin, bytes) else archive(plugin)
    return await client.put(f"{PLUGINS}/{plugin_id}", files=upload(content), headers=headers or {})


async def details(client: Any, plugin_id: str) -> Response:
    return await client.get(f"{PLUGINS}/{plugin_id}", params={"consistent": "true"})


async def current(client: Any, plugin_id: str) -> dict[str, Any]:
    response = await details(client, plugin_id)
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The response is the error envelope with this status and code (and names `field` when given)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, error
    assert error["code"] == code, error
    assert error["message"], error
    assert error["request_id"] == response.headers["x-request-id"], error
    if field is not None:
        assert error["details"].get("field") == field, error
    return error


def assert_written(response: Response, plugin_id: str, status: int = 200) -> dict[str, Any]:
    """A write's answer: ids, the new version (also the ETag) and the global position."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["id"] == plugin_id
    assert body["stream_id"] == f"plugin:{plugin_id}"
    assert isinstance(body["stream_version"], int) and body["stream_version"] >= 1
    assert response.headers["etag"] == f'"{body["stream_version"]}"'
    assert response.headers["charter-position"] == str(body["position"])
    return body


async def event_count(database_url: str, plugin_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", f"plugin:{plugin_id}")
    finally:
        await conn.close()


async def event_rows(database_url: str, plugin_id: str) -> list[dict[str, Any]]:
    """The stream's events, payload and metadata as JSON text (exactly what an auditor reads by SQL)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT stream_version, event_type, payload::text AS payload, metadata::text AS metadata"
            " FROM events WHERE stream_id = $1 ORDER BY stream_version",
            f"plugin:{plugin_id}",
        )
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def event_types(database_url: str, plugin_id: str) -> list[str]:
    return [row["event_type"] for row in await event_rows(database_url, plugin_id)]


async def last_payload(database_url: str, plugin_id: str) -> dict[str, Any]:
    rows = await event_rows(database_url, plugin_id)
    return json.loads(rows[-1]["payload"])


@asynccontextmanager
async def nothing_written(database_url: str, *plugin_ids: str) -> AsyncIterator[None]:
    """Assert that the block appends no event to the streams of `plugin_ids`."""
    before = {pid: await event_count(database_url, pid) for pid in plugin_ids}
    yield
    after = {pid: await event_count(database_url, pid) for pid in plugin_ids}
    assert after == before, f"events were written: {before} -> {after}"
