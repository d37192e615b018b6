"""Commands: what a caller asks Charter to do (imperative names)."""

from __future__ import annotations

from typing import Any

import msgspec


class Command(msgspec.Struct, kw_only=True, frozen=True):
    """Base of all commands."""


class InstallPlugin(Command):
    """Install the plugin found in exactly one place: an uploaded `archive` (zip bytes, with its
    `filename`), an installed distribution's `entrypoint` (at `version` when given), or a `manifest`
    at hand (recorded with `source`, e.g. by benchmarks)."""

    manifest: dict[str, Any] | None = None
    source: dict[str, Any] = {}
    config: dict[str, Any] = {}
    auto_enable: bool = False
    archive: bytes | None = None
    filename: str | None = None
    entrypoint: str | None = None
    version: str | None = None


class UpdatePlugin(Command):
    """Move a plugin to the version found in exactly one place (see `InstallPlugin`)."""

    plugin_id: str
    manifest: dict[str, Any] | None = None
    source: dict[str, Any] = {}
    archive: bytes | None = None
    filename: str | None = None
    entrypoint: str | None = None
    version: str | None = None


class RollBackPlugin(Command):
    plugin_id: str
    to_version: str | None = None


class EnablePlugin(Command):
    plugin_id: str
    reason: str | None = None


class DisablePlugin(Command):
    plugin_id: str
    reason: str | None = None


class RestartPlugin(Command):
    plugin_id: str
    reason: str | None = None


class ReloadPlugin(Command):
    plugin_id: str
    reason: str | None = None


class ConfigurePlugin(Command):
    plugin_id: str
    config: dict[str, Any]


class DeclassifyConfig(Command):
    """Stop treating sealed configuration fields as secret (stored in clear from now on)."""

    plugin_id: str
    fields: list[str]
    reason: str


class UninstallPlugin(Command):
    plugin_id: str
    reason: str | None = None
    force: bool = False
    cleanup_data: bool = False
