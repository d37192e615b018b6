"""The compliance report of a site now, read from the `sites` and `identity` read models.

The same document as the as-of report (application/sites/reports.py), rendered by the same renderer, as
far as the sites projection has read the log: the extensions active, their covering signoffs and
pending aspects, who activated and last configured each (the latest `activated` / `reconfigured` line of
its audit trail) and the site's audit trail after `since`; the actors'
printed names come from the identity read model, through the caller. It names the projection's checkpoint position
as the point it covers. What `charter bench report` measures the as-of replay against; a request
answering an auditor replays the log instead (a read model is not a fixed point).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg

from application.as_of import AsOf, timestamp
from application.sites.report_state import Mark, Provenance
from application.sites.reports import describe_change, document, extension_row
from domain.sites.extensions import ActiveExtension, ExtensionRules
from domain.sites.signoff import Signoff
from projections.sites.projection import KINDS, NAME, SCHEMA

EVENT_TYPES = {kind: event_type for event_type, kind in KINDS.items()}

_EXTENSIONS = f"""
SELECT e.plugin_id, e.version, e.configuration_hash, e.rules,
       a.position AS a_position, a.recorded_at AS a_at, a.actor AS a_actor,
       c.position AS c_position, c.recorded_at AS c_at, c.actor AS c_actor
FROM {SCHEMA}.site_extensions e
CROSS JOIN LATERAL (SELECT position, recorded_at, actor FROM {SCHEMA}.audit_trail t
    WHERE t.site_id = e.site_id AND t.plugin_id = e.plugin_id AND t.kind = 'activated' ORDER BY seq DESC LIMIT 1) a
CROSS JOIN LATERAL (SELECT position, recorded_at, actor FROM {SCHEMA}.audit_trail t
    WHERE t.site_id = e.site_id AND t.plugin_id = e.plugin_id AND t.kind IN ('activated', 'reconfigured')
    ORDER BY seq DESC LIMIT 1) c
WHERE e.site_id = $1 ORDER BY e.plugin_id
"""
_SIGNOFFS = (
    f"SELECT signoff_id, plugin_id, aspect, signer_id, signer_name, role, meaning, notes, configuration_hash, signed_at"
    f" FROM {SCHEMA}.signoffs WHERE site_id = $1 AND NOT invalidated"
)
_CHANGES = (
    f"SELECT position, recorded_at, plugin_id, kind, actor, reason, old_hash, new_hash, version, forced, details"
    f" FROM {SCHEMA}.audit_trail WHERE site_id = $1"
    f" AND ($2::bigint IS NULL OR position > $2) AND ($3::timestamptz IS NULL OR recorded_at > $3) ORDER BY seq"
)


def _mark(row: asyncpg.Record, prefix: str) -> Mark:
    return Mark(row[f"{prefix}_position"], row[f"{prefix}_at"], row[f"{prefix}_actor"] or "system")


def _payload(row: asyncpg.Record) -> dict[str, Any]:
    """The fields of the event an audit line stands for, as `describe_change` reads them."""
    details = row["details"] or {}
    hash_ = row["new_hash"] if row["kind"] in ("activated", "signoff_recorded") else row["old_hash"]
    return {**details, "reason": row["reason"], "version": row["version"], "forced": row["forced"],
            "old_hash": row["old_hash"], "new_hash": row["new_hash"], "configuration_hash": hash_}


Names = Callable[[list[str]], Awaitable[dict[str, str]]]  # user ids -> printed names (the identity read model)


async def compliance_report_now(pool: asyncpg.Pool, names_of: Names, site_id: str,
                                since: AsOf | None = None) -> dict[str, Any] | None:
    """The report of the site as the read models have it (None: no such site there); `names_of` gives
    the actors' printed names (projections/identity/queries.printed_names, read after the site's rows)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        site = await conn.fetchrow(f"SELECT site_id, name, timezone, status FROM {SCHEMA}.sites WHERE site_id = $1",
                                   site_id)
        if site is None:
            return None
        position = await conn.fetchval("SELECT position FROM checkpoints WHERE name = $1", NAME)
        extensions = await conn.fetch(_EXTENSIONS, site_id)
        valid: dict[str, list[Signoff]] = {}
        for s in await conn.fetch(_SIGNOFFS, site_id):
            valid.setdefault(s["plugin_id"], []).append(
                Signoff(**{**dict(s), "signed_at": s["signed_at"].isoformat()}))
        changes = await conn.fetch(_CHANGES, site_id, since.position if since else None,
                                   since.instant if since else None)
        origins = {e["plugin_id"]: Provenance(_mark(e, "a"), _mark(e, "c")) for e in extensions}
        actors = {c["actor"] or "system" for c in changes} | {m.actor for o in origins.values()
                                                               for m in (o.activated, o.configured)}
    names = await names_of(sorted(a for a in actors if _is_uuid(a)))
    rows = []
    for e in extensions:
        extension = ActiveExtension(e["plugin_id"], e["version"], {}, e["configuration_hash"],
                                    ExtensionRules.from_dict(e["rules"]))
        rows.append(extension_row(extension, valid.get(e["plugin_id"], []), origins[e["plugin_id"]], names))
    lines = []
    for c in changes:
        actor = c["actor"] or "system"
        event_type = EVENT_TYPES[c["kind"]]
        lines.append({"position": c["position"], "recorded_at": timestamp(c["recorded_at"]),
                      "event": event_type.split(".", 1)[-1], "plugin_id": c["plugin_id"] or "", "by": actor,
                      "by_name": names.get(actor, actor), "detail": describe_change(event_type, _payload(c))})
    return document(
        {"site_id": site["site_id"], "name": site["name"], "timezone": site["timezone"],
         "retired": site["status"] == "retired"},
        f"position:{position}", since.text() if since is not None else "", position, rows, lines,
    )  # fmt: skip


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True
