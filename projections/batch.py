"""The shape every read model shares: a batch of events is folded in memory into the rows it changes,
then written with a few set-based statements per table (projections/batch_store.py).

A projection declares its tables (`Table`: name and primary key; the first key column groups the rows
that are loaded and cleared together, e.g. all versions of one plugin), which groups of which table a
batch needs to read (`needs`), and how one event changes the rows (`apply`, pure: it reads and writes a
`Rows`, never the database). `fold` runs `apply` over the batch and hands back the net `Changes` per
table: rows to upsert, keys to delete, groups to clear. Folding a batch of any size gives the rows that
folding its events one at a time gives (tests/property/test_batch_folding.py).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from application.ports import StoredEvent

Row = dict[str, Any]
Key = tuple[Any, ...]
Needs = dict[str, set[Any]]


@dataclass(frozen=True)
class Table:
    """A read-model table: its name and primary key; `key[0]` groups rows loaded or cleared together.
    `whole_rows`: its rows are small, so a changed row is sent whole (one upsert per batch) rather than
    by the columns it changed (one UPDATE per set of columns: a rebuild's chunk sent dozens)."""

    name: str
    key: tuple[str, ...]
    whole_rows: bool = False

    @property
    def group(self) -> str:
        return self.key[0]

    def key_of(self, row: Row) -> Key:
        if len(self.key) == 1:
            return (row[self.key[0]],)
        return tuple(row[column] for column in self.key)


@dataclass
class TableChanges:
    """The net change of one table by one batch, applied in this order: clear, delete, upsert, update."""

    cleared: list[Any] = field(default_factory=list)  # groups whose rows all go before the upserts
    deleted: list[Key] = field(default_factory=list)
    upserted: list[Row] = field(default_factory=list)  # whole rows, inserted or replacing
    # Rows that existed before the batch and were only updated: the columns changed -> those rows (only
    # these columns are sent, so a restart does not send the manifest again).
    updated: dict[tuple[str, ...], list[Row]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.cleared or self.deleted or self.upserted or self.updated)


Changes = dict[str, TableChanges]


_ABSENT: Any = object()


class NotLoaded(LookupError):
    """A fold read rows of a group its projection's `needs` did not ask for (a bug in `needs`)."""


class Rows:
    """The rows one batch may read, and what it changed. Rows are plain dicts; treat them as immutable
    (`update` and `put` store new ones), so a row handed out is never changed behind the caller."""

    def __init__(
        self, tables: Sequence[Table], loaded: Mapping[str, Iterable[Row]] | None = None, groups: Needs | None = None
    ) -> None:
        self.tables = {t.name: t for t in tables}
        # table -> group -> key -> row: a group is cleared or listed without scanning the table
        self._rows: dict[str, dict[Any, dict[Key, Row]]] = {t.name: {} for t in tables}
        self._known: dict[str, set[Any]] = {t.name: set((groups or {}).get(t.name, ())) for t in tables}
        self._complete: set[str] = set()  # tables whose every row is here (an in-memory state)
        # Keys changed by the batch (in order) -> None when the whole row was put, else the columns updated.
        self._dirty: dict[str, dict[Key, set[str] | None]] = {t.name: {} for t in tables}
        self._cleared: dict[str, dict[Any, None]] = {t.name: {} for t in tables}
        for name, rows in (loaded or {}).items():
            table, by_group = self.tables[name], self._rows[name]
            for row in rows:
                key = table.key_of(row)
                by_group.setdefault(key[0], {})[key] = row

    @classmethod
    def complete(cls, tables: Sequence[Table], state: Mapping[str, Mapping[Key, Row]]) -> Rows:
        """Rows over a whole in-memory state (every group known): folding without a database."""
        rows = cls(tables, {t.name: state.get(t.name, {}).values() for t in tables})
        rows._complete = set(rows.tables)
        return rows

    def _check(self, table: str, group: Any) -> None:
        if table not in self._complete and group not in self._known[table]:
            raise NotLoaded(f"{table}: group {group!r} was not loaded for this batch")

    def get(self, table: str, *key: Any) -> Row | None:
        if table not in self._complete and key[0] not in self._known[table]:
            raise NotLoaded(f"{table}: group {key[0]!r} was not loaded for this batch")
        group = self._rows[table].get(key[0])
        return group.get(key) if group else None

    def group(self, table: str, group: Any) -> list[Row]:
        """Every row of `group`, in key order."""
        self._check(table, group)
        rows = self._rows[table].get(group, {})
        return [rows[k] for k in sorted(rows)]

    def put(self, table: str, row: Row) -> None:
        """Insert or replace a whole row (no need to have loaded its group)."""
        key = self.tables[table].key_of(row)
        group = self._rows[table].get(key[0])
        if group is None:
            group = self._rows[table][key[0]] = {}
        group[key] = row
        self._dirty[table][key] = None

    def update(self, table: str, *key: Any, **values: Any) -> Row | None:
        """Change some columns of an existing row; a missing row stays missing (like an UPDATE)."""
        row = self.get(table, *key)
        if row is None:
            return None
        changed = row | values
        self._rows[table][key[0]][key] = changed
        dirty = self._dirty[table]
        columns = dirty.get(key, _ABSENT)
        if columns is _ABSENT:
            dirty[key] = set(values)
        elif columns is not None:
            columns.update(values)
        return changed

    def delete(self, table: str, *key: Any) -> None:
        self._rows[table].get(key[0], {}).pop(key, None)
        self._dirty[table][key] = None

    def clear(self, table: str, group: Any) -> None:
        """Remove every row of `group` (loaded or not): the group is known to be empty afterwards."""
        self._rows[table].pop(group, None)
        self._cleared[table][group] = None
        self._known[table].add(group)

    def known(self, table: str) -> dict[Any, dict[Key, Row]]:
        """The groups of `table` this batch knows completely (loaded or cleared), as they are now."""
        by_group = self._rows[table]
        return {group: by_group.get(group, {}) for group in self._known[table]}

    def members(self, table: str, group: Any) -> dict[Key, Row]:
        """The rows of `group` this batch holds now (whether or not it knows the whole group)."""
        return self._rows[table].get(group, {})

    def dirty(self, table: str) -> Iterable[Key]:
        """The keys this batch put, updated or deleted."""
        return self._dirty[table].keys()

    def cleared(self, table: str) -> Iterable[Any]:
        """The groups this batch cleared."""
        return self._cleared[table].keys()

    def blind_changes(self, table: str) -> Iterator[tuple[Key, Row | None]]:
        """Rows this batch put (the row) or deleted (None) in groups it did not load."""
        known, by_group = self._known[table], self._rows[table]
        for key in self._dirty[table]:
            if key[0] not in known:
                yield key, by_group.get(key[0], {}).get(key)

    def changes(self) -> Changes:
        out: Changes = {}
        for name, dirty in self._dirty.items():
            by_group, whole = self._rows[name], self.tables[name].whole_rows
            change = TableChanges(cleared=list(self._cleared[name]))
            for key, columns in dirty.items():
                row = by_group.get(key[0], {}).get(key)
                if row is not None and columns is not None and not whole:
                    names = (*self.tables[name].key, *sorted(columns))
                    change.updated.setdefault(names, []).append({c: row[c] for c in names})
                elif row is not None:
                    change.upserted.append(row)
                elif key[0] not in self._cleared[name]:  # the clear removes it already
                    change.deleted.append(key)
            if change:
                out[name] = change
        return out


ROW_CACHE_LIMIT = 200_000  # rows a rebuild keeps per projection between chunks


class RowCache:
    """Whole groups of rows kept between the batches of a rebuild (the only writer of its build schema),
    so a chunk does not load again what the chunks before it wrote. At most `limit` rows; the groups
    used least recently go first. A cache `fresh` from the start of its build (its tables empty when it
    began) also remembers every group it ever changed: a group it never changed has no rows to load, so
    folding a chunk then needs the database only for groups it evicted."""

    def __init__(self, tables: Sequence[Table], limit: int | None = None) -> None:
        self.limit = ROW_CACHE_LIMIT if limit is None else limit
        self._groups: dict[str, OrderedDict[Any, dict[Key, Row]]] = {t.name: OrderedDict() for t in tables}
        self._size = 0
        self.fresh = False
        self._written: dict[str, set[Any]] = {t.name: set() for t in tables}

    def take(self, needs: Needs) -> tuple[dict[str, list[Row]], Needs]:
        """The cached rows of the needed groups, and the groups still to load."""
        cached: dict[str, list[Row]] = {}
        missing: Needs = {}
        for name, groups in needs.items():
            known, written = self._groups[name], self._written[name]
            rows = cached.setdefault(name, [])
            for group in groups:
                if group in known:
                    known.move_to_end(group)
                    rows.extend(known[group].values())
                elif not self.fresh or group in written:
                    missing.setdefault(name, set()).add(group)
        return cached, missing

    def keep(self, rows: Rows) -> None:
        """After the batch is folded: its complete groups as they are now, and its puts and deletes
        applied to the cached groups it changed without loading them (a new plugin version)."""
        for name, groups in self._groups.items():
            known, written = rows.known(name), self._written[name]
            if self.fresh:
                # A group first written by this batch without loading it was empty: it is whole here.
                first = {key[0] for key in rows.dirty(name) if key[0] not in written and key[0] not in known}
                known.update((group, rows.members(name, group)) for group in first)
                written.update(key[0] for key in rows.dirty(name))
                written.update(rows.cleared(name))
            for key, row in rows.blind_changes(name):
                members = groups.get(key[0])
                if members is None:
                    continue
                self._size -= len(members)
                if row is None:
                    members.pop(key, None)
                else:
                    members[key] = row
                self._size += len(members)
            for group, members in known.items():
                self._size += len(members) - len(groups.get(group, ()))
                groups[group] = dict(members)
                groups.move_to_end(group)
        while self._size > self.limit:
            name = max(self._groups, key=lambda n: len(self._groups[n]))
            _, members = self._groups[name].popitem(last=False)
            self._size -= len(members)


def apply_changes(tables: Sequence[Table], state: dict[str, dict[Key, Row]], changes: Changes) -> None:
    """What the set-based writes do to the tables, on an in-memory state (the statements' semantics)."""
    for table in tables:
        change = changes.get(table.name)
        if not change:
            continue
        rows = state.setdefault(table.name, {})
        cleared = set(change.cleared)
        for key in [k for k in rows if k[0] in cleared]:
            del rows[key]
        for key in change.deleted:
            rows.pop(key, None)
        for row in change.upserted:
            rows[table.key_of(row)] = row
        for updates in change.updated.values():
            for values in updates:
                key = table.key_of(values)
                if key in rows:
                    rows[key] = {**rows[key], **values}


def select(state: Mapping[str, Mapping[Key, Row]], needs: Needs) -> dict[str, list[Row]]:
    """The rows of the needed groups, from an in-memory state (what batch_store.load reads)."""
    return {
        name: [row for key, row in state.get(name, {}).items() if key[0] in groups] for name, groups in needs.items()
    }


FOLD_SLICE = 256  # events folded between two turns of the event loop (see BatchProjection.folded)


class BatchProjection:
    """Base of a read model written in sets. Subclasses set `name`, `schema`, `version`, `ddl`, `tables`
    and `stream_types`, and implement `needs` and `apply`."""

    name: str
    schema: str
    version: int
    ddl: str
    tables: tuple[Table, ...]
    stream_types: frozenset[str]

    def relevant(self, events: Iterable[StoredEvent]) -> list[StoredEvent]:
        return [e for e in events if e.stream_type in self.stream_types]

    def needs(self, events: Sequence[StoredEvent]) -> Needs:
        """The groups of each table that folding `events` reads (get / group / update)."""
        raise NotImplementedError

    def apply(self, rows: Rows, event: StoredEvent) -> None:
        """How one event changes the rows (pure)."""
        raise NotImplementedError

    def fold(self, rows: Rows, events: Iterable[StoredEvent]) -> Changes:
        """Fold `events` into `rows`; the net changes per table."""
        for event in events:
            if event.stream_type in self.stream_types:
                self.apply(rows, event)
        return rows.changes()

    async def handle(self, conn: Any, events: list[StoredEvent], cache: RowCache | None = None) -> None:
        """Load what the batch reads (from `cache` when given), fold it, write the changes in sets
        (inside the caller's transaction)."""
        from projections.batch_store import load, write

        changes = await self.folded(events, cache, lambda missing: load(conn, self.tables, missing))
        if changes:
            await write(conn, self.tables, changes)

    async def folded(
        self, events: list[StoredEvent], cache: RowCache | None, load: Callable[[Needs], Awaitable[dict[str, list[Row]]]]
    ) -> Changes | None:
        """The batch folded: what it reads taken from `cache` (when given) or from `load`, then the net
        changes to write (None when no event concerns this projection). `cache` is brought up to the
        state after those changes at once: a rebuild folds its next chunk while this one is written."""
        relevant = self.relevant(events)
        if not relevant:
            return None
        needs = self.needs(relevant)
        loaded, missing = cache.take(needs) if cache is not None else ({}, needs)
        if any(missing.values()):
            for name, found in (await load(missing)).items():
                loaded.setdefault(name, []).extend(found)
        rows = Rows(self.tables, loaded, needs)
        for start in range(0, len(relevant), FOLD_SLICE):
            if start:
                await asyncio.sleep(0)  # the write in flight and the read ahead go on between slices
            for event in relevant[start : start + FOLD_SLICE]:
                self.apply(rows, event)
        changes = rows.changes()
        if cache is not None:
            cache.keep(rows)
        return changes

    def cache(self) -> RowCache:
        """A row cache for one rebuild of this projection."""
        return RowCache(self.tables)
