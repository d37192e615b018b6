"""Read model `plugins`: which plugins are installed, at which version, who depends on whom.

A manifest is kept once, in `plugin_versions` (one row per install or update); a plugin's row names
the version row whose manifest it runs (`manifest_seq`), so the events that change a plugin's state
(enable, restart, configure, ...) rewrite a small row, not a copy of its manifest (version 2).

Written in sets (projections/batch.py): `apply` folds one event into the rows, pure; the batch's rows
are then upserted table by table."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from packaging.version import Version

from application.ports import StoredEvent
from projections.batch import BatchProjection, Needs, Row, Rows, Table

NAME = "plugins"
SCHEMA = "rm_plugins"
VERSION = 2

DDL = """
CREATE TABLE plugins (
    plugin_id       text PRIMARY KEY,
    name            text NOT NULL,
    version         text NOT NULL,
    version_key     numeric[] NOT NULL,
    description     text NOT NULL DEFAULT '',
    author          text NOT NULL DEFAULT '',
    category        text NOT NULL DEFAULT 'general',
    tags            text[] NOT NULL DEFAULT '{}',
    capabilities    text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL,
    enabled         boolean NOT NULL,
    disabled_reason text,
    manifest_seq    integer NOT NULL,
    config          jsonb NOT NULL DEFAULT '{}',
    source          jsonb NOT NULL DEFAULT '{}',
    restarts        integer NOT NULL DEFAULT 0,
    reloads         integer NOT NULL DEFAULT 0,
    installed_at    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    stream_version  integer NOT NULL,
    last_position   bigint NOT NULL
);
CREATE INDEX plugins_status ON plugins (status);
CREATE INDEX plugins_category ON plugins (category);
CREATE INDEX plugins_tags ON plugins USING gin (tags);

CREATE TABLE plugin_versions (
    plugin_id     text NOT NULL,
    seq           integer NOT NULL,
    version       text NOT NULL,
    manifest      jsonb NOT NULL,
    source        jsonb NOT NULL,
    installed_at  timestamptz NOT NULL,
    PRIMARY KEY (plugin_id, seq)
);

