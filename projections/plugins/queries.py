"""Queries of the `plugins` read model: the catalog list, one plugin's details, its dependents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from projections.sql import fetch_page
from projections.plugins.projection import SCHEMA

SORTABLE = {
    "id": "plugin_id",
    "plugin_id": "plugin_id",
    "name": "name",
    "version": "version_key",
    "category": "category",
    "status": "status",
    "installed_at": "installed_at",
    "updated_at": "updated_at",
}


@dataclass(frozen=True)
class PluginFilter:
    status: str | None = None
    category: str | None = None
    search: str | None = None
    tag: str | None = None
    active_only: bool = False
    include_uninstalled: bool = False


@dataclass(frozen=True)
class Page:
    skip: int = 0
    limit: int = 20
    sort_by: str = "name"
    sort_order: str = "asc"


def _where(f: PluginFilter) -> tuple[str, list[Any]]:
    clauses, args = [], []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.format(f"${len(args)}"))

    if f.status:
        add("status = {}", f.status)
    elif not f.include_uninstalled:
        clauses.append("status <> 'uninstalled'")
    if f.category:
        add("category = {}", f.category)
    if f.tag:
        add("{} = ANY(tags)", f.tag)
    if f.active_only:
        clauses.append("enabled")
    if f.search:
        add("(plugin_id || ' ' || name || ' ' || description) ILIKE {}", f"%{_escape_like(f.search)}%")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_plugins(pool: asyncpg.Pool, f: PluginFilter, page: Page) -> tuple[int, list[dict[str, Any]]]:
    """The total of plugins matching `f` and one page of them, from one snapshot."""
    where, args = _where(f)
    order = f"{SORTABLE[page.sort_by]} {'DESC' if page.sort_order == 'desc' else 'ASC'}, plugin_id"
    return await fetch_page(
        pool,
        columns=f"p.*, ARRAY(SELECT d.plugin_id FROM {SCHEMA}.plugin_dependencies d"
        f"   JOIN {SCHEMA}.plugins o ON o.plugin_id = d.plugin_id AND o.status <> 'uninstalled'"
        f"   WHERE d.depends_on = p.plugin_id ORDER BY d.plugin_id) AS dependents",
        source=f"{SCHEMA}.plugins p",
        where=where,
        args=args,
        order=order,
        skip=page.skip,
        limit=page.limit,
    )


async def get_plugin(pool: asyncpg.Pool, plugin_id: str) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT * FROM {SCHEMA}.plugins WHERE plugin_id = $1", plugin_id)
        if row is None:
            return None
        versions = await conn.fetch(
            f"SELECT version, source, installed_at FROM {SCHEMA}.plugin_versions WHERE plugin_id = $1 ORDER BY seq",
            plugin_id,
        )
        deps = await conn.fetch(
            f"SELECT depends_on, requirement FROM {SCHEMA}.plugin_dependencies WHERE plugin_id = $1 ORDER BY 1",
            plugin_id,
        )
        dependents = await _dependents(conn, plugin_id)
    plugin = dict(row)
    plugin["versions"] = [dict(v) for v in versions]
    plugin["dependencies"] = [{"plugin_id": d["depends_on"], "requirement": d["requirement"]} for d in deps]
    plugin["dependents"] = dependents
    return plugin


class PluginQueries:
    """The plugin catalog's questions as one object over the pool (what the HTTP controllers are given)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, f: PluginFilter, page: Page) -> tuple[int, list[dict[str, Any]]]:
        return await list_plugins(self.pool, f, page)

    async def get(self, plugin_id: str) -> dict[str, Any] | None:
        return await get_plugin(self.pool, plugin_id)


async def _dependents(conn: asyncpg.Connection | asyncpg.Pool, plugin_id: str) -> list[str]:
    rows = await conn.fetch(
        f"SELECT d.plugin_id FROM {SCHEMA}.plugin_dependencies d JOIN {SCHEMA}.plugins p USING (plugin_id)"
        " WHERE d.depends_on = $1 AND p.status <> 'uninstalled' ORDER BY 1",
        plugin_id,
    )
    return [r["plugin_id"] for r in rows]
