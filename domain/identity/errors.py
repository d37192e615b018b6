"""Errors the identity feature raises (codes mapped to HTTP statuses in interfaces/http/errors.py)."""

from __future__ import annotations

from domain.errors import DomainError


class InvalidPermission(DomainError):
    code = "VALIDATION_FAILED"


class InvalidRoleName(DomainError):
    code = "VALIDATION_FAILED"


class InvalidSiteId(DomainError):
    code = "VALIDATION_FAILED"


class EscalationForbidden(DomainError):
    code = "ESCALATION_FORBIDDEN"


class UserProtected(DomainError):
    code = "USER_PROTECTED"


class LastAdmin(DomainError):
    code = "LAST_ADMIN"


class RoleProtected(DomainError):
    code = "ROLE_PROTECTED"


class RoleDeleted(DomainError):
    code = "ROLE_NOT_FOUND"


class InvalidEmail(DomainError):
    code = "VALIDATION_FAILED"


class GrantNotHeld(DomainError):
    code = "GRANT_NOT_FOUND"


class UserNotFound(DomainError):
    code = "USER_NOT_FOUND"


class UserExists(DomainError):
    code = "USER_ALREADY_EXISTS"


class RoleNotFound(DomainError):
    code = "ROLE_NOT_FOUND"


class RoleExists(DomainError):
    code = "ROLE_ALREADY_EXISTS"


class PermissionExists(DomainError):
    code = "PERMISSION_ALREADY_EXISTS"


class WeakPassword(DomainError):
    code = "VALIDATION_FAILED"


class PasswordRequired(DomainError):
    code = "VALIDATION_FAILED"


class RegistrationClosed(DomainError):
    code = "REGISTRATION_CLOSED"


class CurrentPasswordWrong(DomainError):
    code = "CURRENT_PASSWORD_WRONG"


class SessionNotFound(DomainError):
    code = "SESSION_NOT_FOUND"
