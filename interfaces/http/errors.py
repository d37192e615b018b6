"""The one error envelope: {"error": {"code", "message", "details", "request_id"}}."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from application.errors import ConcurrencyError, PreconditionFailed
from domain.errors import DomainError
from domain.sites.errors import ActivationRefused
from interfaces.http.middleware import security_headers
from interfaces.runtime import DATABASE, is_unavailable

log = structlog.get_logger(__name__)

STATUS_BY_CODE = {
    "PLUGIN_NOT_FOUND": 404,
    "PLUGIN_ALREADY_INSTALLED": 409,
    "PLUGIN_NOT_INSTALLED": 409,
    "PLUGIN_DEPENDENCY_ERROR": 409,
    "PLUGIN_HAS_DEPENDENTS": 409,
    "PLUGIN_VERSION_UNCHANGED": 409,
    "PLUGIN_NO_PREVIOUS_VERSION": 409,
    "PLUGIN_INCOMPATIBLE": 400,
    "PLUGIN_CONFIGURATION_ERROR": 400,
    "PLUGIN_DECLASSIFY_REFUSED": 409,
    "PLUGIN_SOURCE_INVALID": 400,
    "MANIFEST_INVALID": 400,
    "VERSION_CONFLICT": 409,
    "PRECONDITION_FAILED": 412,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "VALIDATION_FAILED": 400,
    "EVENT_TOO_LARGE": 413,
    "USER_NOT_FOUND": 404,
    "ROLE_NOT_FOUND": 404,
    "GRANT_NOT_FOUND": 404,
    "USER_ALREADY_EXISTS": 409,
    "ROLE_ALREADY_EXISTS": 409,
    "PERMISSION_ALREADY_EXISTS": 409,
    "ROLE_PROTECTED": 409,
    "LAST_ADMIN": 409,
    "ESCALATION_FORBIDDEN": 403,
    "USER_PROTECTED": 403,
    "USER_INACTIVE": 409,
    # sites (domain/sites/errors.py)
    "SITE_NOT_FOUND": 404,
    "TASK_NOT_FOUND": 404,
    "TASK_RUN_NOT_FOUND": 404,
    "TASK_ALREADY_EXISTS": 409,
    "TASK_DELETED": 409,
    "TASK_RUN_FINISHED": 409,
    "TASK_RUN_NOT_STARTABLE": 409,
    "SITE_ALREADY_EXISTS": 409,
    "SITE_RETIRED": 409,
    "SITE_HAS_ACTIVE_EXTENSIONS": 409,
    "EXTENSION_ALREADY_ACTIVE": 409,
    "EXTENSION_NOT_ACTIVE": 404,
    "DEACTIVATION_FAILED": 409,
    "FORBIDDEN": 403,
    "SIGNER_LACKS_ROLE": 403,
    "SIGNER_NOT_ALLOWED": 403,
    "SIGNOFF_SAME_SIGNER": 403,
    "SIGNOFF_ALREADY_RECORDED": 409,
    "SIGNOFF_HASH_MISMATCH": 409,
    "REAUTHENTICATION_REQUIRED": 401,
    "PLUGIN_ACTIVE_AT_SITES": 409,
    "REGISTRATION_CLOSED": 403,
    "CURRENT_PASSWORD_WRONG": 403,
    "SESSION_NOT_FOUND": 404,
}

# Errors whose code is shared with plain input errors but whose request was well formed: an activation
# refused by the site policies (VALIDATION_FAILED, every problem in `details.problems`) is a 422.
STATUS_BY_ERROR: dict[type[DomainError], int] = {ActivationRefused: 422}


class ApiError(Exception):
    """An error raised by the HTTP layer itself (bad parameter, missing header, ...)."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


# 401s whose request carried a credential that was refused: `WWW-Authenticate: Bearer error="invalid_token"`
# (RFC 6750), so a client knows to refresh or sign in again rather than to add a token.
REFUSED_CREDENTIALS = {"TOKEN_INVALID", "TOKEN_EXPIRED", "SESSION_REVOKED", "USER_INACTIVE", "TICKET_INVALID", "TICKET_EXPIRED"}
CHALLENGE = 'Bearer realm="charter"'


def challenge(request: Request, code: str) -> str:
    """The `WWW-Authenticate` header of a 401."""
    carried = "authorization" in request.headers or any(
        name in request.query_params for name in ("access_token", "ticket")
    )
    if code in REFUSED_CREDENTIALS and carried:
        return f'{CHALLENGE}, error="invalid_token"'
    if code == "AUTHENTICATION_REQUIRED" and carried:
        return f'{CHALLENGE}, error="invalid_request"'  # a malformed Authorization header, a refused query token
    return CHALLENGE


