"""JSON Schema (2020-12) made safe to run on what a plugin author wrote in a manifest.

- `$ref` / `$dynamicRef` resolve only inside the document: the registry refuses every retrieval, so no
  URL (http, file, ...) is ever opened, and a reference to anything outside the document is refused.
- `pattern`, `patternProperties` (and with it `additionalProperties` / `unevaluatedProperties`) and
  `format: regex` run on RE2, which matches in time linear in the input (no catastrophic backtracking).
  Patterns RE2 cannot compile (backreferences, lookaround) are refused when the manifest is checked.
- `uniqueItems` compares hashed canonical forms (linear), not every pair of items.
- The schema's size is capped (bytes, nesting depth, subschemas), so checking it is bounded. Validating
  can still ask for exponential work through a small schema (nested `allOf` reached through `$ref`), so
  callers run validation where a time limit can stop it (see `infrastructure/plugins/sandbox.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import msgspec
import re2
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from domain.plugins.errors import ManifestInvalid

DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAX_SCHEMA_BYTES = 128 * 1024  # the config_schema, encoded as JSON
MAX_SCHEMA_DEPTH = 48  # nested objects/arrays in the config_schema document
MAX_SUBSCHEMAS = 2000  # objects in the config_schema document (each a subschema or a keyword's map)
MAX_PATTERN_LENGTH = 1000  # characters of one regular expression

# Keywords whose value is one subschema, a list of subschemas, or a map of names to subschemas.
ONE = ("additionalProperties", "unevaluatedProperties", "items", "contains", "propertyNames", "not", "if", "then",
       "else", "unevaluatedItems", "contentSchema")
MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
NAMED = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")


class ReferenceRefused(LookupError):
    """A `$ref` to something outside the schema document: never fetched."""


def _refuse(uri: str) -> Any:
    raise ReferenceRefused(f"{uri!r} is outside the schema document; only references inside it are followed")


REGISTRY: Registry = Registry(retrieve=_refuse)  # type: ignore[call-arg]

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to the caller, not to stderr


@lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> Any:
    """The RE2 program for `pattern`; raises `re2.error` when RE2 cannot compile it."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise re2.error(f"longer than {MAX_PATTERN_LENGTH} characters")
    return re2.compile(pattern, _RE2_OPTIONS)


def search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


# -- keywords on RE2 ------------------------------------------------------------------------------------


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _extras(instance: dict, schema: dict) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return sorted(k for k in instance if k not in properties and not any(search(p, k) for p in patterns))


def _unexpected(extras: list[str]) -> str:
    return f"{', '.join(repr(e) for e in extras)} {'was' if len(extras) == 1 else 'were'} unexpected"


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _extras(instance, schema)
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        yield ValidationError(f"Additional properties are not allowed ({_unexpected(extras)})")


def _evaluated_keys(validator: Any, instance: dict, schema: Any) -> set[str]:
    """Keys evaluated by `schema` and its in-place applicators (as jsonschema does, with RE2)."""
    if not isinstance(schema, dict):
        return set()
    keys: set[str] = set()
    for keyword in ("$ref", "$dynamicRef"):
        if keyword in schema:
            resolved = validator._resolver.lookup(schema[keyword])
            sub = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            keys |= _evaluated_keys(sub, instance, resolved.contents)
    if isinstance(schema.get("properties"), dict):
        keys |= schema["properties"].keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if keyword in schema:
            keys |= {k for k, v in instance.items() if validator.evolve(schema=schema[keyword]).is_valid(v)}
    for pattern in schema.get("patternProperties", {}):
        keys |= {k for k in instance if search(pattern, k)}
    for name, sub in schema.get("dependentSchemas", {}).items():
        if name in instance:
            keys |= _evaluated_keys(validator, instance, sub)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(keyword, []):
            if validator.evolve(schema=sub).is_valid(instance):
                keys |= _evaluated_keys(validator, instance, sub)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"]) | _evaluated_keys(validator, instance, schema.get("then"))
        else:
            keys |= _evaluated_keys(validator, instance, schema.get("else"))
    return keys


