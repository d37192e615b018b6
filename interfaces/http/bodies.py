"""Typed request bodies: a route declares `data: SomeStruct` and `dto=JsonBody`; the body is decoded by
Charter's own decoder (`common.decode`: 1 MiB, depth 64, no NUL, 64-bit integers, strict types, the
offending field named in a 400) and the Struct is the request body in the OpenAPI document.

A route that also takes uploads (`multipart/form-data`) declares its form fields with `uploads(...)` in
its `opt`; `openapi.document_bodies` lists them beside the JSON body, and `JsonBody` leaves a multipart
body to the handler (`data` is then None) to read with its size caps.

`FormOrJsonBody` also takes the fields as a form (urlencoded or multipart), as OAuth2 password clients
such as Swagger UI's "Authorize" send them. An absent required body is a 400 naming `body` (errors.py).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import msgspec
from litestar.connection import ASGIConnection
from litestar.dto import AbstractDTO
from litestar.dto.data_structures import DTOFieldDefinition
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import OpenAPIType, Reference, Schema
from litestar.typing import FieldDefinition
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from interfaces.http.common import decode
from interfaces.http.errors import ApiError
from interfaces.http.wellformed import MAX_JSON_BYTES

MULTIPART = "multipart/form-data"
FORM_TYPES = ("application/x-www-form-urlencoded", MULTIPART)
FORM_PARTS = 16  # fields in one form body


class JsonBody(AbstractDTO[Any]):
    """Decodes the `data` of a route with `common.decode` into the type the route declares."""

    types: ClassVar[dict[str, Any]] = {}  # handler id -> the declared type of `data` (Optional removed)

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        if field_definition.name != "data":
            return
        if field_definition.is_optional:
            field_definition = FieldDefinition.from_annotation(
                next(arg for arg in field_definition.args if arg is not type(None))
            )
        cls.types[handler_id] = field_definition.annotation

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.types[handler_id]))

    @classmethod
    def is_supported_model_type_field(cls, field_definition: FieldDefinition) -> bool:
        return False  # never used for responses

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    def decode_bytes(self, value: bytes) -> Any:
        handler = self.asgi_connection.route_handler
        if self.asgi_connection.content_type[0] == MULTIPART and "uploads" in handler.opt:
            return None  # the handler reads the form
        return decode(value, self.types[handler.handler_id])

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        return None  # form data (urlencoded or multipart) is never a JSON body


# Decorator arguments of a route whose body is JSON only: decoded by JsonBody, refused past 1 MiB before it is read.
JSON_BODY: dict[str, Any] = {"dto": JsonBody, "request_max_body_size": MAX_JSON_BYTES}
# Of a route that takes JSON or an upload: the app's body limit (the archive cap) applies.
JSON_OR_UPLOAD: dict[str, Any] = {"dto": JsonBody}


def uploads(description: str, required: list[str], **fields: Schema) -> dict[str, Any]:
    """`opt` of a route that also takes multipart/form-data: its form fields, for the OpenAPI document."""
    schema = Schema(type=OpenAPIType.OBJECT, properties=fields, required=required, description=description)
    return {"uploads": schema}


def file_field(description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, format="binary", description=description)  # type: ignore[arg-type]


def json_field(description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, content_media_type="application/json", description=description)


def boolean_field(description: str) -> Schema:
    return Schema(type=OpenAPIType.BOOLEAN, description=description, default=False)


class FormOrJsonBody(JsonBody):
    """Like JsonBody, but a form body (urlencoded or multipart text fields) is taken as well."""

    def decode_bytes(self, value: bytes) -> Any:
        media, options = self.asgi_connection.content_type
        if media not in FORM_TYPES:
            return super().decode_bytes(value)
        if len(value) > MAX_JSON_BYTES:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", f"a form body may be at most {MAX_JSON_BYTES} bytes", field="body")
        if media == FORM_TYPES[0]:
            fields = form_fields(value.decode("utf-8"))
        else:
            fields = multipart_fields(value, options.get("boundary", "").encode("latin-1"))
        # Fields the route does not name are ignored (OAuth2 clients add grant_type, scope, client_id);
        # the rest is refused as the same fields in JSON would be.
        model = self.types[self.asgi_connection.route_handler.handler_id]
        named = {k: v for k, v in fields.items() if k in model.__struct_fields__}
        return decode(msgspec.json.encode(named), model)


def form_fields(text: str) -> dict[str, str]:
    """The first value of each field of an urlencoded form."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=FORM_PARTS)
    except ValueError:
        raise ApiError(400, "VALIDATION_FAILED", f"a form body may have at most {FORM_PARTS} fields", field="body") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def multipart_fields(body: bytes, boundary: bytes) -> dict[str, str]:
    """The first value of each text field of a multipart form (files are not expected here)."""
    if not boundary:
        raise ApiError(400, "VALIDATION_FAILED", "a multipart body needs a boundary", field="body")
    fields: dict[str, str] = {}
    segment: MultipartSegment | None = None
    data = bytearray()
    try:
        with PushMultipartParser(boundary, max_segment_count=FORM_PARTS) as parser:
            for chunk in (body, b""):
                for part in parser.parse(chunk):
                    if isinstance(part, MultipartSegment):
                        segment, data = part, bytearray()
                    elif part:
                        data.extend(part)
                    elif segment is not None:
                        fields.setdefault(segment.name, data.decode(segment.charset or "utf-8"))
                        segment = None
    except (ParserError, ParserLimitReached, ValueError) as exc:
        raise ApiError(400, "VALIDATION_FAILED", f"the form body is not valid multipart: {exc}", field="body") from None
    return fields


async def json_body_size(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard (async: Litestar runs a synchronous guard in a worker thread): a body announced larger than MAX_JSON_BYTES is refused before it is read."""
    length = connection.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"a JSON body may be at most {MAX_JSON_BYTES} bytes", field="body")