CREATE TABLE plugin_dependencies (
    plugin_id    text NOT NULL,
    depends_on   text NOT NULL,
    requirement  text NOT NULL,
    PRIMARY KEY (plugin_id, depends_on)
);
CREATE INDEX plugin_dependencies_target ON plugin_dependencies (depends_on);
"""


@functools.lru_cache(maxsize=4096)
def _version_key(version: str) -> tuple[int, ...]:
    v = Version(version)
    pre = [{"a": -3, "b": -2, "rc": -1}[v.pre[0]], v.pre[1]] if v.pre else [0, 0]
    return (*v.release, *([0] * (8 - len(v.release))), *pre, v.post or 0, v.dev if v.dev is not None else 0)


def version_key(version: str) -> list[int]:
    """Sorts versions by precedence: release numbers, then pre-releases before the final release."""
    return list(_version_key(version))


PLUGINS = Table("plugins", ("plugin_id",), whole_rows=True)  # no manifest in it: a few hundred bytes
VERSIONS = Table("plugin_versions", ("plugin_id", "seq"))
DEPENDENCIES = Table("plugin_dependencies", ("plugin_id", "depends_on"))
MANIFEST_CHANGES = frozenset({"Plugin.Installed", "Plugin.Reinstalled", "Plugin.Updated", "Plugin.RolledBack"})


def _plugin_id(event: StoredEvent) -> str:
    return event.stream_id[PREFIX:]  # "plugin:<id>"


PREFIX = len("plugin:")


def _described(m: dict[str, Any], seq: int) -> Row:
    """The columns a manifest decides; `seq`: its row in plugin_versions."""
    return {
        "name": m["name"],
        "version": m["version"],
        "version_key": version_key(m["version"]),
        "description": m.get("description", ""),
        "author": m.get("author", ""),
        "category": m.get("category", "general"),
        "tags": list(m.get("tags", [])),
        "capabilities": list(m.get("capabilities", [])),
        "manifest_seq": seq,
    }


class PluginsProjection(BatchProjection):
    name = NAME
    schema = SCHEMA
    version = VERSION
    ddl = DDL
    tables = (PLUGINS, VERSIONS, DEPENDENCIES)
    stream_types = frozenset({"plugin"})

    def needs(self, events: Sequence[StoredEvent]) -> Needs:
        """Every plugin row of the batch; the version history only where a rollback looks a version up."""
        return {
            "plugins": {_plugin_id(e) for e in events},
            "plugin_versions": {_plugin_id(e) for e in events if e.event_type == "Plugin.RolledBack"},
        }

    def apply(self, rows: Rows, e: StoredEvent) -> None:
        pid, p = _plugin_id(e), e.payload
        touched = {"updated_at": e.recorded_at, "stream_version": e.stream_version, "last_position": e.position}
        match e.event_type:
            case "Plugin.Installed" | "Plugin.Reinstalled":
                rows.put("plugins", {
                    "plugin_id": pid, **_described(p["manifest"], e.stream_version),
                    "status": "enabled" if p["enabled"] else "installed", "enabled": p["enabled"],
                    "disabled_reason": None, "config": p["config"], "source": p["source"], "restarts": 0, "reloads": 0,
                    "installed_at": e.recorded_at, **touched,
                })  # fmt: skip
                _set_dependencies(rows, pid, p["manifest"])
                _record_version(rows, pid, e, p["manifest"], p["source"])
            case "Plugin.Updated":
                _set_manifest(rows, pid, touched, p["manifest"], e.stream_version, p["source"], p["config"])
                _record_version(rows, pid, e, p["manifest"], p["source"])
            case "Plugin.RolledBack":
                found = [v for v in rows.group("plugin_versions", pid) if v["version"] == p["to_version"]]
                if found:  # the latest recording of that version
                    version = found[-1]
                    _set_manifest(rows, pid, touched, version["manifest"], version["seq"], version["source"], p["config"])
            case "Plugin.Enabled":
                rows.update("plugins", pid, status="enabled", enabled=True, disabled_reason=None, **touched)
            case "Plugin.Disabled":
                rows.update("plugins", pid, status="disabled", enabled=False, disabled_reason=p["reason"], **touched)
            case "Plugin.Restarted":
                if row := rows.get("plugins", pid):
                    rows.update("plugins", pid, restarts=row["restarts"] + 1, **touched)
            case "Plugin.Reloaded":
                if row := rows.get("plugins", pid):
                    rows.update("plugins", pid, reloads=row["reloads"] + 1, **touched)
            case "Plugin.ConfigurationChanged" | "Plugin.Declassified":
                rows.update("plugins", pid, config=p["config"], **touched)
            case "Plugin.Uninstalled":
                cleanup = {"config": {}} if p.get("cleanup_data") else {}
                rows.update("plugins", pid, status="uninstalled", enabled=False, **cleanup, **touched)
                rows.clear("plugin_dependencies", pid)


def _set_manifest(rows: Rows, pid: str, touched: Row, m: dict[str, Any], seq: int, source: dict, config: dict) -> None:
    if rows.update("plugins", pid, **_described(m, seq), source=source, config=config, **touched) is not None:
        _set_dependencies(rows, pid, m)


def _set_dependencies(rows: Rows, pid: str, manifest: dict[str, Any]) -> None:
    rows.clear("plugin_dependencies", pid)
    for dep, spec in manifest.get("dependencies", {}).items():
        rows.put("plugin_dependencies", {"plugin_id": pid, "depends_on": dep, "requirement": spec})


def _record_version(rows: Rows, pid: str, e: StoredEvent, m: dict[str, Any], source: dict) -> None:
    rows.put("plugin_versions", {
        "plugin_id": pid, "seq": e.stream_version, "version": m["version"], "manifest": m, "source": source,
        "installed_at": e.recorded_at,
    })  # fmt: skip
