"""Domain errors: each carries a stable code; the HTTP layer maps codes to statuses."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A rule of the domain refused a command."""

    code = "DOMAIN_RULE_VIOLATED"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class PluginNotFound(DomainError):
    code = "PLUGIN_NOT_FOUND"


class PluginAlreadyInstalled(DomainError):
    code = "PLUGIN_ALREADY_INSTALLED"


class PluginNotInstalled(DomainError):
    code = "PLUGIN_NOT_INSTALLED"


class ManifestInvalid(DomainError):
    code = "MANIFEST_INVALID"


class PluginIncompatible(DomainError):
    code = "PLUGIN_INCOMPATIBLE"


class DependencyError(DomainError):
    code = "PLUGIN_DEPENDENCY_ERROR"


class HasDependents(DomainError):
    code = "PLUGIN_HAS_DEPENDENTS"


class ConfigurationInvalid(DomainError):
    code = "PLUGIN_CONFIGURATION_ERROR"


class VersionUnchanged(DomainError):
    code = "PLUGIN_VERSION_UNCHANGED"


class NothingToRollBack(DomainError):
    code = "PLUGIN_NO_PREVIOUS_VERSION"
