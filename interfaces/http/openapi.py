"""The OpenAPI document tells the truth about errors: every route lists the error statuses it can
answer, each with the one error envelope (`ErrorEnvelope`), instead of litestar's own 400 shape."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, RequestBody, Schema

from interfaces.http.security import rule_of

ERROR_ENVELOPE = Schema(
    type=OpenAPIType.OBJECT,
    required=["error"],
    properties={
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["code", "message", "details", "request_id"],
            properties={
                "code": Schema(type=OpenAPIType.STRING, description="stable code, e.g. VALIDATION_FAILED, PLUGIN_NOT_FOUND"),
                "message": Schema(type=OpenAPIType.STRING, description="what is wrong, for a person"),
                "details": Schema(
                    type=OpenAPIType.OBJECT,
                    description="machine-readable details; `field` names the offending field, parameter or header",
                    additional_properties=True,
                ),
                "request_id": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL], description="also the X-Request-Id header"),
            },
        )
    },
    description='The one error envelope: {"error": {"code", "message", "details", "request_id"}}',
)

MEANING = {
    400: "Malformed or invalid input (VALIDATION_FAILED, MALFORMED_JSON, ...); `details.field` names it",
    401: "No valid access token (AUTHENTICATION_REQUIRED, TOKEN_EXPIRED, INVALID_CREDENTIALS, ...)",
    403: "The caller lacks the permission (FORBIDDEN)",
    404: "No such resource (PLUGIN_NOT_FOUND, USER_NOT_FOUND, ...)",
    409: "The command conflicts with the current state (VERSION_CONFLICT, PLUGIN_ALREADY_INSTALLED, ...)",
    412: "If-Match does not name the current version (PRECONDITION_FAILED)",
    413: "The body is too large (PAYLOAD_TOO_LARGE)",
    422: "The Idempotency-Key was used for a different request (IDEMPOTENCY_KEY_REUSED)",
    429: "Too many requests (RATE_LIMITED); see Retry-After",
    503: "Not available yet (PROJECTION_BEHIND, FANOUT_UNAVAILABLE); see Retry-After",
}
METHODS = ("get", "put", "post", "delete", "patch")


def error_statuses(handler: Any, path: str, method: str, parameters: set[str]) -> set[int]:
    """The error statuses a route can answer, from what it declares: its access rule, its path
    parameters, whether it writes, whether it waits for a projection."""
    statuses = {400, 401, 429}  # every route checks its input, any bearer token given, and the rate limit
    rule = rule_of(handler)
    if rule is not None and (rule.permission is not None or rule.scope == "authenticated"):
        statuses.add(403)
    if "{" in path:
        statuses.add(404)
    if method != "get":
        statuses |= {409, 412, 422}
    if method in ("post", "put", "patch"):
        statuses.add(413)
    if "consistent" in parameters or path.endswith("/stream") or handler.operation_id in ("ready", "createRole", "updateRole", "deleteRole"):
        statuses.add(503)
    if handler.operation_id == "register":
        statuses.add(403)  # registration closed
    return statuses


def document_errors(app: Litestar, schema: OpenAPI) -> None:
    """Add `ErrorEnvelope` to the components and the error responses to every operation."""
    handlers = {
        h.operation_id: h
        for route in app.routes
        for h in getattr(route, "route_handlers", [])
        if isinstance(getattr(h, "operation_id", None), str)
    }
    schema.components.schemas["ErrorEnvelope"] = ERROR_ENVELOPE
    envelope = {"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/ErrorEnvelope"))}
    for path, item in (schema.paths or {}).items():
        for method in METHODS:
            operation = getattr(item, method, None)
            handler = handlers.get(getattr(operation, "operation_id", None))
            if operation is None or handler is None:
                continue
            parameters = {p.name for p in operation.parameters or [] if hasattr(p, "name")}
            responses = operation.responses if operation.responses is not None else {}
            for status in sorted(error_statuses(handler, path, method, parameters)):
                responses[str(status)] = OpenAPIResponse(description=MEANING[status], content=envelope)
            operation.responses = responses


def document_bodies(app: Litestar, schema: OpenAPI) -> None:
    """Request bodies as the routes take them: an optional JSON body (`data: X | None`) is not required,
    and a route that also takes uploads lists its multipart/form-data fields (`bodies.uploads`)."""
    handlers = {
        h.operation_id: h
        for route in app.routes
        for h in getattr(route, "route_handlers", [])
        if isinstance(getattr(h, "operation_id", None), str)
    }
    for item in (schema.paths or {}).values():
        for method in METHODS:
            operation = getattr(item, method, None)
            handler = handlers.get(getattr(operation, "operation_id", None))
            if operation is None or handler is None:
                continue
            data = handler.parsed_data_field
            if operation.request_body is not None and data is not None and data.is_optional:
                operation.request_body.required = False
            upload = handler.opt.get("uploads")
            if upload is not None:
                body = operation.request_body or RequestBody(content={}, required=True)
                body.content["multipart/form-data"] = OpenAPIMediaType(schema=upload)
                operation.request_body = body
