"""One page of a list and the list's total, read by one statement: one snapshot, so a page never
shows `total: 0` beside an item, nor a total smaller than what it lists."""

from __future__ import annotations

from typing import Any

import asyncpg

# The count is the outer row, so it comes back even when the page is empty (skip beyond the end).
# The page is joined as its own subquery rather than counted with `count(*) OVER ()`: a window count
# would carry every matching row, wide columns and all, through the window before the limit, where
# this keeps the top-N sort. Both sides read the statement's one snapshot.
_PAGE = """
SELECT page.*, matched._page_total
FROM (SELECT count(*) AS _page_total FROM {source}{where}) AS matched
LEFT JOIN LATERAL (
    SELECT true AS _on_page, {columns} FROM {source}{where} ORDER BY {order} OFFSET ${skip} LIMIT ${limit}
) AS page ON true
ORDER BY {order}
"""


async def fetch_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    columns: str,
    source: str,
    where: str,
    args: list[Any],
    order: str,
    skip: int,
    limit: int,
) -> tuple[int, list[dict[str, Any]]]:
    """The total of rows of `source` matching `where`, and the page of them from `skip`, `limit` long.

    `order` must name output columns only (bare names, no table alias) and end with a unique one:
    it sorts the page inside and again outside the join, where only the page's columns are in scope."""
    sql = _PAGE.format(
        columns=columns, source=source, where=where, order=order, skip=len(args) + 1, limit=len(args) + 2
    )
    rows = await conn.fetch(sql, *args, skip, limit)
    total = rows[0]["_page_total"]
    items = []
    for row in rows:
        if row["_on_page"]:
            item = dict(row)
            del item["_on_page"], item["_page_total"]
            items.append(item)
    return total, items
