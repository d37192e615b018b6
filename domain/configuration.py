"""Plugin configuration rules: JSON Schema validation and which fields are secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from domain.errors import ConfigurationInvalid, ManifestInvalid

SEALED = "$sealed"
MASK = "********"


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ManifestInvalid when the manifest's config_schema is not a valid JSON Schema."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise ManifestInvalid(
            f"manifest.config_schema is not a valid JSON Schema: {exc.message}",
            field="manifest.config_schema" + (f".{path}" if path else ""),
        ) from None


def validate_config(schema: dict[str, Any], config: dict[str, Any]) -> None:
    """Raise ConfigurationInvalid listing every violation, each naming its field."""
    if not schema:
        return
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        violations = [{"field": _field(e), "message": e.message} for e in errors]
        first = violations[0]
        raise ConfigurationInvalid(f"{first['field']}: {first['message']}", field=first["field"], violations=violations)


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


def _is_secret(spec: Any) -> bool:
    return isinstance(spec, dict) and (
        spec.get("secret") is True or spec.get("writeOnly") is True or spec.get("format") == "password"
    )


def _properties(schema: Any) -> dict[str, Any]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    return props if isinstance(props, dict) else {}


def secret_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of the configuration fields the schema marks secret (`secret: true`, `writeOnly`,
    `format: password`), at any depth of nested objects."""
    paths = []
    for key, spec in _properties(schema).items():
        if _is_secret(spec):
            paths.append(".".join((*prefix, key)))
        else:
            paths.extend(secret_paths(spec, (*prefix, key)))
    return sorted(paths)


def map_secrets(schema: dict[str, Any], config: dict[str, Any], fn: Callable[[str, Any], Any], _at: str = "config") -> dict[str, Any]:
    """A copy of `config` with `fn(path, value)` applied to every value at a secret path."""
    out = dict(config)
    for key, spec in _properties(schema).items():
        if key not in out:
            continue
        path = f"{_at}.{key}"
        if _is_secret(spec):
            out[key] = fn(path, out[key])
        elif isinstance(out[key], dict):
            out[key] = map_secrets(spec, out[key], fn, path)
    return out


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


def mask_secrets(schema: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as shown to readers: every secret replaced by a mask."""
    return map_secrets(schema, config, lambda _path, _value: MASK)


def keep_masked(schema: dict[str, Any], new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Secrets sent back masked (as they were read) keep their stored value; a mask with nothing stored is refused."""

    def resolve(path: str, value: Any) -> Any:
        if value != MASK:
            return value
        current: Any = old
        for part in path.split(".")[1:]:
            if not isinstance(current, dict) or part not in current:
                raise ConfigurationInvalid(
                    f"{path}: {MASK!r} stands for a stored secret, but none is stored; send the value", field=path
                )
            current = current[part]
        return current

    return map_secrets(schema, new, resolve)


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k, ...) != new.get(k, ...))
