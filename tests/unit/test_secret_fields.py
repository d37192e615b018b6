"""Secret fields through every JSON Schema shape, masking, sealing across versions, safe error messages."""

from __future__ import annotations

from typing import Any

import pytest

from domain.identity.access import Access, grants
from domain.plugins.configuration import (
    MASK,
    SEALED,
    keep_masked,
    map_locations,
    mask_secrets,
    prepare_config,
    sealed_locations,
    secret_locations,
    secret_paths,
    validate_config,
)
from domain.plugins.errors import ConfigurationInvalid, FieldNotSealed
from domain.plugins.plugin import Plugin

S = "s3cr3t-planted-value"
SECRET = {"type": "string", "minLength": 40, "secret": True}

# Each shape: (schema, a config holding S where the schema marks a secret, that location, static path).
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any], tuple, str]] = {
    "properties": ({"properties": {"token": SECRET}}, {"token": S}, ("token",), "token"),
    "writeOnly": ({"properties": {"pin": {"type": "string", "writeOnly": True, "minLength": 40}}}, {"pin": S}, ("pin",), "pin"),
    "format password": (
        {"properties": {"pw": {"type": "string", "format": "password", "minLength": 40}}}, {"pw": S}, ("pw",), "pw",
    ),
    "nested": ({"properties": {"db": {"properties": {"password": SECRET}}}}, {"db": {"password": S}}, ("db", "password"), "db.password"),
    "$ref/$defs": (
        {"$defs": {"pw": SECRET}, "properties": {"db": {"properties": {"password": {"$ref": "#/$defs/pw"}}}}},
        {"db": {"password": S}}, ("db", "password"), "db.password",
    ),
    "$ref by $id and anchor": (
        {"$defs": {"pw": {"$id": "urn:charter:pw", "$anchor": "pw", **SECRET}}, "properties": {"a": {"$ref": "urn:charter:pw#pw"}}},
        {"a": S}, ("a",), "a",
    ),
    "items": (
        {"properties": {"servers": {"type": "array", "items": {"properties": {"password": SECRET}}}}},
        {"servers": [{"password": "x" * 40}, {"password": S}]}, ("servers", 1, "password"), "servers.*.password",
    ),
    "prefixItems": (
        {"properties": {"pair": {"prefixItems": [{"type": "string"}, SECRET]}}}, {"pair": ["user", S]}, ("pair", 1), "pair.1",
    ),
    "additionalProperties": (
        {"properties": {"tokens": {"type": "object", "additionalProperties": SECRET}}}, {"tokens": {"github": S}},
        ("tokens", "github"), "tokens.*",
    ),
    "patternProperties": (
        {"properties": {"env": {"patternProperties": {"^SECRET_": SECRET}}}}, {"env": {"SECRET_KEY": S, "PLAIN": "p"}},
        ("env", "SECRET_KEY"), "env.*",
    ),
    "allOf": ({"allOf": [{"properties": {"k": SECRET}}]}, {"k": S}, ("k",), "k"),
    "anyOf": ({"properties": {"k": {"anyOf": [{"type": "integer"}, SECRET]}}}, {"k": S}, ("k",), "k"),
    "oneOf": ({"oneOf": [{"properties": {"k": SECRET}, "required": ["k"]}, {"required": ["other"]}]}, {"k": S}, ("k",), "k"),
    "if/then": (
        {"if": {"properties": {"mode": {"const": "auth"}}}, "then": {"properties": {"k": SECRET}}},
        {"mode": "auth", "k": S}, ("k",), "k",
    ),
    "if/else": (
        {"if": {"properties": {"mode": {"const": "none"}}}, "else": {"properties": {"k": SECRET}}},
        {"mode": "auth", "k": S}, ("k",), "k",
    ),
    "recursive $ref": (
        {"$defs": {"node": {"properties": {"key": SECRET, "child": {"$ref": "#/$defs/node"}}}}, "$ref": "#/$defs/node"},
        {"child": {"child": {"key": S}}}, ("child", "child", "key"), "key",
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
class TestSecretLocations:
    def test_finds_the_secret_in_the_configuration(self, shape: str) -> None:
        schema, config, location, _ = SHAPES[shape]

        assert location in secret_locations(schema, config)

    def test_names_the_field_in_the_static_secret_paths(self, shape: str) -> None:
        schema, _, _, path = SHAPES[shape]

        assert path in secret_paths(schema)

    def test_masking_hides_the_secret(self, shape: str) -> None:
        schema, config, _, _ = SHAPES[shape]

        assert S not in repr(mask_secrets(schema, config))

    def test_validation_messages_never_quote_the_secret(self, shape: str) -> None:
        schema, config, location, _ = SHAPES[shape]

        with pytest.raises(ConfigurationInvalid) as refused:
            validate_config(schema, config)  # the secret is too short for minLength 40

        assert S not in repr(refused.value.details) and S not in refused.value.message
        where = "config." + ".".join(map(str, location))
        assert any(where.startswith(v["field"]) for v in refused.value.details["violations"])  # it or a parent (anyOf)

    def test_prepare_marks_it_for_sealing_and_refuses_without_quoting_it(self, shape: str) -> None:
        schema, config, location, _ = SHAPES[shape]
        long_enough = map_locations(config, [location], lambda _p, _v: S * 3)

        clear, secret = prepare_config(schema, long_enough, {})

        assert location in secret and clear == long_enough


class TestSecretLocationsLeavePlainValuesAlone:
    def test_plain_values_beside_secrets_are_not_secret(self) -> None:
        schema, config, _, _ = SHAPES["patternProperties"]

        assert secret_locations(schema, config) == [("env", "SECRET_KEY")]

    def test_no_schema_no_secrets(self) -> None:
        assert secret_locations({}, {"a": 1}) == [] and secret_paths({}) == []

    def test_a_secret_object_is_sealed_whole(self) -> None:
        schema = {"properties": {"creds": {"type": "object", "secret": True}}}

        assert secret_locations(schema, {"creds": {"user": "u", "password": "p"}}) == [("creds",)]

    def test_an_in_place_reference_cycle_ends(self) -> None:
        schema = {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}

        assert secret_locations(schema, {"x": 1}) == [] and secret_paths(schema) == []

    def test_static_paths_of_a_ref_dag_stop_within_a_budget(self) -> None:
        defs = {f"d{i}": {"properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}, "b": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(40)}
        defs["d40"] = {"properties": {"k": SECRET}}

        assert isinstance(secret_paths({"$defs": defs, "$ref": "#/$defs/d0"}), list)


class TestMasking:
    SCHEMA = {"properties": {"token": SECRET, "level": {"type": "integer"}}}

    def test_a_sealed_value_is_masked_even_where_the_schema_no_longer_marks_it(self) -> None:
        stored = {"old": {SEALED: "gAAAA"}, "level": 1}

        assert mask_secrets(self.SCHEMA, stored) == {"old": MASK, "level": 1}

    def test_finds_sealed_markers_at_any_depth(self) -> None:
        stored = {"a": [{"b": {SEALED: "x"}}], "c": {SEALED: "y"}, "d": "plain"}

        assert sealed_locations(stored) == [("a", 0, "b"), ("c",)]

    def test_a_mask_sent_back_keeps_the_stored_value_also_for_a_classified_field(self) -> None:
        new = keep_masked({}, {"old": MASK, "level": 2}, {"old": "kept", "level": 1}, sealed=[("old",)])

        assert new == {"old": "kept", "level": 2}

    def test_a_mask_where_nothing_is_stored_is_refused(self) -> None:
        with pytest.raises(ConfigurationInvalid) as refused:
            keep_masked(self.SCHEMA, {"token": MASK}, {})

        assert refused.value.details["field"] == "config.token"

    def test_a_client_cannot_send_a_sealed_marker(self) -> None:
        with pytest.raises(ConfigurationInvalid) as refused:
            prepare_config(self.SCHEMA, {"level": {SEALED: "forged"}}, {})

        assert refused.value.details["field"] == "config.level"


class TestClassifiedFieldsStaySealed:
    def test_a_field_no_longer_marked_stays_secret_when_classified(self) -> None:
        clear, secret = prepare_config({"properties": {"token": {"type": "string"}}}, {"token": S}, {}, [("token",)])

        assert secret == [("token",)]

    def test_messages_hide_a_classified_value_the_schema_no_longer_marks(self) -> None:
        schema = {"properties": {"token": {"type": "integer"}}}

        with pytest.raises(ConfigurationInvalid) as refused:
            prepare_config(schema, {"token": S}, {}, [("token",)])

        assert S not in repr(refused.value.details)

    def test_messages_about_an_object_holding_a_secret_do_not_quote_it(self) -> None:
        schema = {"properties": {"db": {"type": "object", "maxProperties": 1, "properties": {"password": SECRET}}}}

        with pytest.raises(ConfigurationInvalid) as refused:
            validate_config(schema, {"db": {"password": S * 3, "host": "h"}})

        assert S not in repr(refused.value.details)
        assert refused.value.details["field"] == "config.db"

    def test_a_missing_required_field_keeps_its_helpful_message(self) -> None:
        schema = {"properties": {"db": {"required": ["host"], "properties": {"password": SECRET}}}}

        with pytest.raises(ConfigurationInvalid) as refused:
            validate_config(schema, {"db": {"password": S * 3}})

        assert refused.value.details["violations"][0]["message"] == "'host' is a required property"


def replay(*events: tuple[str, dict[str, Any]]) -> Plugin:
    from datetime import datetime, timezone

    from eventsourcing.utils import get_topic

    from domain.plugins.plugin import plugin_uuid

    aggregate = None
    for version, (name, payload) in enumerate(events, start=1):
        cls = getattr(Plugin, name)
        extra = {"originator_topic": get_topic(Plugin)} if name == "Installed" else {}
        event = cls(originator_id=plugin_uuid("p"), originator_version=version, timestamp=datetime.now(timezone.utc), **payload, **extra)
        aggregate = event.mutate(aggregate)
    return aggregate


class TestDeclassify:
    def given(self) -> Plugin:
        manifest = {"id": "p", "name": "P", "version": "1.0.0"}
        return replay(
            ("Installed", dict(plugin_id="p", manifest=manifest, source={}, config={"token": {SEALED: "t"}}, enabled=False)),
            ("ConfigurationChanged", dict(config={"other": 1}, changed_keys=["other", "token"])),
        )

    def test_a_field_sealed_once_stays_classified_after_it_was_removed(self) -> None:
        assert self.given().classified == {("token",)}

    def test_declassify_records_its_own_event_and_forgets_the_field(self) -> None:
        plugin = self.given()

        plugin.declassify(plugin and ["token"], "a public test token", {"other": 1})

        (event,) = plugin.collect_events()
        assert type(event).__name__ == "Declassified" and event.fields == ["token"] and event.reason == "a public test token"
        assert plugin.classified == set()

    def test_naming_a_field_that_is_not_sealed_is_refused_naming_it(self) -> None:
        with pytest.raises(FieldNotSealed) as refused:
            self.given().classified_at(["token", "nope"])

        assert refused.value.details["field"] == "fields.1"


class TestDeclassifyPermission:
    def test_only_a_grant_by_name_or_everything_holds_it(self) -> None:
        assert grants("*:*", "plugins:declassify")
        assert grants("plugins:declassify", "plugins:declassify")
        assert not grants("plugins:*", "plugins:declassify")
        assert not Access(user_id="u", everywhere=frozenset({"plugins:*"})).allows("plugins:declassify")
        assert grants("plugins:*", "plugins:configure")
