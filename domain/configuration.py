"""Plugin configuration rules: JSON Schema validation and which fields are secret."""

from __future__ import annotations

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
        violations = [
            {"field": "config" + "".join(f".{p}" for p in e.absolute_path), "message": e.message} for e in errors
        ]
        first = violations[0]
        raise ConfigurationInvalid(f"{first['field']}: {first['message']}", field=first["field"], violations=violations)


def secret_fields(schema: dict[str, Any]) -> set[str]:
    """Top-level configuration keys the schema marks secret (`secret: true`, `writeOnly` or `format: password`)."""
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return {
        key
        for key, spec in props.items()
        if isinstance(spec, dict)
        and (spec.get("secret") is True or spec.get("writeOnly") is True or spec.get("format") == "password")
    }


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


def mask_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration as shown to readers: sealed values replaced by a mask."""
    return {k: (MASK if is_sealed(v) else v) for k, v in config.items()}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k, ...) != new.get(k, ...))
