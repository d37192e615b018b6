"""Hostile-input checks the JSON decoder and the router do not make: nesting depth, NUL characters,
integers beyond 64 bits, and control characters or broken UTF-8 in parameters and headers.

PostgreSQL refuses NUL in `text` and `jsonb`; other consumers of the log (JetStream subscribers, SQL on
`payload`) cannot read integers beyond 64 bits; deep nesting costs stack in every later reader. So all
three are refused at the edge, with the field named, before a command is built.
"""

from __future__ import annotations

import re
from typing import Any, get_args
from urllib.parse import unquote_to_bytes

import msgspec
from litestar.connection import ASGIConnection

from interfaces.http.errors import ApiError

MAX_JSON_BYTES = 1024 * 1024  # one JSON document (a body, a multipart `config` field)
MAX_DEPTH = 64  # nesting of arrays and objects
INT64 = range(-(2**63), 2**63)
_LONG_DIGITS = re.compile(rb"\d{19}")  # a shorter run of digits always fits in 64 bits
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Malformed(Exception):
    """Input the API refuses: `field` names where, `code` says what kind of refusal (a 4xx code)."""

    def __init__(self, field: str, message: str, code: str = "VALIDATION_FAILED") -> None:
        super().__init__(message)
        self.field, self.message, self.code = field, message, code


def check_document(raw: bytes, value: Any, prefix: str = "") -> None:
    """Refuse a decoded JSON document that nests deeper than MAX_DEPTH, holds a NUL character or an
    integer beyond 64 bits. Bytes-level tests (C speed) decide whether the document needs walking at all."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH and b"\\u0000" not in raw and not _LONG_DIGITS.search(raw):
        return
    _walk(value, prefix.rstrip(".") or "body", 1)


def _walk(value: Any, path: str, depth: int) -> None:
    stack = [(value, path, depth)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise Malformed(path, f"{path} must not contain NUL characters (\\u0000)")
        elif isinstance(value, bool) or isinstance(value, float) or value is None:
            continue
        elif isinstance(value, int):
            if value not in INT64:
                raise Malformed(path, f"{path} is an integer beyond 64 bits")
        elif isinstance(value, (dict, list, msgspec.Struct)):
            if depth > MAX_DEPTH:
                raise Malformed(path, f"{path} nests deeper than {MAX_DEPTH} levels")
            for key, item in _children(value):
                if isinstance(key, str) and "\x00" in key:
                    raise Malformed(path, f"a key in {path} contains a NUL character (\\u0000)")
                child = f"{path}[{key}]" if isinstance(key, int) else (key if path == "body" else f"{path}.{key}")
                stack.append((item, child, depth + 1))


def _children(value: Any) -> Any:
    if isinstance(value, dict):
        return value.items()
    if isinstance(value, list):
        return enumerate(value)
    return ((name, getattr(value, name)) for name in value.__struct_fields__)


def check_text(field: str, value: str) -> None:
    """A path or query parameter, or a header Charter reads: no control characters (no NUL, newline, ...)."""
    match = _CONTROL.search(value)
    if match:
        raise Malformed(field, f"{field} must not contain control characters (found {match.group()!r})")


def utf8(field: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(field, f"{field} is not valid UTF-8") from None


# -- parameters and headers (a guard, so refusals carry the request id and the security headers) -----

# The headers Charter reads, by the names errors give them.
READ_HEADERS = {
    name.lower().encode(): name
    for name in (
        "Authorization", "If-Match", "Idempotency-Key", "X-Correlation-Id", "X-Causation-Id", "traceparent",
        "Last-Event-ID", "Charter-Min-Position",
    )
}


def _int_params(handler: Any) -> set[str]:
    """Names of the handler's parameters declared as integers."""
    signature = getattr(handler, "parsed_fn_signature", None)
    fields = signature.parameters.items() if signature is not None else ()
    return {name for name, field in fields if int in (field.annotation, *get_args(field.annotation))}


def _query_pairs(raw: bytes) -> list[tuple[str, str]]:
    pairs = []
    for part in raw.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        name = unquote_to_bytes(key.replace(b"+", b" ")).decode("utf-8", "replace")
        pairs.append((name, utf8(name, unquote_to_bytes(value.replace(b"+", b" ")))))
    return pairs


def _check_connection(connection: ASGIConnection, handler: Any) -> None:
    scope = connection.scope
    # ASGI's raw_path has no query string, but some test transports keep it there
    raw_path = (scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")).partition(b"?")[0]
    params = connection.path_params
    try:
        utf8("path", unquote_to_bytes(raw_path))
    except Malformed:
        named = [k for k, v in params.items() if isinstance(v, str) and "\ufffd" in v]
        raise Malformed(named[0] if named else "path", f"{named[0] if named else 'the path'} is not valid UTF-8") from None
    for name, value in params.items():
        if isinstance(value, str):
            check_text(name, value)
    for name, value in _query_pairs(scope.get("query_string", b"")):
        check_text(name, value)
        if _beyond_64_bits(value) and name in _int_params(handler):
            raise Malformed(name, f"{name} is an integer beyond 64 bits")
    for key, value in scope["headers"]:
        name = READ_HEADERS.get(key.lower())
        if name is not None:
            check_text(name, utf8(name, value).replace("\t", " "))


def _beyond_64_bits(value: str) -> bool:
    digits = re.fullmatch(r"\s*[+-]?0*(\d+)\s*", value)
    return digits is not None and (len(digits.group(1)) > 19 or int(value) not in INT64)


def well_formed(connection: ASGIConnection, handler: Any) -> None:
    """The first guard of every route: malformed parameters or headers are a 400 naming them."""
    try:
        _check_connection(connection, handler)
    except Malformed as exc:
        raise ApiError(400, exc.code, exc.message, field=exc.field) from None
