"""Pure rules of the catalog: host compatibility, dependencies, dependents, manifests and configuration."""

from __future__ import annotations

from typing import Any

import pytest

from domain.plugins.configuration import (
    MASK,
    SEALED,
    changed_keys,
    keep_masked,
    map_secrets,
    mask_secrets,
    secret_paths,
    validate_config,
)
from domain.plugins.errors import ConfigurationInvalid, DependencyError, HasDependents, ManifestInvalid, PluginIncompatible
from domain.plugins.manifest import Manifest, parse_manifest
from domain.plugins.policies import (
    UnmetDependency,
    check_dependencies,
    check_host_compatibility,
    check_no_dependents,
    dependents_of,
    unmet_dependencies,
)


def manifest(plugin_id: str = "reports", version: str = "1.0.0", **fields: Any) -> Manifest:
    return parse_manifest({"id": plugin_id, "name": plugin_id.title(), "version": version, **fields})


class TestHostCompatibility:
    def test_accepts_a_host_inside_the_range(self) -> None:
        check_host_compatibility(manifest(host_versions=">=1.0,<2"), "1.4.2")

    def test_accepts_any_host_when_no_range_is_declared(self) -> None:
        check_host_compatibility(manifest(), "0.0.1")

    def test_accepts_a_prerelease_host_inside_the_range(self) -> None:
        check_host_compatibility(manifest(host_versions=">=1.0"), "1.5.0rc1")

    def test_rejects_a_host_outside_the_range(self) -> None:
        with pytest.raises(PluginIncompatible) as refused:
            check_host_compatibility(manifest(host_versions=">=2.0"), "1.0.0")

        assert refused.value.details == {"required": ">=2.0", "host_version": "1.0.0"}
        assert "requires host >=2.0" in refused.value.message


class TestUnmetDependencies:
    def test_none_when_every_dependency_is_installed_in_range(self) -> None:
        m = manifest(dependencies={"storage": ">=1.0", "auth": "~=2.1"})

        assert unmet_dependencies(m, {"storage": "1.3.0", "auth": "2.1.5"}) == []

    def test_names_a_missing_dependency_with_found_none(self) -> None:
        m = manifest(dependencies={"storage": ">=1.0"})

        assert unmet_dependencies(m, {}) == [UnmetDependency("storage", ">=1.0", None)]

    def test_an_uninstalled_dependency_counts_as_missing(self) -> None:
        m = manifest(dependencies={"storage": ">=1.0"})

        assert unmet_dependencies(m, {"storage": None}) == [UnmetDependency("storage", ">=1.0", None)]

    def test_names_an_installed_dependency_out_of_range_with_the_version_found(self) -> None:
        m = manifest(dependencies={"storage": ">=2.0"})

        assert unmet_dependencies(m, {"storage": "1.9.0"}) == [UnmetDependency("storage", ">=2.0", "1.9.0")]

    def test_an_empty_requirement_accepts_any_installed_version(self) -> None:
        m = manifest(dependencies={"storage": ""})

        assert unmet_dependencies(m, {"storage": "0.1.0"}) == []
        assert unmet_dependencies(m, {}) == [UnmetDependency("storage", "", None)]

    def test_lists_unmet_dependencies_sorted_by_id(self) -> None:
        m = manifest(dependencies={"zeta": ">=1", "alpha": ">=1", "mid": ">=1"})

        assert [u.plugin_id for u in unmet_dependencies(m, {"mid": "1.0"})] == ["alpha", "zeta"]

    def test_describes_what_is_required_and_what_was_found(self) -> None:
        assert UnmetDependency("storage", ">=2.0", "1.0").describe() == "requires storage>=2.0, installed is 1.0"
        assert UnmetDependency("storage", ">=2.0", None).describe() == "requires storage>=2.0, it is not installed"


class TestCheckDependencies:
    def test_rejects_with_every_unmet_dependency_in_details(self) -> None:
        m = manifest(dependencies={"storage": ">=2.0", "auth": ">=1"})

        with pytest.raises(DependencyError) as refused:
            check_dependencies(m, {"storage": "1.0.0"})

        assert refused.value.details == {
            "unmet": [
                {"plugin_id": "auth", "required": ">=1", "found": None},
                {"plugin_id": "storage", "required": ">=2.0", "found": "1.0.0"},
            ]
        }
        assert "reports 1.0.0" in refused.value.message

    def test_accepts_satisfied_dependencies(self) -> None:
        check_dependencies(manifest(dependencies={"storage": ">=1"}), {"storage": "1.0"})


