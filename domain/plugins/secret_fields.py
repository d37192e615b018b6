"""Which configuration values a schema marks secret, through every way JSON Schema reaches a value.

A value is secret when any schema that applies to it says `secret: true`, `writeOnly: true` or
`format: password`. Schemas apply through `properties`, `patternProperties`, `additionalProperties`,
`unevaluatedProperties`, `items`, `prefixItems`, `contains`, `unevaluatedItems`, and in place through
`$ref`/`$dynamicRef` (into `$defs`), `allOf`/`anyOf`/`oneOf`/`not`, `if`/`then`/`else` and
`dependentSchemas`. The rule is conservative: a branch marks its values secret whether or not the
instance ends up valid under it, so a value is sealed if any branch could have meant it as a secret.
Over-sealing only hides a value; under-sealing would leak one.
"""

from __future__ import annotations

from typing import Any

from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from domain.plugins.json_schema import REGISTRY, children, compile_pattern

Location = tuple[str | int, ...]
IN_PLACE_ONE = ("not", "if", "then", "else")
OBJECT_APPLICATORS = ("properties", "patternProperties", "additionalProperties", "unevaluatedProperties")
ARRAY_APPLICATORS = ("prefixItems", "items", "unevaluatedItems", "contains")
IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
STATIC_DEPTH = 32  # how deep `secret_paths` follows recursive schemas
STATIC_BUDGET = 5000  # schema visits `secret_paths` makes at most (a DAG of `$ref`s has exponentially many paths)


def is_secret(spec: Any) -> bool:
    return isinstance(spec, dict) and (
        spec.get("secret") is True or spec.get("writeOnly") is True or spec.get("format") == "password"
    )


def _root(schema: Any) -> list[tuple[Any, Any]]:
    if not isinstance(schema, dict) or not schema:
        return []
    return [(schema, REGISTRY.resolver_with_root(DRAFT202012.create_resource(schema)))]


def _in_place(scopes: list[tuple[Any, Any]]) -> list[tuple[dict, Any]]:
    """Every schema that applies to the same value as `scopes` (each once), with its resolver."""
    found: list[tuple[dict, Any]] = []
    seen: set[int] = set()
    stack = list(scopes)
    while stack:
        schema, resolver = stack.pop()
        if not isinstance(schema, dict) or id(schema) in seen:
            continue
        seen.add(id(schema))
        if "$id" in schema:
            resolver = resolver.in_subresource(DRAFT202012.create_resource(schema))
        found.append((schema, resolver))
        stack.extend((schema[k], resolver) for k in IN_PLACE_ONE if k in schema)
        for keyword in IN_PLACE_MANY:
            if isinstance(schema.get(keyword), list):
                stack.extend((sub, resolver) for sub in schema[keyword])
        if isinstance(schema.get("dependentSchemas"), dict):
            stack.extend((sub, resolver) for sub in schema["dependentSchemas"].values())
        for keyword in ("$ref", "$dynamicRef"):
            if isinstance(schema.get(keyword), str):
                try:
                    resolved = resolver.lookup(schema[keyword])
                except Unresolvable:
                    continue  # refused when the manifest was checked; nothing to follow
                stack.append((resolved.contents, resolved.resolver))
    return found


def _matches(pattern: str, key: str) -> bool:
    try:
        return compile_pattern(pattern).search(key) is not None
    except Exception:
        return True  # a pattern that cannot run: assume it could have matched (seal rather than leak)


def _property_schemas(schemas: list[tuple[dict, Any]], key: str) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    for schema, resolver in schemas:
        matched = False
        props = schema.get("properties")
        if isinstance(props, dict) and key in props:
            out.append((props[key], resolver))
            matched = True
        patterns = schema.get("patternProperties")
        if isinstance(patterns, dict):
            for pattern, sub in patterns.items():
                if _matches(pattern, key):
                    out.append((sub, resolver))
                    matched = True
        if not matched:
            out.extend((schema[k], resolver) for k in ("additionalProperties", "unevaluatedProperties") if k in schema)
    return out


def _item_schemas(schemas: list[tuple[dict, Any]], index: int) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    for schema, resolver in schemas:
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        if index < len(prefix):
            out.append((prefix[index], resolver))
        else:
            out.extend((schema[k], resolver) for k in ("items", "unevaluatedItems") if k in schema)
        if "contains" in schema:
            out.append((schema["contains"], resolver))
    return out


def secret_locations(schema: dict[str, Any], config: Any) -> list[Location]:
    """Locations (keys and indexes from the top) of the values in `config` that `schema` marks secret."""
    found: list[Location] = []
    stack: list[tuple[list[tuple[Any, Any]], Any, Location]] = [(_root(schema), config, ())]
    while stack:
        scopes, value, at = stack.pop()
        schemas = _in_place(scopes)
        if not schemas:
            continue
        if any(is_secret(s) for s, _ in schemas):
            found.append(at)
        elif isinstance(value, dict) and any(k in s for s, _ in schemas for k in OBJECT_APPLICATORS):
            for key, child in value.items():
                if sub := _property_schemas(schemas, key):
                    stack.append((sub, child, (*at, key)))
        elif isinstance(value, list) and any(k in s for s, _ in schemas for k in ARRAY_APPLICATORS):
            for i, child in enumerate(value):
                if sub := _item_schemas(schemas, i):
                    stack.append((sub, child, (*at, i)))
    return sorted(found, key=lambda loc: [str(p) for p in loc])


def secret_paths(schema: dict[str, Any]) -> list[str]:
    """The fields `schema` marks secret, as dotted paths; `*` stands for any key or index (from
    `patternProperties`, `additionalProperties`, `items`, ...). For documentation: the values sealed
    are those `secret_locations` finds in a given configuration."""
    found: set[str] = set()
    stack: list[tuple[list[tuple[Any, Any]], tuple[str, ...], frozenset[int]]] = [(_root(schema), (), frozenset())]
    budget = STATIC_BUDGET
    while stack and budget > 0:
        budget -= 1
        scopes, at, visiting = stack.pop()
        schemas = _in_place(scopes)
        if not schemas or len(at) > STATIC_DEPTH:
            continue
        if any(is_secret(s) for s, _ in schemas):
            found.add(".".join(at))
            continue
        ids = frozenset(id(s) for s, _ in schemas)
        if ids <= visiting:
            continue  # a recursive schema come round again with nothing new
        visiting |= ids
        for schema, resolver in schemas:
            for path, sub in children(schema):
                keyword = path[0]
                if keyword == "properties":
                    stack.append(([(sub, resolver)], (*at, path[1]), visiting))
                elif keyword == "prefixItems":
                    stack.append(([(sub, resolver)], (*at, path[1]), visiting))
                elif keyword in ("patternProperties", "additionalProperties", "unevaluatedProperties", "items",
                                 "unevaluatedItems", "contains"):
                    stack.append(([(sub, resolver)], (*at, "*"), visiting))
    return sorted(found)
