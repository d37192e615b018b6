"""The set-based statements behind projections/batch.py: one SELECT per table to load the groups a batch
reads, then per table at most one DELETE of cleared groups, one DELETE of keys, one upsert of whole rows
and one UPDATE per set of columns changed (only the changed columns of rows that existed are sent).

Rows travel as one JSON document per statement, unpacked by `json_populate_recordset(NULL::table, …)`:
the table's own row type gives every column its type (arrays, jsonb, timestamps included), so no
per-column type list is kept beside the DDL and a batch of any size is one parameter. The statements
depend only on the table and the columns written, so asyncpg's statement cache prepares each once per
connection. Unqualified table names resolve through the `search_path` the caller set (the live schema
or the `__build` one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from projections.batch import Changes, Needs, Row, Table

_encode = msgspec.json.Encoder(decimal_format="number").encode  # numeric[] read back as Decimal


def _json(values: list[Any]) -> str:
    return _encode(values).decode()


async def load(conn: asyncpg.Connection, tables: Sequence[Table], needs: Needs) -> dict[str, list[Row]]:
    """The current rows of the groups in `needs`, per table."""
    loaded: dict[str, list[Row]] = {}
    for table in tables:
        groups = needs.get(table.name)
        if groups:
            records = await conn.fetch(f"SELECT * FROM {table.name} WHERE {table.group} = ANY($1)", list(groups))
            loaded[table.name] = [dict(r) for r in records]
    return loaded


def _matching(table: Table) -> str:
    return " AND ".join(f"t.{c} = d.{c}" for c in table.key)


async def write(conn: asyncpg.Connection, tables: Sequence[Table], changes: Changes) -> None:
    """Apply `changes` table by table in declaration order: clear, delete, upsert."""
    for table in tables:
        change = changes.get(table.name)
        if not change:
            continue
        if change.cleared:
            await conn.execute(f"DELETE FROM {table.name} WHERE {table.group} = ANY($1)", change.cleared)
        if change.deleted:
            keys = [dict(zip(table.key, key)) for key in change.deleted]
            await conn.execute(
                f"DELETE FROM {table.name} AS t USING json_populate_recordset(NULL::{table.name}, $1::text::json) AS d"
                f" WHERE {_matching(table)}",
                _json(keys),
            )
        by_columns: dict[tuple[str, ...], list[Row]] = {}
        for row in change.upserted:
            by_columns.setdefault(tuple(row), []).append(row)
        for columns, rows in by_columns.items():
            await conn.execute(_upsert(table, columns), _json(rows))
        for columns, rows in change.updated.items():
            await conn.execute(_update(table, columns), _json(rows))


def _update(table: Table, columns: tuple[str, ...]) -> str:
    rest = [c for c in columns if c not in table.key]
    return (
        f"UPDATE {table.name} AS t SET ({', '.join(rest)}) = ROW({', '.join('d.' + c for c in rest)})"
        f" FROM json_populate_recordset(NULL::{table.name}, $1::text::json) AS d WHERE {_matching(table)}"
    )


def _upsert(table: Table, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    rest = [c for c in columns if c not in table.key]
    on_conflict = (
        f"DO UPDATE SET ({', '.join(rest)}) = ROW({', '.join('excluded.' + c for c in rest)})" if rest else "DO NOTHING"
    )
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table.name}, $1::text::json)"
        f" ON CONFLICT ({', '.join(table.key)}) {on_conflict}"
    )
