"""Domain errors: each carries a stable code; the HTTP layer maps codes to statuses."""

from __future__ import annotations

import re
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


class FieldNotSealed(DomainError):
    code = "VALIDATION_FAILED"


class DeclassifyRefused(DomainError):
    """The field is still marked secret by the current schema: declassifying it would not hold."""

    code = "PLUGIN_DECLASSIFY_REFUSED"


class VersionUnchanged(DomainError):
    code = "PLUGIN_VERSION_UNCHANGED"


class NothingToRollBack(DomainError):
    code = "PLUGIN_NO_PREVIOUS_VERSION"


def field_of(message: str) -> str | None:
    """The dotted field a msgspec validation message is about (`$.a.b`, a missing or an unknown field)."""
    at = re.search(r"(?:at|in) `\$((?:\.[^`.\[]+|\[\d+\])*)`", message)
    path = [p for p in re.split(r"\.|\[|\]", at.group(1)) if p] if at else []
    named = re.search(r"(?:missing required|unknown) field `([^`]*)`", message)
    if named:
        path.append(named.group(1))
    return ".".join(path) or None