class TestDependents:
    def test_lists_installed_plugins_depending_on_the_plugin_sorted(self) -> None:
        installed = [
            manifest("zed", dependencies={"storage": ">=1"}),
            manifest("storage"),
            manifest("alpha", dependencies={"storage": ">=1", "auth": ">=1"}),
            manifest("other", dependencies={"auth": ">=1"}),
        ]

        assert dependents_of("storage", installed) == ["alpha", "zed"]
        assert dependents_of("reports", installed) == []

    def test_refuses_removal_of_a_plugin_others_depend_on(self) -> None:
        with pytest.raises(HasDependents) as refused:
            check_no_dependents("storage", ["alpha", "zed"], force=False)

        assert refused.value.details == {"dependents": ["alpha", "zed"]}
        assert "alpha, zed" in refused.value.message

    def test_force_overrides_dependents(self) -> None:
        check_no_dependents("storage", ["alpha"], force=True)

    def test_no_dependents_needs_no_force(self) -> None:
        check_no_dependents("storage", [], force=False)


class TestParseManifest:
    def test_parses_a_dict_with_defaults(self) -> None:
        m = parse_manifest({"id": "reports", "name": "Reports", "version": "1.2.3"})

        assert (m.id, m.name, m.version, m.category, m.dependencies) == ("reports", "Reports", "1.2.3", "general", {})

    def test_parses_json_bytes(self) -> None:
        m = parse_manifest(b'{"id": "reports", "name": "Reports", "version": "2.0", "tags": ["pdf"]}')

        assert m.tags == ["pdf"]

    def test_round_trips_through_to_dict(self) -> None:
        m = manifest(dependencies={"storage": ">=1"}, config_schema={"type": "object"})

        assert parse_manifest(m.to_dict()) == m

    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            ({"id": "reports", "name": "Reports", "version": 1}, "manifest.version"),
            ({"id": "reports", "name": "Reports", "version": "1", "tags": [1]}, "manifest.tags.0"),
            ({"id": "reports", "name": "Reports", "version": "1", "events": {"emits": [3]}}, "manifest.events.emits.0"),
            ({"id": "Reports!", "name": "Reports", "version": "1"}, "manifest.id"),
            ({"id": "reports", "name": "  ", "version": "1"}, "manifest.name"),
            ({"id": "reports", "name": "Reports", "version": "not a version"}, "manifest.version"),
            ({"id": "reports", "name": "Reports", "version": "1", "host_versions": "banana"}, "manifest.host_versions"),
            ({"id": "reports", "name": "Reports", "version": "1", "dependencies": {"reports": ">=1"}},
             "manifest.dependencies.reports"),
            ({"id": "reports", "name": "Reports", "version": "1", "dependencies": {"Bad Id": ">=1"}},
             "manifest.dependencies.Bad Id"),
            ({"id": "reports", "name": "Reports", "version": "1", "dependencies": {"storage": "soon"}},
             "manifest.dependencies.storage"),
            ({"id": "reports", "name": "Reports", "version": "1", "config_schema": {"type": "nope"}},
             "manifest.config_schema.type"),
        ],
    )
    def test_rejects_an_invalid_manifest_naming_the_field(self, raw: dict[str, Any], field: str) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            parse_manifest(raw)

        assert refused.value.details["field"] == field
        assert refused.value.code == "MANIFEST_INVALID"

    def test_rejects_a_manifest_missing_a_required_field_naming_it(self) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            parse_manifest({"id": "reports", "version": "1.0"})

        assert "name" in refused.value.message
        assert refused.value.details["field"] == "manifest.name"

    def test_rejects_an_unknown_field_naming_it(self) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            parse_manifest({"id": "reports", "name": "Reports", "version": "1", "colour": "red"})

        assert "colour" in refused.value.message
        assert refused.value.details["field"] == "manifest.colour"

    def test_rejects_malformed_json(self) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            parse_manifest(b"{not json")

        assert refused.value.details["field"] == "manifest"
        assert "not valid JSON" in refused.value.message

    def test_rejects_a_manifest_that_is_not_an_object(self) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            parse_manifest("[]")

        assert refused.value.details["field"] == "manifest"


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "port": {"type": "integer", "minimum": 1},
        "mode": {"type": "string", "enum": ["fast", "safe"]},
        "nested": {"type": "object", "properties": {"depth": {"type": "integer"}}},
        "token": {"type": "string", "secret": True},
        "password": {"type": "string", "format": "password"},
        "api_key": {"type": "string", "writeOnly": True},
        "public": {"type": "string", "writeOnly": False},
    },
    "required": ["port"],
}


