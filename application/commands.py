"""Commands: what a caller asks Charter to do (imperative names)."""

from __future__ import annotations

from typing import Any

import msgspec


class Command(msgspec.Struct, kw_only=True, frozen=True):
    """Base of all commands."""


class InstallPlugin(Command):
    manifest: dict[str, Any]
    source: dict[str, Any]
    config: dict[str, Any] = {}
    auto_enable: bool = False
    archive: bytes | None = None


class UpdatePlugin(Command):
    plugin_id: str
    manifest: dict[str, Any]
    source: dict[str, Any]
    archive: bytes | None = None


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
