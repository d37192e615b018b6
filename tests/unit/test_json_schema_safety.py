"""The JSON Schema engine for plugin configurations: nothing fetched, RE2 for patterns, bounded schemas."""

from __future__ import annotations

import time
from typing import Any

import pytest

from domain.plugins.configuration import validate_config
from domain.plugins.errors import ConfigurationInvalid, ManifestInvalid
from domain.plugins.json_schema import MAX_SCHEMA_DEPTH, MAX_SUBSCHEMAS, check_schema
from domain.plugins.manifest import parse_manifest

FIELD = "manifest.config_schema"


def refused(schema: Any) -> ManifestInvalid:
    with pytest.raises(ManifestInvalid) as caught:
        check_schema(schema)
    return caught.value


class TestReferencesStayInsideTheDocument:
    def test_an_http_reference_is_refused(self) -> None:
        error = refused({"properties": {"x": {"$ref": "http://127.0.0.1:9/x"}}})

        assert error.details["field"] == f"{FIELD}.properties.x.$ref"

    def test_a_file_reference_is_refused(self) -> None:
        error = refused({"properties": {"x": {"$ref": "file:///etc/passwd"}}})

        assert error.details["field"] == f"{FIELD}.properties.x.$ref"

    def test_a_relative_reference_against_a_remote_id_is_refused(self) -> None:
        schema = {"$id": "http://127.0.0.1:9/root", "properties": {"x": {"$ref": "other.json"}}}

        assert refused(schema).details["field"] == f"{FIELD}.properties.x.$ref"

    def test_a_reference_to_a_missing_definition_is_refused(self) -> None:
        assert refused({"properties": {"x": {"$ref": "#/$defs/none"}}}).details["field"] == f"{FIELD}.properties.x.$ref"

    def test_references_inside_the_document_work(self) -> None:
        schema = {
            "$defs": {"port": {"type": "integer", "maximum": 65535}, "id": {"$id": "urn:x:id", "type": "string"}},
            "properties": {"port": {"$ref": "#/$defs/port"}, "name": {"$ref": "urn:x:id"}},
        }

        check_schema(schema)
        validate_config(schema, {"port": 80, "name": "n"})
        with pytest.raises(ConfigurationInvalid):
            validate_config(schema, {"port": 70000})

    def test_another_dialect_is_refused(self) -> None:
        assert refused({"$schema": "http://json-schema.org/draft-07/schema#"}).details["field"] == f"{FIELD}.$schema"


class TestPatternsRunOnRE2:
    def test_a_catastrophic_pattern_answers_at_once(self) -> None:
        schema = {"properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}
        check_schema(schema)

        started = time.perf_counter()
        with pytest.raises(ConfigurationInvalid) as caught:
            validate_config(schema, {"x": "a" * 50 + "!"})

        assert time.perf_counter() - started < 0.5
        assert caught.value.details["field"] == "config.x"

    def test_catastrophic_pattern_properties_answer_at_once(self) -> None:
        schema = {"properties": {"m": {"patternProperties": {"^(a|aa)+$": {"type": "integer"}}, "additionalProperties": False}}}

        started = time.perf_counter()
        with pytest.raises(ConfigurationInvalid):
            validate_config(schema, {"m": {"a" * 60 + "!": 1}})

        assert time.perf_counter() - started < 0.5

    def test_unevaluated_properties_use_re2_too(self) -> None:
        schema = {"patternProperties": {"^(a+)+$": {}}, "unevaluatedProperties": False}

        started = time.perf_counter()
        with pytest.raises(ConfigurationInvalid):
            validate_config(schema, {"a" * 60 + "!": 1})

        assert time.perf_counter() - started < 0.5

    @pytest.mark.parametrize(
        ("schema", "field"),
        [
            ({"properties": {"x": {"pattern": "(a)\\1"}}}, f"{FIELD}.properties.x.pattern"),
            ({"properties": {"x": {"pattern": "a(?=b)"}}}, f"{FIELD}.properties.x.pattern"),
            ({"properties": {"x": {"pattern": "(a{1000}){1000}"}}}, f"{FIELD}.properties.x.pattern"),
            ({"patternProperties": {"(?<=a)b": {}}}, f"{FIELD}.patternProperties"),
        ],
    )
    def test_a_pattern_re2_cannot_compile_is_refused_naming_it(self, schema: dict, field: str) -> None:
        assert refused(schema).details["field"] == field

    def test_format_regex_values_are_checked_with_re2(self) -> None:
        schema = {"properties": {"filter": {"type": "string", "format": "regex"}}}

        validate_config(schema, {"filter": "^[a-z]+$"})
        with pytest.raises(ConfigurationInvalid) as caught:
            validate_config(schema, {"filter": "(a)\\1"})
        assert caught.value.details["field"] == "config.filter"


class TestBoundedSchemas:
    def test_a_schema_nested_too_deep_is_refused(self) -> None:
        schema: dict[str, Any] = {"type": "object"}
        for _ in range(MAX_SCHEMA_DEPTH):
            schema = {"properties": {"a": schema}}

        assert refused(schema).details["field"] == FIELD

    def test_a_schema_with_too_many_subschemas_is_refused(self) -> None:
        schema = {"properties": {f"p{i}": {"type": "integer"} for i in range(MAX_SUBSCHEMAS + 1)}}

        assert refused(schema).details["field"] == FIELD

    def test_unique_items_is_linear_for_unhashable_items(self) -> None:
        schema = {"properties": {"l": {"type": "array", "uniqueItems": True}}}
        items = [{"n": i} for i in range(20000)]

        started = time.perf_counter()
        validate_config(schema, {"l": items})
        with pytest.raises(ConfigurationInvalid):
            validate_config(schema, {"l": [*items, {"n": 0}]})

        assert time.perf_counter() - started < 5

    def test_unique_items_follows_json_equality(self) -> None:
        schema = {"uniqueItems": True}
        for same in ([1, 1.0], [{"a": [1]}, {"a": [1.0]}]):
            with pytest.raises(ConfigurationInvalid):
                validate_config(schema, same)
        validate_config(schema, [1, True])
        validate_config(schema, [0, False, None])

    def test_parse_manifest_runs_the_same_checks(self) -> None:
        with pytest.raises(ManifestInvalid) as caught:
            parse_manifest({"id": "p", "name": "P", "version": "1", "config_schema": {"$ref": "file:///etc/passwd"}})

        assert caught.value.details["field"] == f"{FIELD}.$ref"
