"""The services the plugin, archive, event and operations controllers use, as Litestar dependencies.

Each controller names what it needs (`dependencies = {...}` at class level) and receives those services
only, never the whole `Runtime`; this module is the one place that reaches into the runtime for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from litestar.datastructures import State
from litestar.di import Provide

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.plugins.disclosure import ConfigDisclosure
from interfaces.runtime import EventHub
from interfaces.runtime import Authority
from interfaces.readiness import Readiness
from interfaces.runtime import Runtime
from projections.event_log import EventLogQueries
from projections.plugins.queries import PluginQueries


@dataclass(frozen=True)
class Commands:
    """Runs one command through the application (counted and timed)."""

    execute: Callable[[Command, CommandContext], Awaitable[CommandResult]]


@dataclass(frozen=True)
class ReadModels:
    """Read-your-writes: waits until a projection has handled a position (None: all committed now)."""

    wait_for: Callable[[str, int | None], Awaitable[None]]


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
    return ReadModels(_runtime(state).wait_for)


def provide_plugin_queries(state: State) -> PluginQueries:
    return PluginQueries(_runtime(state).pool)


def provide_event_log(state: State) -> EventLogQueries:
    return EventLogQueries(_runtime(state).pool)


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


def provide_readiness(state: State) -> Readiness:
    return _runtime(state).readiness


def _provide(fn: Callable[[State], object]) -> Provide:
    return Provide(fn, sync_to_thread=False)


PLUGINS = {
    "commands": _provide(provide_commands),
    "read_models": _provide(provide_read_models),
    "plugins": _provide(provide_plugin_queries),
    "disclosure": _provide(provide_disclosure),
    "authority": _provide(provide_authority),
    "archive_max_bytes": _provide(provide_archive_max_bytes),
}
ARCHIVES = {"archives": _provide(provide_archives)}
EVENTS = {"events": _provide(provide_event_log), "live": _provide(provide_live_feed), "authority": _provide(provide_authority)}
OPERATIONS = {"readiness": _provide(provide_readiness)}
