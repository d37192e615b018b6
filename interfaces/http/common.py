"""Small pieces every controller uses: body decoding, command context, write responses, consistency."""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any, Protocol, TypeVar

import msgspec
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler

from application.context import CommandContext, CommandResult
from domain.identity.access import Access
from domain.errors import field_of
from domain.limits import MAX_HEADER_ID, MAX_ID, MAX_IDEMPOTENCY_KEY, MAX_PARAM
from interfaces.http.errors import ApiError
from interfaces.http.schemas import Written
from interfaces.http.wellformed import MAX_JSON_BYTES, Malformed, check_document
from interfaces.runtime import Answer, Runtime

T = TypeVar("T")

MAX_LIMIT = 100


def provide_runtime(state: State) -> Runtime:
    return state.runtime


def decode(raw: bytes, type_: type[T], *, default: T | None = None, prefix: str = "") -> T:
    """Decode a JSON body into `type_`, answering 400 with the offending field named (413 when too big)."""
    name = prefix.rstrip(".") or "body"
    if len(raw) > MAX_JSON_BYTES:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"{name} is larger than {MAX_JSON_BYTES} bytes", field=name)
    if not raw.strip():
        if default is not None:
            return default
        raise ApiError(400, "VALIDATION_FAILED", "a JSON request body is required", field="body")
    try:
        value = msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        field = field_of(str(exc))
        name = f"{prefix}{field}" if field else name
        raise ApiError(400, "VALIDATION_FAILED", f"{name}: {exc}", field=name) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # broken UTF-8 in a string is the latter
        raise ApiError(400, "MALFORMED_JSON", f"{name} is not valid JSON: {exc}", field=name) from None
    except RecursionError:  # nesting far beyond MAX_DEPTH stops the decoder itself
        raise ApiError(400, "VALIDATION_FAILED", f"{name} nests too deeply", field=name) from None
    try:
        check_document(raw, value, prefix)
    except Malformed as exc:
        raise ApiError(400, exc.code, exc.message, field=exc.field) from None
    return value


async def body(request: Request, type_: type[T], *, default: T | None = None) -> T:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_JSON_BYTES:  # refused before it is read
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"a JSON body may be at most {MAX_JSON_BYTES} bytes", field="body")
    return decode(await request.body(), type_, default=default)


def expected_version(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    match = re.fullmatch(r'\s*(?:W/)?"?(\d+)"?\s*', raw)
    if not match:
        raise ApiError(400, "VALIDATION_FAILED", 'If-Match must be an ETag such as "3"', field="If-Match")
    return int(match.group(1))


# W3C Trace Context, version 00: trace id and parent id in lowercase hex, neither all zeros.
TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def bounded_header(request: Request, name: str, limit: int) -> str | None:
    """A header kept in event metadata: 400 naming it when longer than `limit` (or empty)."""
    value = request.headers.get(name)
    if value is not None and not (1 <= len(value) <= limit):
        raise ApiError(400, "VALIDATION_FAILED", f"{name} must be 1 to {limit} characters", field=name)
    return value


def traceparent(request: Request) -> str | None:
    """The caller's trace context when well formed; a malformed one is ignored (never stored), as W3C asks."""
    value = request.headers.get("traceparent")
    return value if value is not None and TRACEPARENT.fullmatch(value) else None


def command_context(request: Request) -> CommandContext:
    state = request.scope.get("state", {})
    return CommandContext(
        actor=state.get("actor", "anonymous"),
        request_id=state.get("request_id"),
        correlation_id=bounded_header(request, "X-Correlation-Id", MAX_HEADER_ID),
        causation_id=bounded_header(request, "X-Causation-Id", MAX_HEADER_ID),
        traceparent=traceparent(request),
        idempotency_key=bounded_header(request, "Idempotency-Key", MAX_IDEMPOTENCY_KEY),
        expected_version=expected_version(request),
        # Without authorization (benchmarks only) the caller acts as the system; otherwise as what the
        # guard found (nobody's permissions when it found nothing).
        access=state.get("access", Access(None)) if request.app.state.runtime.authority.enabled else None,
    )


def bounded_parameters(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: path parameters (ids) and query values have bounded lengths; 400 naming the parameter."""
    for name, value in connection.path_params.items():
        if isinstance(value, str) and len(value) > MAX_ID:
            raise ApiError(400, "VALIDATION_FAILED", f"{name} is longer than {MAX_ID} characters", field=name)
    for name, value in connection.query_params.multi_items():
        if len(value) > MAX_PARAM:
            raise ApiError(400, "VALIDATION_FAILED", f"{name} is longer than {MAX_PARAM} characters", field=name)
        if name.endswith(("_id", "_type")) and any(len(item) > MAX_ID for item in value.split(",")):
            raise ApiError(400, "VALIDATION_FAILED", f"a value of {name} is longer than {MAX_ID} characters", field=name)


def written(result: CommandResult, resource_id: str, status: int = 200, location: str | None = None) -> Response:
    headers = {"ETag": f'"{result.version}"'}
    if result.position is not None:
        headers["Charter-Position"] = str(result.position)
    if result.duplicate:
        headers["Idempotent-Replayed"] = "true"
    if location:
        headers["Location"] = location
    payload = Written(resource_id, result.stream_id, result.version, result.position, result.duplicate)
    return Response(payload, status_code=200 if result.duplicate and status == 201 else status, headers=headers)


def page_params(skip: int, limit: int, sort_by: str, sort_order: str, sortable: dict[str, Any]) -> None:
    if skip < 0:
        raise ApiError(400, "VALIDATION_FAILED", "skip must be 0 or more", field="skip")
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "VALIDATION_FAILED", f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    if sort_by not in sortable:
        raise ApiError(
            400, "VALIDATION_FAILED", f"sort_by must be one of {', '.join(sorted(sortable))}", field="sort_by"
        )
    if sort_order not in ("asc", "desc"):
        raise ApiError(400, "VALIDATION_FAILED", "sort_order must be asc or desc", field="sort_order")


class WaitsForProjections(Protocol):
    async def wait_for(self, projection: str, position: int | None) -> None: ...


async def read_consistency(request: Request, runtime: WaitsForProjections, projection: str, consistent: bool) -> None:
    """Read-your-writes: `?consistent=true` waits for everything committed; `Charter-Min-Position` for one write.
    `runtime`: anything that waits for a projection (`dependencies.ReadModels`, the runtime itself)."""
    raw = request.headers.get("charter-min-position")
    if raw is not None:
        if not re.fullmatch(r"[0-9]{1,19}", raw.strip()):
            raise ApiError(400, "VALIDATION_FAILED", "Charter-Min-Position must be a position", field="Charter-Min-Position")
        await runtime.wait_for(projection, int(raw.strip()))
    elif consistent:
        await runtime.wait_for(projection, None)


def read_scope(request: Request, permission: str) -> frozenset[str] | None:
    """The sites whose data the caller may see under `permission` (None: all), as a read cache key's part:
    an answer is never shared between callers who may see different sites."""
    if not request.app.state.runtime.authority.enabled:
        return None
    sites = request.scope.get("state", {}).get("access", Access(None)).sites_for(permission)
    return None if sites is None else frozenset(sites)


def answered(request: Request, projection: str, key: Hashable, answer: Answer) -> Response:
    """A kept (or just built) read-model answer: its encoded JSON as it is, and its headers; the decision
    that admitted the request is kept with it (interfaces/http/kept_reads.py)."""
    kept = getattr(request.app.state, "kept_reads", None)
    if kept is not None:
        kept.remember(request, projection, key)
    return Response(answer.body, media_type="application/json", headers=dict(answer.headers))
