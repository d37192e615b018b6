"""The report archive: compliance reports a task run generated (action `reports.compliance`), kept in
PostgreSQL so every replica serves them (migration 0013). A kept report is the document as rendered;
its `sha256` is the report's own digest, so it can be checked against the report generated again from
the log as of the same position."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from application.sites.ports import ArchivedReport
from application.sites.report_render import MEDIA_TYPES
from projections.sql import Where, fetch_page

_COLUMNS = "id::text AS id, site_id, format, as_of, position, sha256, size, task_id, run_id, created_at"


def _archived(row: Any) -> ArchivedReport:
    return ArchivedReport(**{k: row[k] for k in ArchivedReport.__dataclass_fields__})


class PostgresReportArchive:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def keep(
        self, site_id: str, fmt: str, as_of: str, position: int, sha256: str, document: bytes,
        task_id: str | None = None, run_id: str | None = None,
    ) -> ArchivedReport:
        """Keep a rendered report (for the task run that made it); a run that keeps one again (an attempt
        retried) replaces its earlier one."""
        row = await self.pool.fetchrow(
            "INSERT INTO report_archive (id, site_id, format, as_of, position, sha256, size, media_type, content, task_id, run_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (run_id) DO UPDATE SET format = excluded.format, as_of = excluded.as_of,"
            " position = excluded.position, sha256 = excluded.sha256, size = excluded.size,"
            " media_type = excluded.media_type, content = excluded.content, created_at = now()"
            f" RETURNING {_COLUMNS}",
            uuid.uuid4(), site_id, fmt, as_of, position, sha256, len(document), MEDIA_TYPES[fmt], document,
            task_id, run_id,
        )  # fmt: skip
        return _archived(row)

    async def page(self, site_id: str, skip: int, limit: int) -> tuple[int, list[ArchivedReport]]:
        """The site's kept reports, newest first, and how many there are (one statement, one snapshot)."""
        total, rows = await fetch_page(
            self.pool, columns=_COLUMNS, source="report_archive", where=Where().add("site_id = {}", site_id),
            order="created_at DESC, id", skip=skip, limit=limit,
        )  # fmt: skip
        return total, [_archived(r) for r in rows]

    async def document(self, site_id: str, report_id: str) -> tuple[ArchivedReport, bytes] | None:
        """One kept report of the site, with its bytes; None when the site has no report of that id."""
        try:
            key = uuid.UUID(report_id)
        except ValueError:
            return None
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, content FROM report_archive WHERE id = $1 AND site_id = $2", key, site_id
        )
        return (_archived(row), row["content"]) if row else None
