"""This process's answers to read-model queries, pre-encoded, kept until their read model moves.

A read model changes only when its projector commits a batch, and each batch notifies its new cursor
(`PROJECTED_CHANNEL`, sent as the batch commits). So an answer, the encoded JSON of a page or a detail,
stays right until the next notification for its read model: it is kept under the read model's current
*generation* (a number this process bumps at every notification for it) and the query's key (the route,
its parameters and the caller's site scope: never shared across scopes). A notification starts a new
generation and drops the old one's answers at once.

Read-your-writes: a read that waited for a position (`Charter-Min-Position`, `?consistent=true`) calls
`caught_up(name)` first, which reads the read model's cursor from the database and starts a new generation
if this process has not heard of it yet, so it never meets an answer older than what it waited for. Why an
answer is never older than its generation: the generation is taken *before* the query runs, and a
generation begins only once its batch has committed, so the query sees at least that batch.

Notifications can be lost while the LISTEN connection is down: a reconnection and a poll of every cursor
each `resync_every` seconds start a new generation for any read model whose cursor moved unheard, so a
missed notification costs at most that long of staleness (the read models' own eventual consistency).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import asyncpg
import structlog

from infrastructure.eventlog.availability import DATABASE, is_unavailable
from infrastructure.telemetry import metrics

log = structlog.get_logger(__name__)

Cursor = tuple[int, int]  # (transaction_id, position), as the checkpoints hold it


@dataclass(frozen=True)
class Answer:
    """An encoded response body and the headers that go with it (an ETag)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]


class _Generation:
    __slots__ = ("number", "cursor", "answers", "size")

    def __init__(self, number: int, cursor: Cursor) -> None:
        self.number, self.cursor = number, cursor
        self.answers: OrderedDict[Hashable, Answer] = OrderedDict()
        self.size = 0


class ReadCache:
    """Answers per read model and generation, least recently used dropped first past `max_entries`
    answers or `max_bytes` bytes per read model. `max_entries` 0: nothing is kept (every read queries)."""

    def __init__(self, pool: asyncpg.Pool | None, *, max_entries: int = 4096, max_bytes: int = 64 * 1024 * 1024,
                 resync_every: float = 1.0) -> None:
        self.pool = pool
        self.max_entries, self.max_bytes, self.resync_every = max_entries, max_bytes, resync_every
        self._generations: dict[str, _Generation] = {}
        self._counter = 0
        self.hits = self.misses = 0

    # -- generations ----------------------------------------------------------------------------------

    def _current(self, name: str) -> _Generation:
        found = self._generations.get(name)
        if found is None:
            found = self._generations[name] = self._next(name, (0, 0))
        return found

    def _next(self, name: str, cursor: Cursor) -> _Generation:
        self._counter += 1
        generation = self._generations[name] = _Generation(self._counter, cursor)
        return generation

    def projected(self, name: str, cursor: Cursor | None = None) -> None:
        """Read model `name` moved (to `cursor` when known): its answers so far are dropped."""
        previous = self._generations.get(name)
        self._next(name, max(cursor or (0, 0), previous.cursor if previous else (0, 0)))

    def on_notification(self, payload: str | None) -> None:
        """A `PROJECTED_CHANNEL` payload (`name tx position`); None after a reconnection: every read model
        may have moved unheard."""
        if payload is None:
            for name in list(self._generations):
                self.projected(name)
            return
        try:
            name, tx, position, *flag = payload.split(" ")
            cursor = (int(tx), int(position))
        except ValueError:
            log.warning("unreadable projection notification", payload=payload[:200])
            return
        generation = self._generations.get(name)
        if flag == ["unchanged"] and generation is not None:
            generation.cursor = max(generation.cursor, cursor)  # rows as they were: the answers kept stand
        else:
            self.projected(name, cursor)

    async def caught_up(self, name: str) -> None:
        """Before answering a read that waited for a position: start a new generation if the read model's
        cursor in the database is ahead of what this process heard."""
        row = await self.pool.fetchrow(
            "SELECT transaction_id::text::bigint AS tx, position FROM checkpoints WHERE name = $1", name
        )
        if row is not None and (row["tx"], row["position"]) > self._current(name).cursor:
            self.projected(name, (row["tx"], row["position"]))

    async def resync(self) -> None:
        """Every read model whose cursor moved unheard (a lost notification) starts a new generation."""
        rows = await self.pool.fetch("SELECT name, transaction_id::text::bigint AS tx, position FROM checkpoints")
        for row in rows:
            generation = self._generations.get(row["name"])
            if generation is not None and (row["tx"], row["position"]) != generation.cursor:
                self.projected(row["name"], (row["tx"], row["position"]))

    async def run(self) -> None:
        """The poll behind the notifications, until cancelled."""
        while True:
            await asyncio.sleep(self.resync_every)
            try:
                await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    DATABASE.failed(exc, "read cache")
                else:
                    log.warning("read cache resync failed", error=repr(exc))

    # -- answers --------------------------------------------------------------------------------------

    def kept(self, name: str, key: Hashable) -> Answer | None:
        """The answer kept for `key` in read model `name`'s current generation, if any."""
        generation = self._generations.get(name)
        found = generation.answers.get(key) if generation is not None else None
        if found is not None:
            self.hits += 1
            metrics.READ_CACHE.labels(name, "hit").inc()
        return found

    async def answer(self, name: str, key: Hashable, build: Callable[[], Awaitable[Answer]]) -> Answer:
        """The answer kept for `key` in read model `name`'s current generation, else `build()`'s (kept)."""
        generation = self._current(name)
        found = generation.answers.get(key)
        if found is not None:
            generation.answers.move_to_end(key)
            self.hits += 1
            metrics.READ_CACHE.labels(name, "hit").inc()
            return found
        self.misses += 1
        metrics.READ_CACHE.labels(name, "miss").inc()
        answer = await build()
        if self.max_entries > 0 and len(answer.body) <= self.max_bytes // 4:
            self._keep(generation, key, answer)
        return answer

    def _keep(self, generation: _Generation, key: Hashable, answer: Answer) -> None:
        """Kept under the generation taken before the query ran (dropped with it if it ended meanwhile)."""
        previous = generation.answers.pop(key, None)
        if previous is not None:
            generation.size -= len(previous.body)
        generation.answers[key] = answer
        generation.size += len(answer.body)
        while len(generation.answers) > self.max_entries or generation.size > self.max_bytes:
            _, dropped = generation.answers.popitem(last=False)
            generation.size -= len(dropped.body)
