"""Typed request bodies: a route declares `data: SomeStruct` with `dto=JsonBody[SomeStruct]`, so OpenAPI
shows the body (and Swagger UI can send it), while decoding keeps Charter's own refusals: 413 past
MAX_JSON_BYTES, 400 MALFORMED_JSON, 400 VALIDATION_FAILED naming the field, and the nesting / NUL /
64-bit checks of `wellformed.check_document`. An absent body is a 400 naming `body` (see errors.py).

`FormOrJsonBody` also takes the fields as a form (urlencoded or multipart), as OAuth2 password clients
such as Swagger UI's "Authorize" send them."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar.connection import ASGIConnection
from litestar.dto import MsgspecDTO
from litestar.dto.base_dto import DTOBackend
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from interfaces.http.common import decode
from interfaces.http.errors import ApiError
from interfaces.http.wellformed import MAX_JSON_BYTES

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
FORM_PARTS = 16  # fields in one form body


class JsonBody(MsgspecDTO[Any]):
    """The request body decoded as JSON into the route's Struct, with Charter's refusals. Only the
    decoding is the DTO's: no transfer model is built, and OpenAPI shows the Struct itself."""

    def decode_bytes(self, value: bytes) -> Any:
        return decode(value, self.model_type)

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: type[DTOBackend] | None = None
    ) -> None:
        return None  # decode_bytes needs no backend

    @classmethod
    def create_openapi_schema(cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any) -> Reference | Schema:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))


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
        named = {k: v for k, v in fields.items() if k in self.model_type.__struct_fields__}
        return decode(msgspec.json.encode(named), self.model_type)


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


def json_body_size(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: a body announced larger than MAX_JSON_BYTES is refused before it is read."""
    length = connection.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"a JSON body may be at most {MAX_JSON_BYTES} bytes", field="body")
