"""Queries of the `sites` read model: sites, the features of a site, capability providers, site status,
signoffs given and pending, and the audit trails. Every answer is plain JSON (snake_case keys, times as
ISO 8601 text); the caller filters to the sites it may see (`site_ids` in `list_sites`, grants in
`pending_for_user`, the route's site elsewhere)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from domain.identity.access import Grant
from domain.sites.extensions import ExtensionRules
from domain.sites.signoff import holds_role_at
from projections.sites.projection import SCHEMA
from projections.sites.status import pending, site_status
from projections.sql import Where, fetch_page

_ACTIVE_COUNT = (
    f"(SELECT count(*) FROM {SCHEMA}.site_extensions e WHERE e.site_id = s.site_id) AS active_extensions"
)
_SIGNOFF_COLUMNS = (
    "signoff_id, site_id, plugin_id, aspect, signer_id, signer_name, role, meaning, notes, configuration_hash,"
    " signed_at, invalidated, invalidated_at, invalidated_by, invalidation_reason"
)
_AUDIT_COLUMNS = (
    "event_id AS id, site_id, seq, position, plugin_id, kind, actor, recorded_at, reason, old_hash, new_hash, version,"
    " forced, dependents, details"
)


def plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready values: times as ISO 8601 text."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _site(row: Mapping[str, Any]) -> dict[str, Any]:
    site = plain(row)
    del site["stream_version"]
    site["version"] = row["stream_version"]
    return site


class SiteQueries:
    """The sites feature's questions as one object over the pool (what the HTTP controllers are given)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list_sites(
        self, site_ids: Collection[str] | None, skip: int, limit: int, include_retired: bool = False
    ) -> tuple[int, list[dict[str, Any]]]:
        """The sites among `site_ids` (None: all), by id, retired ones only when asked."""
        where = Where()
        if site_ids is not None:
            where.add("site_id = ANY({})", sorted(site_ids))
        if not include_retired:
            where.add("status = 'active'")
        total, rows = await fetch_page(
            self.pool, columns=f"s.*, {_ACTIVE_COUNT}", source=f"{SCHEMA}.sites s", where=where, order="site_id",
            skip=skip, limit=limit,
        )
        return total, [_site(r) for r in rows]

    async def get_site(self, site_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(f"SELECT s.*, {_ACTIVE_COUNT} FROM {SCHEMA}.sites s WHERE site_id = $1", site_id)
        return _site(row) if row else None

    async def features(self, site_id: str) -> list[dict[str, Any]]:
        """The extensions active at the site: version, masked configuration, hash, rules, who activated
        them, the kill switch, and the compliance aspects still awaiting a signoff of this configuration."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            extensions = await self._extensions(conn, site_id)
            signoffs = await self._valid_signoffs(conn, site_id)
        features = []
        for row in extensions:
            rules = ExtensionRules.from_dict(row["rules"])
            waiting = pending(rules, signoffs.get(row["plugin_id"], []), row["configuration_hash"])
            feature = plain(row)
            feature.update(
                dependencies=dict(rules.dependencies),
                compliance_aspects=[a.name for a in rules.compliance.aspects],
                pending_aspects=[w["aspect"] for w in waiting],
                is_fully_signed=not waiting,
            )
            features.append(feature)
        return features

    async def capability_providers(self, site_id: str, capability: str) -> list[dict[str, Any]]:
        """The extensions active at the site that provide `capability` (exclusive: it may have one provider)."""
        rows = await self.pool.fetch(
            f"SELECT e.plugin_id, e.version, $2 = ANY(e.exclusive_capabilities) AS exclusive,"
            f" NOT coalesce(w.disabled OR NOT w.installed, false) AS enabled, e.activated_at"
            f" FROM {SCHEMA}.site_extensions e LEFT JOIN {SCHEMA}.plugin_switches w USING (plugin_id)"
            f" WHERE e.site_id = $1 AND $2 = ANY(e.capabilities) ORDER BY e.plugin_id",
            site_id, capability,
        )  # fmt: skip
        return [plain(r) for r in rows]

    async def status(self, site_id: str) -> dict[str, Any] | None:
        """Valid / invalid / conflicting counts by the domain's policies, unsigned compliance, attention."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            site = await conn.fetchrow(f"SELECT status, updated_at FROM {SCHEMA}.sites WHERE site_id = $1", site_id)
            if site is None:
                return None
            extensions = await self._extensions(conn, site_id)
            signoffs = await self._valid_signoffs(conn, site_id)
            disabled = await conn.fetch(
                f"SELECT w.plugin_id FROM {SCHEMA}.plugin_switches w JOIN {SCHEMA}.site_extensions e USING (plugin_id)"
                f" WHERE e.site_id = $1 AND (w.disabled OR NOT w.installed)",
                site_id,
            )
        status = site_status(site_id, extensions, [s for found in signoffs.values() for s in found],
                             {r["plugin_id"] for r in disabled})
        status["site_status"] = site["status"]
        status["last_changed_at"] = site["updated_at"].isoformat()
        return status

    async def signoffs(self, site_id: str, plugin_id: str) -> dict[str, Any] | None:
        """The signoffs given for an extension at a site (invalidated ones marked) and, when it is active,
        the aspects pending for its configuration. None when it is not active there and was never signed."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            extension = await conn.fetchrow(
                f"SELECT version, configuration_hash, rules FROM {SCHEMA}.site_extensions"
                f" WHERE site_id = $1 AND plugin_id = $2",
                site_id, plugin_id,
            )  # fmt: skip
            given = await conn.fetch(
                f"SELECT {_SIGNOFF_COLUMNS} FROM {SCHEMA}.signoffs WHERE site_id = $1 AND plugin_id = $2 ORDER BY position",
                site_id, plugin_id,
            )  # fmt: skip
        if extension is None and not given:
            return None
        current = extension["configuration_hash"] if extension else None
        signed = [plain(s) | {"approves_current": s["configuration_hash"] == current and not s["invalidated"]}
                  for s in given]
        waiting: list[dict[str, Any]] = []
        if extension is not None:
            valid = [s for s in given if not s["invalidated"]]
            waiting = pending(ExtensionRules.from_dict(extension["rules"]), valid, current)
        return {
            "site_id": site_id,
            "plugin_id": plugin_id,
            "active": extension is not None,
            "version": extension["version"] if extension else None,
            "configuration_hash": current,
            "given": signed,
            "pending": waiting,
            "is_fully_signed": extension is not None and not waiting,
        }

    async def pending_for_user(self, user_id: str, grants: list[Grant]) -> list[dict[str, Any]]:
        """The aspects of extensions active at the user's sites that await a signoff the user may give:
        the aspect's role held at that site (or everywhere), and not already signed by them in a group
        of aspects the manifest says need different signers."""
        everywhere = sorted({g.role for g in grants if g.site_id is None})
        at_sites = sorted({(g.site_id, g.role) for g in grants if g.site_id is not None})
        if not everywhere and not at_sites:
            return []
        rows = await self.pool.fetch(
            f"""
            SELECT e.site_id, e.plugin_id, e.version, e.configuration_hash, e.rules->'compliance' AS compliance,
                   a.aspect->>'name' AS aspect, a.aspect->>'role' AS role, a.aspect->>'meaning' AS meaning,
                   ARRAY(SELECT g.aspect FROM {SCHEMA}.signoffs g WHERE g.site_id = e.site_id
                         AND g.plugin_id = e.plugin_id AND g.configuration_hash = e.configuration_hash
                         AND NOT g.invalidated AND g.signer_id = $4) AS signed_by_user
            FROM {SCHEMA}.site_extensions e
            CROSS JOIN LATERAL jsonb_array_elements(e.rules->'compliance'->'aspects') WITH ORDINALITY AS a(aspect, n)
            WHERE (a.aspect->>'role' = ANY($1::text[])
                   OR (e.site_id, a.aspect->>'role') IN (SELECT * FROM unnest($2::text[], $3::text[])))
              AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.signoffs g WHERE g.site_id = e.site_id
                  AND g.plugin_id = e.plugin_id AND g.aspect = a.aspect->>'name'
                  AND g.configuration_hash = e.configuration_hash AND NOT g.invalidated)
            ORDER BY e.site_id, e.plugin_id, a.n
            """,
            everywhere, [s for s, _ in at_sites], [r for _, r in at_sites], user_id,
        )  # fmt: skip
        found = []
        for row in rows:
            if not holds_role_at(grants, row["role"], row["site_id"]):
                continue
            groups = (row["compliance"] or {}).get("distinct_signers", [])
            if any(row["aspect"] in group and other in group for group in groups for other in row["signed_by_user"]):
                continue
            found.append({
                "site_id": row["site_id"], "plugin_id": row["plugin_id"], "version": row["version"],
                "aspect": row["aspect"], "role": row["role"], "meaning": row["meaning"],
                "configuration_hash": row["configuration_hash"],
            })  # fmt: skip
        return found

    async def extension_audit_trail(self, site_id: str, plugin_id: str, skip: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Every activation, reconfiguration, deactivation, signoff and invalidation of one extension at a
        site, oldest first."""
        where = Where().add("site_id = {}", site_id).add("plugin_id = {}", plugin_id)
        return await self._audit(where, skip, limit)

    async def site_audit_trail(self, site_id: str, skip: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Every event of a site (its own and its extensions'), oldest first."""
        return await self._audit(Where().add("site_id = {}", site_id), skip, limit)

    async def _audit(self, where: Where, skip: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        total, rows = await fetch_page(
            self.pool, columns=_AUDIT_COLUMNS, source=f"{SCHEMA}.audit_trail", where=where, order="seq",
            skip=skip, limit=limit,
        )
        return total, [plain(r) for r in rows]

    async def _extensions(self, conn: asyncpg.Connection, site_id: str) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            f"SELECT e.site_id, e.plugin_id, e.version, e.configuration, e.configuration_hash, e.capabilities,"
            f" e.exclusive_capabilities, e.rules, e.activated_at, e.activated_by, e.activation_reason,"
            f" e.reconfigured_at, e.reconfigured_by, NOT coalesce(w.disabled OR NOT w.installed, false) AS enabled"
            f" FROM {SCHEMA}.site_extensions e LEFT JOIN {SCHEMA}.plugin_switches w USING (plugin_id)"
            f" WHERE e.site_id = $1 ORDER BY e.plugin_id",
            site_id,
        )
        return [dict(r) for r in rows]

    async def _valid_signoffs(self, conn: asyncpg.Connection, site_id: str) -> dict[str, list[dict[str, Any]]]:
        rows = await conn.fetch(
            f"SELECT plugin_id, aspect, configuration_hash FROM {SCHEMA}.signoffs WHERE site_id = $1 AND NOT invalidated",
            site_id,
        )
        by_plugin: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_plugin.setdefault(row["plugin_id"], []).append(dict(row))
        return by_plugin
