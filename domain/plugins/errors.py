"""Errors the plugins feature raises (codes mapped to HTTP statuses in interfaces/http/errors.py)."""

from __future__ import annotations

from domain.errors import DomainError


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