class TestValidateConfig:
    def test_accepts_a_valid_config(self) -> None:
        validate_config(SCHEMA, {"port": 8080, "mode": "fast", "nested": {"depth": 2}})

    def test_accepts_anything_without_a_schema(self) -> None:
        validate_config({}, {"whatever": [1, 2]})

    def test_names_the_field_of_a_violation(self) -> None:
        with pytest.raises(ConfigurationInvalid) as refused:
            validate_config(SCHEMA, {"port": 0})

        assert refused.value.details["field"] == "config.port"
        assert refused.value.details["violations"] == [
            {"field": "config.port", "message": "0 is less than the minimum of 1"}
        ]
        assert refused.value.message.startswith("config.port: ")

    def test_lists_every_violation_with_nested_fields(self) -> None:
        with pytest.raises(ConfigurationInvalid) as refused:
            validate_config(SCHEMA, {"port": "eighty", "mode": "turbo", "nested": {"depth": "deep"}})

        fields = [v["field"] for v in refused.value.details["violations"]]
        assert sorted(fields) == ["config.mode", "config.nested.depth", "config.port"]
        assert refused.value.details["field"] == fields[0]

    def test_names_a_missing_required_field(self) -> None:
        with pytest.raises(ConfigurationInvalid) as refused:
            validate_config(SCHEMA, {"mode": "fast"})

        assert refused.value.details["violations"][0]["field"] == "config.port"
        assert refused.value.details["field"] == "config.port"


class TestSecrets:
    NESTED: dict[str, Any] = {
        "type": "object",
        "properties": {
            "db": {"type": "object", "properties": {"host": {"type": "string"}, "password": {"type": "string", "writeOnly": True}}},
            "token": {"type": "string", "secret": True},
            "level": {"type": "integer"},
        },
    }

    def test_secret_paths_are_marked_secret_write_only_or_password(self) -> None:
        assert secret_paths(SCHEMA) == ["api_key", "password", "token"]

    def test_secret_paths_reach_into_nested_objects(self) -> None:
        assert secret_paths(self.NESTED) == ["db.password", "token"]

    def test_no_secret_paths_without_properties(self) -> None:
        assert secret_paths({}) == []
        assert secret_paths({"type": "object"}) == []

    def test_map_secrets_touches_only_secret_values_and_names_their_path(self) -> None:
        seen: list[str] = []
        config = {"db": {"host": "h", "password": "p"}, "token": "t", "level": 1}

        out = map_secrets(self.NESTED, config, lambda path, value: seen.append(path) or f"<{value}>")

        assert out == {"db": {"host": "h", "password": "<p>"}, "token": "<t>", "level": 1}
        assert sorted(seen) == ["config.db.password", "config.token"]
        assert config == {"db": {"host": "h", "password": "p"}, "token": "t", "level": 1}, "the input was changed"

    def test_mask_secrets_hides_every_secret_and_nothing_else(self) -> None:
        config = {"db": {"host": "h", "password": {SEALED: "x"}}, "token": {SEALED: "y"}, "level": 1}

        assert mask_secrets(self.NESTED, config) == {"db": {"host": "h", "password": MASK}, "token": MASK, "level": 1}

    def test_mask_secrets_leaves_absent_secrets_absent(self) -> None:
        assert mask_secrets(self.NESTED, {"level": 2}) == {"level": 2}

    def test_a_secret_sent_back_masked_keeps_its_stored_value(self) -> None:
        old = {"db": {"host": "h", "password": "stored-p"}, "token": "stored-t"}

        new = keep_masked(self.NESTED, {"db": {"host": "h2", "password": MASK}, "token": "fresh"}, old)

        assert new == {"db": {"host": "h2", "password": "stored-p"}, "token": "fresh"}

    def test_a_mask_with_no_stored_secret_is_refused_naming_the_field(self) -> None:
        with pytest.raises(ConfigurationInvalid) as refused:
            keep_masked(self.NESTED, {"db": {"password": MASK}}, {})

        assert refused.value.details["field"] == "config.db.password"

    def test_changed_keys_names_added_removed_and_modified_keys(self) -> None:
        assert changed_keys({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}) == ["b", "c", "d"]
        assert changed_keys({"a": None}, {}) == ["a"]
        assert changed_keys({"a": 1}, {"a": 1}) == []
