"""Plugin configuration rules: JSON Schema validation, which values are secret, sealing and masking.

A stored configuration holds each secret as a sealed marker `{"$sealed": token}`, so it describes itself:
readers mask every marker whatever the schema says now. A value once sealed stays sealed (the plugin
remembers its location as classified) until an administrator declassifies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from domain.plugins.errors import ConfigurationInvalid
from domain.plugins.json_schema import check_schema, validator_for
from domain.plugins.secret_fields import Location, is_secret, secret_locations, secret_paths

__all__ = [
    "MASK", "SEALED", "Location", "changed_keys", "check_schema", "is_secret", "is_sealed", "keep_masked",
    "map_locations", "map_sealed", "map_secrets", "mask_secrets", "path_of", "prepare_config", "sealed_locations",
    "secret_locations", "secret_paths", "validate_config",
]

SEALED = "$sealed"
MASK = "********"
SAFE_MESSAGES = {"required", "dependentRequired"}  # their messages name properties, never values
MAX_MESSAGE = 300  # characters of a violation message (jsonschema quotes whole values)


def path_of(location: Iterable[str | int]) -> str:
    """`a.b.0.c`: how a location is named in responses and in declassify requests."""
    return ".".join(str(p) for p in location)


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


def _get(config: Any, location: Location) -> tuple[bool, Any]:
    current = config
    for part in location:
        if isinstance(current, dict) and isinstance(part, str) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            return False, None
    return True, current


def map_locations(config: dict[str, Any], locations: Iterable[Location], fn: Callable[[str, Any], Any]) -> dict[str, Any]:
    """A copy of `config` with `fn("config.<path>", value)` applied at each location present in it."""
    out: Any = config
    for location in sorted(set(locations), key=len, reverse=True):  # deepest first: an outer secret wins
        if not location or not _get(out, location)[0]:
            continue
        out = _replace(out, location, fn("config." + path_of(location), _get(out, location)[1]))
    return out


def _replace(node: Any, location: Location, value: Any) -> Any:
    head, rest = location[0], location[1:]
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[head] = _replace(node[head], rest, value) if rest else value  # type: ignore[index]
    return copy


def sealed_locations(config: Any) -> list[Location]:
    """Locations of the sealed markers in a stored configuration."""
    found: list[Location] = []
    stack: list[tuple[Any, Location]] = [(config, ())]
    while stack:
        node, at = stack.pop()
        if is_sealed(node):
            found.append(at)
        elif isinstance(node, dict):
            stack.extend((v, (*at, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*at, i)) for i, v in enumerate(node))
    return sorted(found, key=lambda loc: [str(p) for p in loc])


def map_sealed(config: dict[str, Any], fn: Callable[[str, Any], Any]) -> dict[str, Any]:
    """A copy of a stored configuration with `fn(path, marker)` applied to every sealed marker."""
    return map_locations(config, sealed_locations(config), fn)


def map_secrets(schema: dict[str, Any], config: dict[str, Any], fn: Callable[[str, Any], Any]) -> dict[str, Any]:
    """A copy of `config` with `fn(path, value)` applied to every value the schema marks secret."""
    return map_locations(config, secret_locations(schema, config), fn)


def mask_secrets(schema: dict[str, Any], config: dict[str, Any], also: Iterable[Location] = ()) -> dict[str, Any]:
    """The configuration as shown to readers: sealed markers, values the schema marks secret and the
    locations in `also` replaced by a mask."""
    locations = {*sealed_locations(config), *secret_locations(schema, config), *also}
    return map_locations(config, locations, lambda _path, _value: MASK)


def check_reserved(config: Any) -> None:
    """`$sealed` is how stored secrets are marked; a client may not send it (it could pose as a secret)."""
    nodes: list[Any] = [config]
    while nodes:  # a quick pass first: most configurations have no such key, and paths cost
        node = nodes.pop()
        if isinstance(node, dict):
            if SEALED in node:
                break
            nodes.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            nodes.extend(v for v in node if isinstance(v, (dict, list)))
    else:
        return
    stack: list[tuple[Any, Location]] = [(config, ())]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            if SEALED in node:
                field = ".".join(["config", *(str(p) for p in at)])
                raise ConfigurationInvalid(f"{field}: the key {SEALED!r} is reserved for sealed secrets", field=field)
            stack.extend((v, (*at, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*at, i)) for i, v in enumerate(node))


def keep_masked(
    schema: dict[str, Any], new: dict[str, Any], old: dict[str, Any], sealed: Iterable[Location] = ()
) -> dict[str, Any]:
    """Secrets sent back masked (as they were read) keep their stored value; a mask standing where no
    secret is stored is refused. Secret: marked by the schema, or in `sealed` (classified before)."""

    def resolve(path: str, value: Any, location: Location) -> Any:
        if value != MASK:
            return value
        present, stored = _get(old, location)
        if not present:
            raise ConfigurationInvalid(
                f"{path}: {MASK!r} stands for a stored secret, but none is stored; send the value", field=path
            )
        return stored

    out = new
    for location in {*secret_locations(schema, new), *sealed}:
        present, value = _get(out, location)
        if present and location:
            out = _replace(out, location, resolve("config." + path_of(location), value, location))
    return out


def prepare_config(
    schema: dict[str, Any], new: dict[str, Any], old: dict[str, Any], classified: Iterable[Location] = ()
) -> tuple[dict[str, Any], list[Location]]:
    """The configuration to store (in clear) and the locations to seal in it; raises ConfigurationInvalid,
    whose messages never show a secret. `old` is the stored configuration in clear, `classified` the
    locations sealed before (they stay secret whatever the schema says)."""
    check_reserved(new)
    classified = list(classified)
    clear = keep_masked(schema, new, old, classified)
    secret = {*secret_locations(schema, clear), *(loc for loc in classified if _get(clear, loc)[0])}
    validate_config(schema, clear, secret)
    return clear, sorted(secret, key=lambda loc: [str(p) for p in loc])


def validate_config(schema: dict[str, Any], config: dict[str, Any], secret: Iterable[Location] | None = None) -> None:
    """Raise ConfigurationInvalid listing every violation, each naming its field. Messages are built so
    that no secret value (marked by the schema, or in `secret`) ever appears in them."""
    if not schema:
        return
    errors = sorted(validator_for(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    hidden = set(secret) if secret is not None else set(secret_locations(schema, config))
    leaked = _secret_texts(config, hidden)
    violations = [{"field": _field(e), "message": _message(e, hidden, leaked)} for e in errors]
    first = violations[0]
    raise ConfigurationInvalid(f"{first['field']}: {first['message']}", field=first["field"], violations=violations)


def _secret_texts(config: Any, hidden: set[Location]) -> set[str]:
    """Every scalar under a secret location, as text (what a message must never contain)."""
    texts: set[str] = set()
    for location in hidden:
        present, value = _get(config, location)
        stack = [value] if present else []
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
            elif node is not None and not isinstance(node, bool):
                texts |= {str(node), repr(node)}
    return texts


def _message(error: Any, hidden: set[Location], leaked: set[str]) -> str:
    """jsonschema's message unless the value it is about holds a secret (messages quote values)."""
    at = tuple(error.absolute_path)
    holds_secret = any(loc[: len(at)] == at or at[: len(loc)] == loc for loc in hidden)
    quotes_secret = any(t in error.message for t in leaked)
    if not quotes_secret and (not holds_secret or error.validator in SAFE_MESSAGES):
        text = error.message
        return text if len(text) <= MAX_MESSAGE else f"{text[: MAX_MESSAGE // 2]} ... {text[-MAX_MESSAGE // 2 :]}"
    value = error.validator_value
    shown = f" {value!r}" if isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 80 else ""
    return f"the value (secret, not shown) does not satisfy {error.validator!r}{shown}"


def _field(error: Any) -> str:
    """`config.<path>`; for a missing or unexpected property, the path of that property."""
    path = ["config", *(str(p) for p in error.absolute_path)]
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in instance]
        path += missing[:1]
    elif error.validator == "dependentRequired":
        missing = [k for deps in error.validator_value.values() for k in deps if k not in instance]
        path += missing[:1]
    elif error.validator == "additionalProperties" and error.validator_value is False:
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)
        path += extra[:1]
    return ".".join(path)


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k, ...) != new.get(k, ...))
