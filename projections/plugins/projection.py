"""Read model `plugins`: which plugins are installed, at which version, who depends on whom."""

from __future__ import annotations

from typing import Any

import asyncpg
from packaging.version import Version

from application.ports import StoredEvent

NAME = "plugins"
SCHEMA = "rm_plugins"
VERSION = 1

DDL = """
CREATE TABLE plugins (
    plugin_id       text PRIMARY KEY,
    name            text NOT NULL,
    version         text NOT NULL,
    version_key     numeric[] NOT NULL,
    description     text NOT NULL DEFAULT '',
    author          text NOT NULL DEFAULT '',
    category        text NOT NULL DEFAULT 'general',
    tags            text[] NOT NULL DEFAULT '{}',
    capabilities    text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL,
    enabled         boolean NOT NULL,
    disabled_reason text,
    manifest        jsonb NOT NULL,
    config          jsonb NOT NULL DEFAULT '{}',
    source          jsonb NOT NULL DEFAULT '{}',
    restarts        integer NOT NULL DEFAULT 0,
    reloads         integer NOT NULL DEFAULT 0,
    installed_at    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    stream_version  integer NOT NULL,
    last_position   bigint NOT NULL
);
CREATE INDEX plugins_status ON plugins (status);
CREATE INDEX plugins_category ON plugins (category);
CREATE INDEX plugins_tags ON plugins USING gin (tags);

CREATE TABLE plugin_versions (
    plugin_id     text NOT NULL,
    seq           integer NOT NULL,
    version       text NOT NULL,
    manifest      jsonb NOT NULL,
    source        jsonb NOT NULL,
    installed_at  timestamptz NOT NULL,
    PRIMARY KEY (plugin_id, seq)
);

CREATE TABLE plugin_dependencies (
    plugin_id    text NOT NULL,
    depends_on   text NOT NULL,
    requirement  text NOT NULL,
    PRIMARY KEY (plugin_id, depends_on)
);
CREATE INDEX plugin_dependencies_target ON plugin_dependencies (depends_on);
"""


def version_key(version: str) -> list[int]:
    """Sorts versions by precedence: release numbers, then pre-releases before the final release."""
    v = Version(version)
    pre = [{"a": -3, "b": -2, "rc": -1}[v.pre[0]], v.pre[1]] if v.pre else [0, 0]
    return [*v.release, *([0] * (8 - len(v.release))), *pre, v.post or 0, v.dev if v.dev is not None else 0]


def _plugin_id(event: StoredEvent) -> str:
    return event.stream_id.split(":", 1)[1]


