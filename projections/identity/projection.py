"""Read model `access`: users (with their grants), roles (with permissions and user counts), permissions.

Written in sets (projections/batch.py): `apply` folds one event into the rows, pure."""

from __future__ import annotations

from collections.abc import Sequence

from application.ports import StoredEvent
from domain.identity.access import BUILTIN_ROLES as BUILTIN
from projections.batch import BatchProjection, Needs, Rows, Table

NAME = "identity"
SCHEMA = "rm_identity"
# 2: the live-name index of roles is no longer unique (names are reserved by streams); 3: grants keep their
# reason; 4: users keep their last sign-in and whether their password must be changed (sign-in history)
VERSION = 4

DDL = """
CREATE TABLE users (
    user_id          text PRIMARY KEY,
    email            text NOT NULL UNIQUE,
    full_name        text NOT NULL,
    is_active        boolean NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    grants_changed_at timestamptz,
    last_login_at    timestamptz,
    password_change_required boolean NOT NULL DEFAULT false,
    stream_version   integer NOT NULL
);
CREATE TABLE user_grants (
    user_id     text NOT NULL,
    role_key    text NOT NULL,
    site_id     text NOT NULL DEFAULT '',   -- '' : everywhere
    granted_at  timestamptz NOT NULL,
    granted_by  text,
    reason      text NOT NULL DEFAULT '',  -- as recorded in User.RoleGranted ('' before grants took one)
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
CREATE INDEX roles_live_name ON roles (name) WHERE NOT deleted;
CREATE TABLE permissions (
    name         text PRIMARY KEY,
    resource     text NOT NULL,
    action       text NOT NULL,
    description  text NOT NULL,
    defined_at   timestamptz NOT NULL
);
"""


USERS = Table("users", ("user_id",))
GRANTS = Table("user_grants", ("user_id", "role_key", "site_id"))
ROLES = Table("roles", ("role_key",))
PERMISSIONS = Table("permissions", ("name",))


def _key(event: StoredEvent) -> str:
    return event.stream_id.split(":", 1)[1]


class AccessProjection(BatchProjection):
    """One batch upserts its users, grants, roles and permissions in sets. Uniqueness of emails and role
    names comes from their reservation streams, so a batch that renames one role and gives another the
    freed name writes both rows in one statement without a unique index in between."""

    name = NAME
    schema = SCHEMA
    version = VERSION
    ddl = DDL
    tables = (USERS, GRANTS, ROLES, PERMISSIONS)
    stream_types = frozenset({"user", "role", "permission"})

    def needs(self, events: Sequence[StoredEvent]) -> Needs:
        return {
            "users": {_key(e) for e in events if e.stream_type == "user"},
            "user_grants": {_key(e) for e in events if e.event_type == "User.RoleGranted"},
            "roles": {_key(e) for e in events if e.stream_type == "role"},
            "permissions": {e.payload["name"] for e in events if e.event_type == "Permission.Defined"},
        }

    def apply(self, rows: Rows, e: StoredEvent) -> None:
        key, p = _key(e), e.payload
        user = {"updated_at": e.recorded_at, "stream_version": e.stream_version}
        role = user
        match e.event_type:
            case "User.Registered":
                rows.put("users", {
                    "user_id": key, "email": p["email"], "full_name": p["full_name"], "is_active": p["active"],
                    "created_at": e.recorded_at, "grants_changed_at": None, "last_login_at": None,
                    "password_change_required": False, **user,
                })  # fmt: skip
            case "User.Activated" | "User.Deactivated":
                rows.update("users", key, is_active=e.event_type == "User.Activated", **user)
            case "User.PasswordChanged":
                rows.update("users", key, password_change_required=False, **user)
            case "User.PasswordReset":
                rows.update("users", key, password_change_required=True, **user)
            case "User.Renamed":
                rows.update("users", key, full_name=p["full_name"], **user)
            case "User.SignedIn":  # the history itself stays in the log; a sign-in is no change of the user
                rows.update("users", key, last_login_at=e.recorded_at, stream_version=e.stream_version)
            case "User.SignedOut" | "User.SessionRevoked" | "User.SessionsRevoked":
                rows.update("users", key, stream_version=e.stream_version)
            case "User.RoleGranted":
                site = p["site_id"] or ""
                if rows.get("user_grants", key, p["role"], site) is None:  # a repeated grant keeps the first
                    rows.put("user_grants", {
                        "user_id": key, "role_key": p["role"], "site_id": site, "granted_at": e.recorded_at,
                        "granted_by": e.metadata.get("actor"), "reason": p.get("reason", ""),
                    })  # fmt: skip
                rows.update("users", key, grants_changed_at=e.recorded_at, **user)
            case "User.RoleRevoked":
                rows.delete("user_grants", key, p["role"], p["site_id"] or "")
                rows.update("users", key, grants_changed_at=e.recorded_at, **user)
            case "Role.Created":
                rows.put("roles", {
                    "role_key": key, "name": p["name"], "description": p["description"],
                    "permissions": sorted(set(p["permissions"])), "builtin": p["key"] in BUILTIN, "deleted": False,
                    "created_at": e.recorded_at, **role,
                })  # fmt: skip
            case "Role.Renamed":
                rows.update("roles", key, name=p["name"], **role)
            case "Role.Described":
                rows.update("roles", key, description=p["description"], **role)
            case "Role.PermissionAdded":
                if found := rows.get("roles", key):
                    rows.update("roles", key, permissions=sorted({*found["permissions"], p["permission"]}), **role)
            case "Role.PermissionRemoved":
                if found := rows.get("roles", key):
                    kept = [x for x in found["permissions"] if x != p["permission"]]
                    rows.update("roles", key, permissions=kept, **role)
            case "Role.Deleted":
                rows.update("roles", key, deleted=True, **role)
            case "Permission.Defined":
                if rows.get("permissions", p["name"]) is None:  # the first definition stays
                    resource, action = p["name"].split(":", 1)
                    rows.put("permissions", {
                        "name": p["name"], "resource": resource, "action": action, "description": p["description"],
                        "defined_at": e.recorded_at,
                    })  # fmt: skip
