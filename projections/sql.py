"""The SQL every query module shares: a WHERE clause built filter by filter (`Where`), the LIKE pattern
of a search (`contains`), the ORDER BY of a sortable list (`order_by`), and one page of a list with the
list's total read by one statement (`fetch_page`): one snapshot, so a page never shows `total: 0` beside
an item, nor a total smaller than what it lists."""

from __future__ import annotations

from typing import Any

import asyncpg


class Where:
    """A WHERE clause built one condition at a time, every value a numbered parameter (never SQL text).

    `add("status = {}", value)`: each `{}` becomes the next parameter, `{0}` repeats one
    (`"(email ILIKE {0} OR full_name ILIKE {0})"`); a condition without values is added as it is."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def add(self, condition: str, *values: Any) -> Where:
        first = len(self.args) + 1
        self.args.extend(values)
        self.conditions.append(condition.format(*(f"${first + i}" for i in range(len(values)))) if values else condition)
        return self

    @property
    def sql(self) -> str:
        """` WHERE a AND b`, or nothing when no condition was added."""
        return (" WHERE " + " AND ".join(self.conditions)) if self.conditions else ""


def contains(text: str) -> str:
    """The LIKE / ILIKE pattern matching `text` anywhere, its own `%`, `_` and `\\` taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def order_by(column: str, descending: bool, *tiebreak: str) -> str:
    """`column` in the direction asked, then the unique `tiebreak` columns (ascending) for a stable page."""
    return ", ".join([f"{column} {'DESC' if descending else 'ASC'}", *tiebreak])


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
    where: Where,
    order: str,
    skip: int,
    limit: int,
) -> tuple[int, list[dict[str, Any]]]:
    """The total of rows of `source` matching `where`, and the page of them from `skip`, `limit` long.

    `order` must name output columns only (bare names, no table alias) and end with a unique one:
    it sorts the page inside and again outside the join, where only the page's columns are in scope."""
    args = where.args
    sql = _PAGE.format(
        columns=columns, source=source, where=where.sql, order=order, skip=len(args) + 1, limit=len(args) + 2
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
