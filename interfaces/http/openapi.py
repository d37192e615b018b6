"""The OpenAPI document tells the truth about errors and sign-in: every route lists the error statuses it
can answer, each with the one error envelope (`ErrorEnvelope`) instead of litestar's own 400 shape, and
the headers that come with them; every route names how it is signed in to (a bearer token, which Swagger
UI's Authorize button sets: paste the `access_token` of a login), public routes none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPI, OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, RequestBody,
    Schema, SecurityScheme,
)

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
    401: "No valid access token (AUTHENTICATION_REQUIRED, TOKEN_INVALID, SESSION_REVOKED, USER_INACTIVE, ...);"
    " see WWW-Authenticate",
    403: "The caller lacks the permission (FORBIDDEN)",
    404: "No such resource (PLUGIN_NOT_FOUND, USER_NOT_FOUND, ...)",
    409: "The command conflicts with the current state (VERSION_CONFLICT, PLUGIN_ALREADY_INSTALLED, ...)",
    412: "If-Match does not name the current version (PRECONDITION_FAILED)",
    413: "The body is too large (PAYLOAD_TOO_LARGE)",
    422: "The Idempotency-Key was used for a different request (IDEMPOTENCY_KEY_REUSED), or a site's policies refused"
    " an activation (VALIDATION_FAILED, every problem in details.problems)",
    429: "Too many requests (RATE_LIMITED); see Retry-After",
    503: "Not available yet (PROJECTION_BEHIND, FANOUT_UNAVAILABLE, READ_MODEL_NOT_READY, DATABASE_UNAVAILABLE); see Retry-After",
}
METHODS = ("get", "put", "post", "delete", "patch")
LOGIN_PATH = "/api/v1/auth/login"
SECURITY_SCHEMES = {
    "bearer": SecurityScheme(
        type="http", scheme="bearer", bearer_format="JWT",
        description=f"An access token (`access_token` of POST {LOGIN_PATH}): `Authorization: Bearer <token>`",
    ),
}
SIGNED_IN: list[dict[str, list[str]]] = [{"bearer": []}]
REQUEST_ID = OpenAPIHeader(description="the request's id (the caller's X-Request-Id when safe); also `error.request_id`", schema=Schema(type=OpenAPIType.STRING))
CHALLENGE = OpenAPIHeader(
    description='`Bearer realm="charter"`; `error="invalid_token"` when the token (or stream ticket) sent was refused',
    schema=Schema(type=OpenAPIType.STRING),
)
RETRY_AFTER = OpenAPIHeader(description="seconds to wait before trying again", schema=Schema(type=OpenAPIType.INTEGER))


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


def operations(app: Litestar, schema: OpenAPI) -> Iterator[tuple[str, str, Any, Any]]:
    """(path, method, operation, route handler) of every documented operation of the app."""
    handlers = {
        h.operation_id: h
        for route in app.routes
        for h in getattr(route, "route_handlers", [])
        if isinstance(getattr(h, "operation_id", None), str)
    }
    for path, item in (schema.paths or {}).items():
        for method in METHODS:
            operation = getattr(item, method, None)
            handler = handlers.get(getattr(operation, "operation_id", None))
            if operation is not None and handler is not None:
                yield path, method, operation, handler


def document_errors(app: Litestar, schema: OpenAPI) -> None:
    """Add `ErrorEnvelope` to the components and the error responses to every operation."""
    schema.components.schemas["ErrorEnvelope"] = ERROR_ENVELOPE
    envelope = {"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/ErrorEnvelope"))}
    for path, method, operation, handler in operations(app, schema):
        parameters = {p.name for p in operation.parameters or [] if hasattr(p, "name")}
        responses = operation.responses if operation.responses is not None else {}
        for status in sorted(error_statuses(handler, path, method, parameters)):
            responses[str(status)] = OpenAPIResponse(
                description=meaning(status, path, handler.operation_id), content=envelope, headers=error_headers(status)
            )
        operation.responses = responses


# The codes a 404 answers, by the path parameters of the route (the innermost resource first).
NOT_FOUND = {
    "run_id": "TASK_RUN_NOT_FOUND", "task_id": "TASK_NOT_FOUND", "role_id": "ROLE_NOT_FOUND", "role": "ROLE_NOT_FOUND",
    "user_id": "USER_NOT_FOUND", "plugin_id": "PLUGIN_NOT_FOUND", "site_id": "SITE_NOT_FOUND",
}
# What only some routes answer, said on those routes.
SPECIFIC = {
    ("streamEvents", 401): "; with a stream ticket: TICKET_INVALID (unknown or used), TICKET_EXPIRED",
    ("streamEvents", 403): "; TICKET_FILTERS_MISMATCH (the ticket was issued for other filters)",
    ("streamEvents", 503): "; FANOUT_UNAVAILABLE (NATS not reachable)",
    ("login", 401): "; INVALID_CREDENTIALS",
    ("login", 429): "; LOGIN_THROTTLED (too many failed sign-ins for this account or address)",
}


def meaning(status: int, path: str, operation_id: str | None) -> str:
    """The description of one error status of one operation, naming the codes it answers there."""
    text = MEANING[status]
    if status == 404:
        found = [code for name, code in NOT_FOUND.items() if "{" + name + "}" in path]
        if "/extensions/{plugin_id}" in path:
            found.insert(0, "EXTENSION_NOT_ACTIVE")
        if found:
            text = f"No such resource: {', '.join(dict.fromkeys(found))}"
    return text + SPECIFIC.get((operation_id or "", status), "")


def error_headers(status: int) -> dict[str, OpenAPIHeader | Reference]:
    headers: dict[str, OpenAPIHeader | Reference] = {"X-Request-Id": REQUEST_ID}
    if status == 401:
        headers["WWW-Authenticate"] = CHALLENGE
    if status in (429, 503):
        headers["Retry-After"] = RETRY_AFTER
    return headers


def document_security(app: Litestar, schema: OpenAPI) -> None:
    """The sign-in schemes, required by default; public routes (their rule names no permission and is not
    `authenticated`) say `security: []`."""
    schema.components.security_schemes = dict(SECURITY_SCHEMES)
    schema.security = list(SIGNED_IN)
    for _, _, operation, handler in operations(app, schema):
        rule = rule_of(handler)
        public = rule is not None and rule.permission is None and rule.scope != "authenticated"
        operation.security = [] if public else list(SIGNED_IN)


def document_bodies(app: Litestar, schema: OpenAPI) -> None:
    """Request bodies as the routes take them: an optional JSON body (`data: X | None`) is not required,
    and a route that also takes uploads lists its multipart/form-data fields (`bodies.uploads`)."""
    for _, _, operation, handler in operations(app, schema):
        data = handler.parsed_data_field
        if operation.request_body is not None and data is not None and data.is_optional:
            operation.request_body.required = False
        upload = handler.opt.get("uploads")
        if upload is not None:
            body = operation.request_body or RequestBody(content={}, required=True)
            body.content["multipart/form-data"] = OpenAPIMediaType(schema=upload)
            operation.request_body = body
