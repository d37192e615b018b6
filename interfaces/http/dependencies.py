"""The services the plugin, archive, event and operations controllers use, as Litestar dependencies.

Each controller names what it needs (`dependencies = {...}` at class level) and receives those services
only, never the whole `Runtime`; this module is the one place that reaches into the runtime for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from litestar.datastructures import State
from litestar.di import Provide

from application.as_of import History
from application.sites.ports import ReportArchive
from application.commands import Command
from application.context import CommandContext, CommandResult
from application.plugins.disclosure import ConfigDisclosure
from interfaces.runtime import EventHub
from interfaces.runtime import Answer, Authority, StreamTickets
from interfaces.readiness import Readiness
from interfaces.runtime import AuditService, Runtime
from projections.event_log import EventLogQueries
from projections.plugins.queries import PluginQueries
from projections.tasks.queries import TaskQueries


@dataclass(frozen=True)
class Commands:
    """Runs one command through the application (counted and timed)."""

    execute: Callable[[Command, CommandContext], Awaitable[CommandResult]]


@dataclass(frozen=True)
class ReadModels:
    """Read-your-writes: `wait_for` waits until a projection has handled a position (None: all committed
    now). `answer(projection, key, build)`: the encoded answer kept for `key` until the read model moves,
    else `build()`'s (the key names the query, its parameters and the caller's site scope)."""

    wait_for: Callable[[str, int | None], Awaitable[None]]
    answer: Callable[[str, Hashable, Callable[[], Awaitable[Answer]]], Awaitable[Answer]]


@dataclass(frozen=True)
class PluginReads:
    """What the catalog's read routes use, as one dependency: Litestar resolves two or more dependencies of
    a route in a task group of their own, which costs a read more than the rest of its work."""

    plugins: PluginQueries
    read_models: ReadModels
    disclosure: ConfigDisclosure
    history: History  # ?as_of=: the log replayed as of a point


@dataclass(frozen=True)
class Archives:
    """Stored plugin archives: `get(sha256)` answers the bytes, or None when no archive has that digest."""

    get: Callable[[str], Awaitable[bytes | None]]


@dataclass(frozen=True)
class LiveFeed:
    """What the SSE route needs: the hub (None without NATS) and the heartbeat interval in seconds."""

    hub: EventHub | None
    heartbeat: float


def _runtime(state: State) -> Runtime:
    return state.runtime


def provide_commands(state: State) -> Commands:
    return Commands(_runtime(state).execute)


def provide_read_models(state: State) -> ReadModels:
    runtime = _runtime(state)
    return ReadModels(runtime.wait_for, runtime.answer)


def provide_plugin_queries(state: State) -> PluginQueries:
    return PluginQueries(_runtime(state).pool)


def provide_task_queries(state: State) -> TaskQueries:
    return TaskQueries(_runtime(state).pool)


def provide_plugin_reads(state: State) -> PluginReads:
    runtime = _runtime(state)
    return PluginReads(
        PluginQueries(runtime.pool), ReadModels(runtime.wait_for, runtime.answer), ConfigDisclosure(runtime.cipher),
        runtime.history,
    )


def provide_event_log(state: State) -> EventLogQueries:
    return EventLogQueries(_runtime(state).pool)


def provide_history(state: State) -> History:
    return _runtime(state).history


def provide_report_archive(state: State) -> ReportArchive:
    return _runtime(state).report_archive


def provide_disclosure(state: State) -> ConfigDisclosure:
    return ConfigDisclosure(_runtime(state).cipher)


def provide_archives(state: State) -> Archives:
    return Archives(_runtime(state).archives.get)


def provide_archive_max_bytes(state: State) -> int:
    return _runtime(state).settings.archive_max_bytes


def provide_authority(state: State) -> Authority:
    return _runtime(state).authority


def provide_live_feed(state: State) -> LiveFeed:
    runtime = _runtime(state)
    return LiveFeed(runtime.hub, runtime.settings.sse_heartbeat)


def provide_stream_tickets(state: State) -> StreamTickets:
    return _runtime(state).stream_tickets


def provide_readiness(state: State) -> Readiness:
    return _runtime(state).readiness


def provide_audit(state: State) -> AuditService:
    return _runtime(state).audit


def _provide(fn: Callable[[State], object]) -> Provide:
    return Provide(fn, sync_to_thread=False)


PLUGINS = {
    "commands": _provide(provide_commands),
    "read_models": _provide(provide_read_models),
    "plugins": _provide(provide_plugin_queries),
    "reads": _provide(provide_plugin_reads),
    "disclosure": _provide(provide_disclosure),
    "authority": _provide(provide_authority),
    "archive_max_bytes": _provide(provide_archive_max_bytes),
    "history": _provide(provide_history),
}
TASKS = {
    "commands": _provide(provide_commands),
    "read_models": _provide(provide_read_models),
    "tasks": _provide(provide_task_queries),
    "authority": _provide(provide_authority),
}
REPORTS = {"history": _provide(provide_history), "report_archive": _provide(provide_report_archive)}
ARCHIVES = {"archives": _provide(provide_archives)}
EVENTS = {
    "events": _provide(provide_event_log),
    "live": _provide(provide_live_feed),
    "authority": _provide(provide_authority),
    "tickets": _provide(provide_stream_tickets),
}
OPERATIONS = {"readiness": _provide(provide_readiness)}
AUDIT = {"audit": _provide(provide_audit)}
