"""Queries of the `access` read model."""

from __future__ import annotations

from typing import Any

import asyncpg

from projections.identity.projection import SCHEMA
from projections.sql import Where, contains, fetch_page, order_by

USER_SORTABLE = {
    "email": "email", "full_name": "full_name", "created_at": "created_at", "updated_at": "updated_at",
    "last_login_at": "last_login_at",
}
ROLE_SORTABLE = {"name": "name", "created_at": "created_at"}
PERMISSION_SORTABLE = {"name": "name", "resource": "resource"}

_GRANTS = (
    f"COALESCE((SELECT json_agg(json_build_object('role', g.role_key, 'site_id', NULLIF(g.site_id, ''),"
    f" 'granted_at', g.granted_at, 'granted_by', g.granted_by, 'reason', g.reason) ORDER BY g.role_key, g.site_id)"
    f" FROM {SCHEMA}.user_grants g WHERE g.user_id = u.user_id), '[]'::json) AS grants"
)


async def list_users(
    pool: asyncpg.Pool,
    search: str | None,
    is_active: bool | None,
    sites: set[str] | None,
    skip: int,
    limit: int,
    sort_by: str,
    descending: bool,
) -> tuple[int, list[dict[str, Any]]]:
    """Users, optionally only those holding a grant at one of `sites` (what a site-scoped reader may see)."""
    where = Where()
    if search:
        where.add("(u.email ILIKE {0} OR u.full_name ILIKE {0})", contains(search))
    if is_active is not None:
        where.add("u.is_active = {}", is_active)
    if sites is not None:
        where.add(
            f"EXISTS (SELECT 1 FROM {SCHEMA}.user_grants s WHERE s.user_id = u.user_id AND s.site_id = ANY({{}}))",
            sorted(sites),
        )
    return await fetch_page(
        pool, columns=f"u.*, {_GRANTS}", source=f"{SCHEMA}.users u", where=where,
        order=order_by(USER_SORTABLE[sort_by], descending, "user_id"), skip=skip, limit=limit,
    )


async def printed_names(pool: asyncpg.Pool, user_ids: list[str]) -> dict[str, str]:
    """The printed name of each of `user_ids` that is a user (full name, else email), by id."""
    rows = await pool.fetch(f"SELECT user_id, full_name, email FROM {SCHEMA}.users WHERE user_id = ANY($1::text[])",
                            user_ids)
    return {r["user_id"]: r["full_name"] or r["email"] for r in rows}


async def get_user(pool: asyncpg.Pool, user_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT u.*, {_GRANTS} FROM {SCHEMA}.users u WHERE u.user_id = $1", user_id)
    return dict(row) if row else None


_USER_COUNT = (
    f"(SELECT count(DISTINCT g.user_id) FROM {SCHEMA}.user_grants g WHERE g.role_key = r.role_key) AS users_count"
)


async def list_roles(pool: asyncpg.Pool, skip: int, limit: int, sort_by: str, descending: bool) -> tuple[int, list[dict[str, Any]]]:
    return await fetch_page(
        pool, columns=f"r.*, {_USER_COUNT}", source=f"{SCHEMA}.roles r", where=Where().add("NOT deleted"),
        order=order_by(ROLE_SORTABLE[sort_by], descending, "role_key"), skip=skip, limit=limit,
    )


async def get_role(pool: asyncpg.Pool, role: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        f"SELECT r.*, {_USER_COUNT} FROM {SCHEMA}.roles r WHERE NOT deleted AND (role_key = $1 OR name = $1)"
        " ORDER BY (role_key = $1) DESC LIMIT 1",
        role,
    )
    return dict(row) if row else None


async def role_permissions(pool: asyncpg.Pool) -> dict[str, list[str]]:
    rows = await pool.fetch(f"SELECT role_key, permissions FROM {SCHEMA}.roles WHERE NOT deleted")
    return {r["role_key"]: list(r["permissions"]) for r in rows}


async def list_permissions(
    pool: asyncpg.Pool, resource: str | None, skip: int, limit: int, sort_by: str, descending: bool
) -> tuple[int, list[dict[str, Any]]]:
    where = Where().add("resource = {}", resource) if resource else Where()
    return await fetch_page(
        pool, columns="*", source=f"{SCHEMA}.permissions", where=where,
        order=order_by(PERMISSION_SORTABLE[sort_by], descending, "name"), skip=skip, limit=limit,
    )