def envelope(request: Request, status: int, code: str, message: str, details: Any = None, headers=None) -> Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": request.scope.get("state", {}).get("request_id"),
        }
    }
    # also here, for answers that never pass `request_ids` (an error handler's response is complete by itself)
    secure = security_headers(request.scope.get("path", "/"))
    headers = {**secure, **(headers or {})}
    if status == 401 and not any(k.lower() == "www-authenticate" for k in headers):
        headers["WWW-Authenticate"] = challenge(request, code)
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def on_domain_error(request: Request, exc: DomainError) -> Response:
    headers = None
    if isinstance(exc, (ConcurrencyError, PreconditionFailed)) and exc.details.get("current_version") is not None:
        headers = {"ETag": f'"{exc.details["current_version"]}"'}
    status = STATUS_BY_ERROR.get(type(exc)) or STATUS_BY_CODE.get(exc.code, 409)
    return envelope(request, status, exc.code, exc.message, exc.details, headers)


def on_api_error(request: Request, exc: ApiError) -> Response:
    return envelope(request, exc.status, exc.code, exc.message, exc.details)


def on_validation_error(request: Request, exc: ValidationException) -> Response:
    extra = exc.extra if isinstance(exc.extra, list) else []
    if any(isinstance(e, dict) and e.get("key") == "data" and e.get("source") == "body" for e in extra):
        # a route with a typed body (`data: X`) was sent none
        return envelope(request, 400, "VALIDATION_FAILED", "a JSON request body is required", {"field": "body"})
    fields = [e.get("key") for e in extra if isinstance(e, dict) and e.get("key")]
    details: dict[str, Any] = {"errors": extra}
    if fields:
        details["field"] = fields[0]
    message = exc.detail
    if extra and isinstance(extra[0], dict) and extra[0].get("message"):
        message = f"{extra[0].get('key', 'request')}: {extra[0]['message']}"
    return envelope(request, 400, "VALIDATION_FAILED", message, details)


def on_http_error(request: Request, exc: HTTPException) -> Response:
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
    code = codes.get(exc.status_code, "HTTP_ERROR" if exc.status_code < 500 else "INTERNAL_ERROR")
    details = exc.extra if isinstance(exc.extra, dict) else None
    if exc.status_code == 413 and not details:
        details = {"field": "body"}  # the route's body limit (1 MiB for JSON, the archive cap for uploads)
    if exc.status_code >= 500:  # the framework's own (a dependency that failed its type): logged as ours are
        log.exception("unhandled error", path=request.url.path, status=exc.status_code)
    # keeps the exception's headers: `Allow` on a 405, `WWW-Authenticate`, `Retry-After`
    return envelope(request, exc.status_code, code, exc.detail, details, exc.headers)


def on_undecodable(request: Request, exc: UnicodeDecodeError) -> Response:
    """Text the client sent that is not UTF-8 and that litestar decodes itself (multipart form fields)."""
    return envelope(request, 400, "VALIDATION_FAILED", "the request body is not valid UTF-8 text", {"field": "body"})


RETRY_AFTER_UNAVAILABLE = "2"
# A read model is not in the shape this code reads (its projection is being created, or rebuilt after an
# upgrade changed its version): 503 until the rebuild swaps it in, each distinct cause logged once.
_NOT_READY = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)
_NOT_READY_LOGGED: set[str] = set()
_NOT_READY_LOG_LIMIT = 64


def on_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, _NOT_READY):
        cause = str(exc)[:200]
        if cause not in _NOT_READY_LOGGED and len(_NOT_READY_LOGGED) < _NOT_READY_LOG_LIMIT:
            _NOT_READY_LOGGED.add(cause)
            log.warning("read model not ready", path=request.url.path, cause=cause)
        return envelope(
            request,
            503,
            "READ_MODEL_NOT_READY",
            "a read model is being built or rebuilt (after an upgrade); retry shortly",
            headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
        )
    if is_unavailable(exc):  # logged once per outage by DATABASE, not once per request
        DATABASE.failed(exc, "request")
        return envelope(
            request,
            503,
            "DATABASE_UNAVAILABLE",
            "the database is unavailable; retry shortly",
            headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
        )
    log.exception("unhandled error", path=request.url.path)
    return envelope(request, 500, "INTERNAL_ERROR", "an unexpected error occurred; see the server log for this request id")


EXCEPTION_HANDLERS = {
    DomainError: on_domain_error,
    ApiError: on_api_error,
    ValidationException: on_validation_error,
    NotFoundException: on_http_error,
    HTTPException: on_http_error,
    UnicodeDecodeError: on_undecodable,
    Exception: on_unexpected,
}