def _unevaluated_properties(validator: Any, unevaluated: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    bad = sorted(
        k for k in instance
        if k not in evaluated and any(True for _ in validator.descend(instance[k], unevaluated, path=k, schema_path=k))
    )
    if bad:
        yield ValidationError(f"Unevaluated properties are not allowed ({_unexpected(bad)})")


def _canonical(value: Any) -> Any:
    """A hashable form equal exactly when JSON Schema calls two instances equal (1 == 1.0, True != 1)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", int(value) if isinstance(value, float) and value.is_integer() else value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, dict):
        return ("o", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("a", tuple(_canonical(v) for v in value))
    return ("?", repr(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array") and len({_canonical(v) for v in instance}) != len(instance):
        yield ValidationError(f"{instance!r} has non-unique elements")


FORMATS = FormatChecker(formats=())


@FORMATS.checks("regex", raises=re2.error)
def _is_regex(instance: Any) -> bool:
    return not isinstance(instance, str) or compile_pattern(instance) is not None


SafeValidator = validators.extend(
    Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
        "uniqueItems": _unique_items,
    },
    format_checker=FORMATS,
)


def validator_for(schema: dict[str, Any]) -> Any:
    """A validator of instances against `schema`: RE2 keywords, `format: regex`, no retrieval."""
    return SafeValidator(schema, registry=REGISTRY, format_checker=FORMATS)


# -- checking a schema ----------------------------------------------------------------------------------


def children(schema: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    """The direct subschemas of `schema`, each with its path (keyword, then name or index)."""
    if not isinstance(schema, dict):
        return
    for keyword in ONE:
        if keyword in schema:
            yield (keyword,), schema[keyword]
    for keyword in MANY:
        if isinstance(schema.get(keyword), list):
            for i, sub in enumerate(schema[keyword]):
                yield (keyword, str(i)), sub
    for keyword in NAMED:
        if isinstance(schema.get(keyword), dict):
            for name, sub in schema[keyword].items():
                yield (keyword, name), sub


def _dotted(field: str, path: tuple[str, ...] | list[Any]) -> str:
    return ".".join([field, *(str(p) for p in path)])


def check_limits(schema: Any, field: str = "manifest.config_schema") -> None:
    """Refuse a schema too big or too deep to check and validate in bounded time (walks iteratively)."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    objects = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ManifestInvalid(f"{field} is nested deeper than {MAX_SCHEMA_DEPTH} levels", field=field)
        if isinstance(node, dict):
            objects += 1
            if objects > MAX_SUBSCHEMAS:
                raise ManifestInvalid(f"{field} has more than {MAX_SUBSCHEMAS} subschemas", field=field)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    size = len(msgspec.json.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        raise ManifestInvalid(f"{field} is {size} bytes; at most {MAX_SCHEMA_BYTES} are allowed", field=field)


def check_schema(schema: dict[str, Any], field: str = "manifest.config_schema") -> None:
    """Raise ManifestInvalid (naming the field) unless `schema` is a bounded, self-contained JSON Schema
    2020-12 whose regular expressions RE2 compiles."""
    check_limits(schema, field)
    try:
        Draft202012Validator.check_schema(schema, format_checker=FORMATS)
    except SchemaError as exc:
        raise ManifestInvalid(
            f"{field} is not a valid JSON Schema: {exc.message}", field=_dotted(field, list(exc.path))
        ) from None
    _check_subschemas(schema, field)


def _check_subschemas(schema: dict[str, Any], field: str) -> None:
    root = REGISTRY.resolver_with_root(DRAFT202012.create_resource(schema))
    stack: list[tuple[Any, Any, tuple[str, ...]]] = [(schema, root, ())]
    while stack:
        node, resolver, path = stack.pop()
        if not isinstance(node, dict):
            continue
        if "$schema" in node and node["$schema"].rstrip("#") != DIALECT:
            raise ManifestInvalid(
                f"{field} must be JSON Schema 2020-12 ($schema {DIALECT!r} or none)", field=_dotted(field, (*path, "$schema"))
            )
        if "$id" in node:
            resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
        for keyword in ("$ref", "$dynamicRef"):
            if keyword in node:
                try:
                    resolver.lookup(node[keyword])
                except Unresolvable:
                    raise ManifestInvalid(
                        f"{_dotted(field, (*path, keyword))}: {node[keyword]!r} does not name a part of this schema; "
                        "references are only followed inside the document (nothing is fetched)",
                        field=_dotted(field, (*path, keyword)),
                    ) from None
        for pattern_path, pattern in _patterns(node):
            try:
                compile_pattern(pattern)
            except re2.error as exc:
                where = _dotted(field, (*path, *pattern_path))
                raise ManifestInvalid(
                    f"{where}: {pattern[:80]!r} is not a regular expression RE2 accepts ({_reason(exc)}); "
                    "backreferences and lookaround are not supported",
                    field=where,
                ) from None
        stack.extend((sub, resolver, path + sub_path) for sub_path, sub in children(node))


def _patterns(node: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node.get("pattern"), str):
        yield ("pattern",), node["pattern"]
    if isinstance(node.get("patternProperties"), dict):
        for pattern in node["patternProperties"]:
            yield ("patternProperties", pattern), pattern


def _reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    return (reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason))[:120]
