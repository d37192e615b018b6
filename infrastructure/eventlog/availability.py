"""When PostgreSQL is away: which errors mean "unavailable", and one log line per outage, not per request.

A stopped, restarting or overloaded server shows up in many shapes (refused connections, closed
connections, "the database system is starting up", "too many clients", timeouts on connect or acquire).
Requests that meet one answer 503 `DATABASE_UNAVAILABLE`; background loops (projectors, relay,
rate-limit sync, access cache) retry quietly. `OUTAGES` logs the transitions ("unavailable",
"available again after N s") and, while it lasts, a count of failures every `SUMMARY_EVERY` seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import asyncpg
import structlog

from infrastructure.telemetry import metrics

log = structlog.get_logger("charter.availability")

SUMMARY_EVERY = 10.0

# SQLSTATE classes and codes that mean the server cannot serve now, not that the request is wrong.
_UNAVAILABLE_CLASSES = ("08",)  # connection exception
_UNAVAILABLE_CODES = {"53300", "57P01", "57P02", "57P03", "53000", "58000", "58030"}
_CLOSED_MESSAGES = ("connection is closed", "pool is closing", "pool is closed", "connection was closed")


def is_unavailable(exc: BaseException | None) -> bool:
    """True when `exc`, what caused it, or a member of a group it is, means the database cannot be
    reached or cannot serve now. Causes and groups can form cycles (a member's context is the group
    being handled), so each exception is looked at once."""
    todo, seen = [exc], set()
    while todo and len(seen) < 64:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if _unavailable_itself(exc):
            return True
        if isinstance(exc, BaseExceptionGroup):
            todo.extend(exc.exceptions)
        todo.extend((exc.__cause__, exc.__context__))
    return False


def _unavailable_itself(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError, asyncpg.ConnectionDoesNotExistError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        code = getattr(exc, "sqlstate", "") or ""
        if code in _UNAVAILABLE_CODES or code[:2] in _UNAVAILABLE_CLASSES:
            return True
    if isinstance(exc, asyncpg.InterfaceError) and any(m in str(exc) for m in _CLOSED_MESSAGES):
        return True
    # A connection the server terminated (shutdown, restart) can fail its next statement with this
    # client-side state error before asyncpg notices the socket is gone.
    return isinstance(exc, asyncpg.exceptions._base.InternalClientError) and "another operation" in str(exc)


@dataclass
class Outage:
    """The state of one dependency, logged on every change and summarised while it is down."""

    name: str
    down_since: float | None = None
    failures: int = 0
    last_error: str | None = None
    last_summary: float = 0.0
    changed_at: float = field(default_factory=time.monotonic)
    last_failure: float = 0.0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, where: str, since: float | None = None) -> None:
        """`since`: when the failed operation began (monotonic); a failure of an operation that began
        before the last recovery is stale news and does not open a new outage."""
        now = time.monotonic()
        if since is not None and self.down_since is None and since < self.changed_at:
            return
        self.failures += 1
        self.last_failure = now
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.down_since is None:
            self.down_since = self.changed_at = self.last_summary = now
            metrics.DEPENDENCY_UP.labels(self.name).set(0)
            log.error(f"{self.name} unavailable", where=where, error=self.last_error)
        elif now - self.last_summary >= SUMMARY_EVERY:
            self.last_summary = now
            log.warning(
                f"{self.name} still unavailable",
                seconds=round(now - self.down_since, 1),
                failures=self.failures,
                error=self.last_error,
            )

    def succeeded(self, since: float | None = None) -> None:
        """`since`: when the successful operation began (monotonic); one that was already under way when
        the latest failure was seen (a statement finishing on a connection a stopping server had not
        closed yet) proves nothing about recovery and does not end the outage."""
        if self.down_since is None or (since is not None and since < self.last_failure):
            return
        now = time.monotonic()
        log.warning(f"{self.name} available again", seconds=round(now - self.down_since, 1), failures=self.failures)
        self.down_since, self.failures, self.last_error, self.changed_at = None, 0, None, now
        metrics.DEPENDENCY_UP.labels(self.name).set(1)


DATABASE = Outage("database")


class _PoolFloorFilter(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reopen its minimum connections; during an
    outage that is counted by DATABASE instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_unavailable(exc):
            DATABASE.failed(exc, "pool")
            return False
        return True


def quiet_pool_logs() -> None:
    """Install the filter once (idempotent)."""
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _PoolFloorFilter) for f in pool_log.filters):
        pool_log.addFilter(_PoolFloorFilter())