class PluginsProjection:
    name = NAME
    schema = SCHEMA
    version = VERSION
    ddl = DDL

    async def handle(self, conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
        for event in events:
            if event.stream_type == "plugin":
                await self.apply(conn, event)

    async def apply(self, conn: asyncpg.Connection, e: StoredEvent) -> None:
        pid, p = _plugin_id(e), e.payload
        match e.event_type:
            case "Plugin.Installed" | "Plugin.Reinstalled":
                await _upsert_installed(conn, pid, e)
                await _record_version(conn, pid, e)
            case "Plugin.Updated":
                await _set_manifest(conn, pid, e, p["manifest"], p["source"], p["config"])
                await _record_version(conn, pid, e)
            case "Plugin.RolledBack":
                row = await conn.fetchrow(
                    "SELECT manifest, source FROM plugin_versions WHERE plugin_id = $1 AND version = $2"
                    " ORDER BY seq DESC LIMIT 1",
                    pid,
                    p["to_version"],
                )
                await _set_manifest(conn, pid, e, row["manifest"], row["source"], p["config"])
            case "Plugin.Enabled":
                await _touch(conn, pid, e, "status = 'enabled', enabled = true, disabled_reason = NULL")
            case "Plugin.Disabled":
                await _touch(conn, pid, e, "status = 'disabled', enabled = false, disabled_reason = $5", p["reason"])
            case "Plugin.Restarted":
                await _touch(conn, pid, e, "restarts = restarts + 1")
            case "Plugin.Reloaded":
                await _touch(conn, pid, e, "reloads = reloads + 1")
            case "Plugin.ConfigurationChanged" | "Plugin.Declassified":
                await _touch(conn, pid, e, "config = $5", p["config"])
            case "Plugin.Uninstalled":
                cleanup = ", config = '{}'" if p.get("cleanup_data") else ""
                await _touch(conn, pid, e, "status = 'uninstalled', enabled = false" + cleanup)
                await conn.execute("DELETE FROM plugin_dependencies WHERE plugin_id = $1", pid)


async def _upsert_installed(conn: asyncpg.Connection, pid: str, e: StoredEvent) -> None:
    m, p = e.payload["manifest"], e.payload
    await conn.execute(
        """
        INSERT INTO plugins (plugin_id, name, version, description, author, category, tags, capabilities,
                             status, enabled, manifest, config, source, installed_at, updated_at,
                             stream_version, last_position, version_key)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16, $17)
        ON CONFLICT (plugin_id) DO UPDATE SET
            name = excluded.name, version = excluded.version, version_key = excluded.version_key,
            description = excluded.description, restarts = 0, reloads = 0,
            author = excluded.author, category = excluded.category, tags = excluded.tags,
            capabilities = excluded.capabilities, status = excluded.status, enabled = excluded.enabled,
            disabled_reason = NULL, manifest = excluded.manifest, config = excluded.config,
            source = excluded.source, installed_at = excluded.installed_at, updated_at = excluded.updated_at,
            stream_version = excluded.stream_version, last_position = excluded.last_position
        """,
        pid,
        m["name"],
        m["version"],
        m.get("description", ""),
        m.get("author", ""),
        m.get("category", "general"),
        m.get("tags", []),
        m.get("capabilities", []),
        "enabled" if p["enabled"] else "installed",
        p["enabled"],
        m,
        p["config"],
        p["source"],
        e.recorded_at,
        e.stream_version,
        e.position,
        version_key(m["version"]),
    )
    await _set_dependencies(conn, pid, m)


async def _set_manifest(
    conn: asyncpg.Connection, pid: str, e: StoredEvent, m: dict, source: dict, config: dict
) -> None:
    await _touch(
        conn,
        pid,
        e,
        "version = $5, version_key = $6, name = $7, description = $8, author = $9, category = $10, tags = $11,"
        " capabilities = $12, manifest = $13, source = $14, config = $15",
        m["version"],
        version_key(m["version"]),
        m["name"],
        m.get("description", ""),
        m.get("author", ""),
        m.get("category", "general"),
        m.get("tags", []),
        m.get("capabilities", []),
        m,
        source,
        config,
    )
    await _set_dependencies(conn, pid, m)


async def _set_dependencies(conn: asyncpg.Connection, pid: str, manifest: dict) -> None:
    await conn.execute("DELETE FROM plugin_dependencies WHERE plugin_id = $1", pid)
    deps = manifest.get("dependencies", {})
    if deps:
        await conn.executemany(
            "INSERT INTO plugin_dependencies (plugin_id, depends_on, requirement) VALUES ($1, $2, $3)",
            [(pid, dep, spec) for dep, spec in deps.items()],
        )


async def _record_version(conn: asyncpg.Connection, pid: str, e: StoredEvent) -> None:
    m = e.payload["manifest"]
    await conn.execute(
        "INSERT INTO plugin_versions (plugin_id, seq, version, manifest, source, installed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        pid,
        e.stream_version,
        m["version"],
        m,
        e.payload["source"],
        e.recorded_at,
    )


async def _touch(conn: asyncpg.Connection, pid: str, e: StoredEvent, assignments: str, *args: Any) -> None:
    await conn.execute(
        f"UPDATE plugins SET {assignments}, updated_at = $2, stream_version = $3, last_position = $4"
        " WHERE plugin_id = $1",
        pid,
        e.recorded_at,
        e.stream_version,
        e.position,
        *args,
    )
