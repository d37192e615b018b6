"""Read model `access`: users (with their grants), roles (with permissions and user counts), permissions."""

from __future__ import annotations

import asyncpg

from application.ports import StoredEvent
from domain.identity.access import BUILTIN_ROLES as BUILTIN

NAME = "identity"
SCHEMA = "rm_identity"
VERSION = 1

DDL = """
CREATE TABLE users (
    user_id          text PRIMARY KEY,
    email            text NOT NULL UNIQUE,
    full_name        text NOT NULL,
    is_active        boolean NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    grants_changed_at timestamptz,
    stream_version   integer NOT NULL
);
CREATE TABLE user_grants (
    user_id     text NOT NULL,
    role_key    text NOT NULL,
    site_id     text NOT NULL DEFAULT '',   -- '' : everywhere
    granted_at  timestamptz NOT NULL,
    granted_by  text,
    PRIMARY KEY (user_id, role_key, site_id)
);
CREATE INDEX user_grants_site ON user_grants (site_id);
CREATE TABLE roles (
    role_key        text PRIMARY KEY,
    name            text NOT NULL,
    description     text NOT NULL,
    permissions     text[] NOT NULL,
    builtin         boolean NOT NULL,
    deleted         boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    stream_version  integer NOT NULL
);
CREATE UNIQUE INDEX roles_live_name ON roles (name) WHERE NOT deleted;
CREATE TABLE permissions (
    name         text PRIMARY KEY,
    resource     text NOT NULL,
    action       text NOT NULL,
    description  text NOT NULL,
    defined_at   timestamptz NOT NULL
);
"""


class AccessProjection:
    name = NAME
    schema = SCHEMA
    version = VERSION
    ddl = DDL

    async def handle(self, conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
        for event in events:
            if event.stream_type in ("user", "role", "permission"):
                await self.apply(conn, event)

    async def apply(self, conn: asyncpg.Connection, e: StoredEvent) -> None:
        key, p = e.stream_id.split(":", 1)[1], e.payload
        match e.event_type:
            case "User.Registered":
                await conn.execute(
                    "INSERT INTO users (user_id, email, full_name, is_active, created_at, updated_at, stream_version)"
                    " VALUES ($1, $2, $3, $4, $5, $5, $6)",
                    key, p["email"], p["full_name"], p["active"], e.recorded_at, e.stream_version,
                )
            case "User.Activated" | "User.Deactivated":
                await conn.execute(
                    "UPDATE users SET is_active = $2, updated_at = $3, stream_version = $4 WHERE user_id = $1",
                    key, e.event_type == "User.Activated", e.recorded_at, e.stream_version,
                )
            case "User.PasswordChanged":
                await _touch_user(conn, key, e)
            case "User.RoleGranted":
                await conn.execute(
                    "INSERT INTO user_grants VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    key, p["role"], p["site_id"] or "", e.recorded_at, e.metadata.get("actor"),
                )
                await _touch_user(conn, key, e, grants_changed=True)
            case "User.RoleRevoked":
                await conn.execute(
                    "DELETE FROM user_grants WHERE user_id = $1 AND role_key = $2 AND site_id = $3",
                    key, p["role"], p["site_id"] or "",
                )
                await _touch_user(conn, key, e, grants_changed=True)
            case "Role.Created":
                await conn.execute(
                    "INSERT INTO roles VALUES ($1, $2, $3, $4, $5, false, $6, $6, $7)",
                    key, p["name"], p["description"], sorted(set(p["permissions"])), p["key"] in BUILTIN, e.recorded_at,
                    e.stream_version,
                )
            case "Role.Renamed":
                await _touch_role(conn, key, e, "name = $4", p["name"])
            case "Role.Described":
                await _touch_role(conn, key, e, "description = $4", p["description"])
            case "Role.PermissionAdded":
                await _touch_role(
                    conn, key, e, "permissions = ARRAY(SELECT DISTINCT unnest(permissions || $4::text) ORDER BY 1)",
                    p["permission"],
                )
            case "Role.PermissionRemoved":
                await _touch_role(conn, key, e, "permissions = array_remove(permissions, $4)", p["permission"])
            case "Role.Deleted":
                await _touch_role(conn, key, e, "deleted = true")
            case "Permission.Defined":
                resource, action = p["name"].split(":", 1)
                await conn.execute(
                    "INSERT INTO permissions VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    p["name"], resource, action, p["description"], e.recorded_at,
                )


async def _touch_user(conn: asyncpg.Connection, key: str, e: StoredEvent, grants_changed: bool = False) -> None:
    changed = ", grants_changed_at = $2" if grants_changed else ""
    await conn.execute(
        f"UPDATE users SET updated_at = $2, stream_version = $3{changed} WHERE user_id = $1", key, e.recorded_at, e.stream_version
    )


async def _touch_role(conn: asyncpg.Connection, key: str, e: StoredEvent, assignments: str, *args: object) -> None:
    await conn.execute(
        f"UPDATE roles SET {assignments}, updated_at = $2, stream_version = $3 WHERE role_key = $1",
        key, e.recorded_at, e.stream_version, *args,
    )
