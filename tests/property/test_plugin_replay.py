"""Any sequence of plugin commands: what the aggregate records replays into the very same state.

The events go through the same mapping the repository uses to write and read them (payload as JSON,
envelope from the row), so a field the aggregate sets but does not record, or records in a form that
does not survive JSON, shows up as a difference.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from application.ports import StoredEvent
from application.unit import Loaded
from domain.errors import DomainError
from domain.plugins.plugin import STREAM_TYPE, Plugin, plugin_uuid
from infrastructure.eventlog.eventstore import GENESIS
from infrastructure.eventlog.repository import reconstruct, to_new_events

PLUGIN_ID = "prop"
STATE = ("plugin_id", "installed", "enabled", "disabled_reason", "config", "manifest_data", "source", "versions",
         "restarts", "reloads", "current_version", "status", "version")

versions = st.sampled_from(["1.0.0", "1.1.0", "2.0.0", "2.1.0"])
reasons = st.none() | st.sampled_from(["", "incident", "maintenance"])
configs = st.dictionaries(st.sampled_from(["level", "mode", "token"]), st.integers(0, 3) | st.text(max_size=3), max_size=3)

commands = st.one_of(
    st.tuples(st.just("update"), versions),
    st.tuples(st.just("roll_back"), st.none() | versions),
    st.tuples(st.just("enable"), reasons),
    st.tuples(st.just("disable"), reasons),
    st.tuples(st.just("restart"), reasons),
    st.tuples(st.just("reload"), reasons),
    st.tuples(st.just("configure"), configs),
    st.tuples(st.just("uninstall"), st.booleans()),
    st.tuples(st.just("reinstall"), versions),
)


def manifest(version: str) -> dict[str, Any]:
    return {"id": PLUGIN_ID, "name": "Prop", "version": version}


def run(plugin: Plugin, command: tuple[str, Any]) -> None:
    name, arg = command
    match name:
        case "update":
            plugin.update(manifest(arg), {"v": arg}, {"resealed": arg})
        case "roll_back":
            plugin.roll_back(arg, {"resealed": f"back-to-{arg}"})
        case "enable" | "disable" | "restart" | "reload":
            getattr(plugin, name)(arg)
        case "configure":
            plugin.configure(arg, sorted(k for k in set(plugin.config) | set(arg) if plugin.config.get(k) != arg.get(k)))
        case "uninstall":
            plugin.uninstall("gone", forced=arg, cleanup_data=arg)
        case "reinstall":
            plugin.reinstall(manifest(arg), {"v": arg}, {}, False)


def stored(loaded: Loaded[Plugin], start: int) -> list[StoredEvent]:
    """The pending events as the store would hand them back (JSON round trip)."""
    out = []
    for offset, new in enumerate(to_new_events(loaded, {"actor": "prop"})):
        out.append(
            StoredEvent(
                position=start + offset, transaction_id=1, event_id=new.event_id, stream_id=new.stream_id,
                stream_type=new.stream_type, stream_version=new.stream_version, event_type=new.event_type,
                schema_version=1, payload=msgspec.json.decode(msgspec.json.encode(new.payload)),
                metadata=new.metadata, site_id=None, recorded_at=new.recorded_at, hash=GENESIS,
            )
        )
    return out


def state(plugin: Plugin) -> dict[str, Any]:
    return {name: getattr(plugin, name) for name in STATE}


@settings(max_examples=100, deadline=None)
@given(start_version=versions, enabled=st.booleans(), config=configs, script=st.lists(commands, max_size=25))
def test_replaying_the_recorded_events_rebuilds_the_same_plugin(
    start_version: str, enabled: bool, config: dict[str, Any], script: list[tuple[str, Any]]
) -> None:
    plugin = Plugin(plugin_id=PLUGIN_ID, manifest=manifest(start_version), source={"v": start_version},
                    config=config, enabled=enabled)
    loaded = Loaded(plugin, f"{STREAM_TYPE}:{PLUGIN_ID}", STREAM_TYPE, 0, GENESIS)
    log = stored(loaded, 1)

    for command in script:
        before = plugin.version
        try:
            run(plugin, command)
        except DomainError:
            assert plugin.version == before, f"{command} was refused but changed the aggregate"
        log.extend(stored(loaded, len(log) + 1))

    assert [e.stream_version for e in log] == list(range(1, plugin.version + 1))
    replayed = reconstruct(Plugin, plugin_uuid(PLUGIN_ID), log)
    assert state(replayed) == state(plugin)
    assert replayed.version == plugin.version
    assert all(e.recorded_at.tzinfo is not None and e.recorded_at <= datetime.now(timezone.utc) for e in log)
