"""Queries of the `plugins` read model: the catalog list, one plugin's details, its dependents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from projections.sql import Where, contains, fetch_page, order_by
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


def _where(f: PluginFilter) -> Where:
    where = Where()
    if f.status:
        where.add("status = {}", f.status)
    elif not f.include_uninstalled:
        where.add("status <> 'uninstalled'")
    if f.category:
        where.add("category = {}", f.category)
    if f.tag:
        where.add("{} = ANY(tags)", f.tag)
    if f.active_only:
        where.add("enabled")
    if f.search:
        where.add("(plugin_id || ' ' || name || ' ' || description) ILIKE {}", contains(f.search))
    return where


async def list_plugins(pool: asyncpg.Pool, f: PluginFilter, page: Page) -> tuple[int, list[dict[str, Any]]]:
    """The total of plugins matching `f` and one page of them, from one snapshot."""
    order = order_by(SORTABLE[page.sort_by], page.sort_order == "desc", "plugin_id")
    return await fetch_page(
        pool,
        columns=f"p.*, ARRAY(SELECT d.plugin_id FROM {SCHEMA}.plugin_dependencies d"
        f"   JOIN {SCHEMA}.plugins o ON o.plugin_id = d.plugin_id AND o.status <> 'uninstalled'"
        f"   WHERE d.depends_on = p.plugin_id ORDER BY d.plugin_id) AS dependents",
        source=f"{SCHEMA}.plugins p",
        where=_where(f),
        order=order,
        skip=page.skip,
        limit=page.limit,
    )


async def get_plugin(pool: asyncpg.Pool, plugin_id: str) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT p.*, v.manifest FROM {SCHEMA}.plugins p"
            f" JOIN {SCHEMA}.plugin_versions v ON v.plugin_id = p.plugin_id AND v.seq = p.manifest_seq WHERE p.plugin_id = $1",
            plugin_id,
        )
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
