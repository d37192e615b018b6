"""Errors the sites feature raises (codes mapped to HTTP statuses in interfaces/http/errors.py)."""

from __future__ import annotations

from domain.errors import DomainError


class SiteInvalid(DomainError):
    """A site's id, name, timezone or metadata is malformed (the field is named)."""

    code = "VALIDATION_FAILED"


class SiteNotFound(DomainError):
    code = "SITE_NOT_FOUND"


class SiteExists(DomainError):
    code = "SITE_ALREADY_EXISTS"


class SiteRetired(DomainError):
    code = "SITE_RETIRED"


class SiteHasActiveExtensions(DomainError):
    """A site is retired only once nothing is active there (details: `active`)."""

    code = "SITE_HAS_ACTIVE_EXTENSIONS"


class ActivationRefused(DomainError):
    """The activation policy found errors; details: `problems` (every one, each with code, field,
    message, severity) and `configuration_hash`."""

    code = "VALIDATION_FAILED"


class ExtensionAlreadyActive(DomainError):
    code = "EXTENSION_ALREADY_ACTIVE"


class ExtensionNotActive(DomainError):
    code = "EXTENSION_NOT_ACTIVE"


class HasActiveDependents(DomainError):
    """Deactivation refused: active extensions of the site depend on this one (details: `dependents`)."""

    code = "DEACTIVATION_FAILED"


class ForceNotAllowed(DomainError):
    """Forcing a deactivation past its dependents takes `extensions:force` at the site."""

    code = "FORBIDDEN"


class ReasonRequired(DomainError):
    code = "VALIDATION_FAILED"


class AspectUnknown(DomainError):
    """The extension's manifest declares no such compliance aspect."""

    code = "VALIDATION_FAILED"


class SignerLacksRole(DomainError):
    """The signer does not hold the aspect's role at the site (nor everywhere)."""

    code = "SIGNER_LACKS_ROLE"


class SignerNotAllowed(DomainError):
    """The signer is not a known, active user."""

    code = "SIGNER_NOT_ALLOWED"


class SameSignerRefused(DomainError):
    """The manifest requires different people for this aspect and one the signer already signed."""

    code = "SIGNOFF_SAME_SIGNER"


class AlreadySigned(DomainError):
    code = "SIGNOFF_ALREADY_RECORDED"


class SignoffHashMismatch(DomainError):
    """The configuration hash named by the signer is not the active configuration's."""

    code = "SIGNOFF_HASH_MISMATCH"


class ReauthenticationFailed(DomainError):
    """The signer did not prove who they are at signing: wrong password, or an access token that is not
    theirs or was issued more than five minutes ago."""

    code = "REAUTHENTICATION_REQUIRED"


class PluginActiveAtSites(DomainError):
    """Uninstall refused: the plugin is active at some sites (details: `sites`)."""

    code = "PLUGIN_ACTIVE_AT_SITES"
