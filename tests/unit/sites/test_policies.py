"""The site policies: each problem kind, combinations, and that every problem is listed at once."""

from __future__ import annotations

from typing import Any

import pytest

from domain.plugins.errors import ManifestInvalid
from domain.plugins.manifest import parse_manifest
from domain.sites.extensions import ActiveExtension, ExtensionRules
from domain.sites.policies import Candidate, check_activation, check_combination, dependents_at_site, errors
from domain.sites.signoff import Signoff

HASH = "sha256:abc"


def rules(**manifest: Any) -> ExtensionRules:
    return ExtensionRules.of(parse_manifest({"id": manifest.pop("id", "x"), "name": "X", "version": "1.0", **manifest}))


def candidate(plugin_id: str = "sap", version: str = "1.0", installed: str | None = "1.0", enabled: bool = True,
              schema_errors: tuple = (), **manifest: Any) -> Candidate:
    return Candidate(plugin_id, version, installed, enabled, rules(id=plugin_id, **manifest), HASH, schema_errors)


def active(plugin_id: str, version: str = "1.0", **manifest: Any) -> ActiveExtension:
    return ActiveExtension(plugin_id, version, {}, "sha256:other", rules(id=plugin_id, **manifest))


def site(*extensions: ActiveExtension) -> dict[str, ActiveExtension]:
    return {e.plugin_id: e for e in extensions}


def codes(problems: list) -> list[tuple[str, str, str]]:
    return [(p.code, p.field, p.severity) for p in problems]


def signoff(aspect: str, configuration_hash: str = HASH, signer: str = "u1") -> Signoff:
    return Signoff("s-" + aspect, "sap", aspect, signer, "Ann Signer", "quality-focal", "Approved", "", configuration_hash,
                   "2024-11-01T10:00:00+00:00")


ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved"},
                       {"name": "audit", "role": "compliance-officer", "meaning": "Reviewed"}]}


class TestAClearActivation:
    def test_has_no_problem(self) -> None:
        assert check_activation(candidate(), site()) == []


class TestSchema:
    def test_lists_every_schema_violation_under_its_field(self) -> None:
        violations = ({"field": "configuration.url", "message": "not a URL"}, {"field": "configuration.n", "message": "x"})

        problems = check_activation(candidate(schema_errors=violations), site())

        assert codes(problems) == [("CONFIGURATION_INVALID", "configuration.url", "error"),
                                   ("CONFIGURATION_INVALID", "configuration.n", "error")]


class TestAvailability:
    def test_rejects_a_plugin_that_is_not_installed_and_says_only_that(self) -> None:
        problems = check_activation(candidate(installed=None, dependencies={"base": ">=1"}), site())

        assert codes(problems) == [("PLUGIN_NOT_INSTALLED", "plugin_id", "error")]

    def test_rejects_a_version_other_than_the_installed_one(self) -> None:
        problems = check_activation(candidate(version="2.0", installed="1.0"), site())

        assert codes(problems) == [("VERSION_NOT_INSTALLED", "version", "error")]
        assert problems[0].details == {"requested": "2.0", "installed": "1.0"}

    def test_rejects_a_plugin_disabled_everywhere(self) -> None:
        assert codes(check_activation(candidate(enabled=False), site())) == [("PLUGIN_DISABLED", "plugin_id", "error")]


class TestDependencies:
    def test_rejects_a_dependency_not_active_at_the_site(self) -> None:
        problems = check_activation(candidate(dependencies={"base": ">=1.0"}), site())

        assert codes(problems) == [("DEPENDENCY_MISSING", "dependencies.base", "error")]

    def test_a_dependency_disabled_everywhere_counts_as_inactive(self) -> None:
        problems = check_activation(candidate(dependencies={"base": ">=1.0"}), site(active("base")), disabled={"base"})

        assert codes(problems) == [("DEPENDENCY_INACTIVE", "dependencies.base", "error")]

    def test_rejects_a_dependency_active_in_another_version(self) -> None:
        problems = check_activation(candidate(dependencies={"base": ">=2,<3"}), site(active("base", "1.5")))

        assert codes(problems) == [("DEPENDENCY_VERSION_MISMATCH", "dependencies.base", "error")]
        assert problems[0].details["found"] == "1.5"

    def test_accepts_a_dependency_active_in_range(self) -> None:
        assert check_activation(candidate(dependencies={"base": ">=1,<2"}), site(active("base", "1.5"))) == []


class TestConflicts:
    def test_rejects_an_extension_the_candidate_declares_a_conflict(self) -> None:
        problems = check_activation(
            candidate(conflicts=[{"id": "oracle", "reason": "Cannot use multiple ERP adapters simultaneously"}]),
            site(active("oracle")),
        )

        assert codes(problems) == [("CONFLICT", "conflicts.oracle", "error")]
        assert problems[0].message == "Cannot use multiple ERP adapters simultaneously"
        assert problems[0].details["extension_id1"] == "sap" and problems[0].details["extension_id2"] == "oracle"

    def test_rejects_an_active_extension_that_declares_the_candidate_a_conflict(self) -> None:
        problems = check_activation(candidate(), site(active("oracle", conflicts=[{"id": "sap", "versions": "<2"}])))

        assert codes(problems) == [("CONFLICT", "conflicts.oracle", "error")]

    def test_a_conflict_outside_its_version_range_does_not_count(self) -> None:
        assert check_activation(candidate(), site(active("oracle", conflicts=[{"id": "sap", "versions": ">=2"}]))) == []


class TestExclusiveCapabilities:
    def test_rejects_a_second_provider_of_an_exclusive_capability(self) -> None:
        problems = check_activation(
            candidate(capabilities=["erp"], exclusive_capabilities=["erp"]), site(active("oracle", capabilities=["erp"]))
        )

        assert codes(problems) == [("CAPABILITY_CLASH", "capabilities.erp", "error")]
        assert problems[0].details["scope"] == "capability" and problems[0].details["capability"] == "erp"

    def test_exclusive_declared_by_the_active_provider_counts_too(self) -> None:
        problems = check_activation(
            candidate(capabilities=["erp"]), site(active("oracle", capabilities=["erp"], exclusive_capabilities=["erp"]))
        )

        assert codes(problems) == [("CAPABILITY_CLASH", "capabilities.erp", "error")]

    def test_two_providers_of_a_shared_capability_coexist(self) -> None:
        assert check_activation(candidate(capabilities=["erp"]), site(active("oracle", capabilities=["erp"]))) == []


class TestCompliance:
    def test_warns_of_each_aspect_and_lists_missing_signoffs_as_errors(self) -> None:
        problems = check_activation(candidate(compliance=ASPECTS), site())

        assert codes(problems) == [
            ("COMPLIANCE_SIGNOFF_REQUIRED", "compliance.aspects.esig", "warning"),
            ("SIGNOFF_MISSING", "signoffs.esig", "error"),
            ("COMPLIANCE_SIGNOFF_REQUIRED", "compliance.aspects.audit", "warning"),
            ("SIGNOFF_MISSING", "signoffs.audit", "error"),
        ]
        assert problems[0].message == "Compliance signoff required from quality-focal (esig)"

    def test_a_signoff_bound_to_this_hash_covers_its_aspect(self) -> None:
        problems = check_activation(candidate(compliance=ASPECTS), site(), signoffs=[signoff("esig")])

        assert [p.field for p in errors(problems)] == ["signoffs.audit"]

    def test_a_signoff_of_another_configuration_does_not_count(self) -> None:
        problems = check_activation(candidate(compliance=ASPECTS), site(), signoffs=[signoff("esig", "sha256:old")])

        assert [p.field for p in errors(problems)] == ["signoffs.esig", "signoffs.audit"]

    def test_fully_signed_is_clear(self) -> None:
        assert check_activation(candidate(compliance=ASPECTS), site(), [signoff("esig"), signoff("audit", signer="u2")]) == []


class TestRecommendations:
    def test_recommends_an_extension_not_active(self) -> None:
        problems = check_activation(candidate(recommends={"audit-log": ""}), site())

        assert codes(problems) == [("RECOMMENDED_EXTENSION", "recommends.audit-log", "recommendation")]
        assert errors(problems) == []

    def test_no_recommendation_once_it_is_active(self) -> None:
        assert check_activation(candidate(recommends={"audit-log": ">=1"}), site(active("audit-log"))) == []


class TestEveryProblemAtOnce:
    def test_lists_every_kind_in_one_answer(self) -> None:
        problems = check_activation(
            candidate(
                enabled=False, schema_errors=({"field": "configuration.url", "message": "bad"},),
                dependencies={"base": ">=2"}, conflicts=[{"id": "oracle"}], capabilities=["erp"],
                exclusive_capabilities=["erp"], compliance=ASPECTS, recommends={"audit-log": ""},
            ),
            site(active("base", "1.0"), active("oracle"), active("mes", capabilities=["erp"])),
        )

        assert [p.code for p in problems] == [
            "CONFIGURATION_INVALID", "PLUGIN_DISABLED", "DEPENDENCY_VERSION_MISMATCH", "CONFLICT", "CAPABILITY_CLASH",
            "COMPLIANCE_SIGNOFF_REQUIRED", "SIGNOFF_MISSING", "COMPLIANCE_SIGNOFF_REQUIRED", "SIGNOFF_MISSING",
            "RECOMMENDED_EXTENSION",
        ]

    def test_the_candidate_already_active_is_not_checked_against_itself(self) -> None:
        assert check_activation(
            candidate(capabilities=["erp"], exclusive_capabilities=["erp"]),
            site(active("sap", capabilities=["erp"], exclusive_capabilities=["erp"])),
        ) == []


class TestCombination:
    def test_dependencies_are_satisfied_by_other_members(self) -> None:
        problems = check_combination([candidate("mes", dependencies={"sap": ">=1"}), candidate("sap")], site())

        assert problems == []

    def test_a_clash_between_two_members_is_listed_once(self) -> None:
        problems = check_combination(
            [candidate("sap", capabilities=["erp"], exclusive_capabilities=["erp"]),
             candidate("oracle", capabilities=["erp"])],
            site(),
        )

        assert codes(problems) == [("CAPABILITY_CLASH", "extensions.0.capabilities.erp", "error")]

    def test_warns_of_signoffs_without_requiring_them(self) -> None:
        problems = check_combination([candidate("sap", compliance=ASPECTS)], site())

        assert {p.code for p in problems} == {"COMPLIANCE_SIGNOFF_REQUIRED"}
        assert problems[0].details["extension_id"] == "sap"

    def test_checks_members_against_the_site_too(self) -> None:
        problems = check_combination([candidate("sap", conflicts=[{"id": "oracle"}])], site(active("oracle")))

        assert codes(problems) == [("CONFLICT", "extensions.0.conflicts.oracle", "error")]


class TestDependents:
    def test_lists_active_extensions_depending_on_one(self) -> None:
        extensions = site(active("sap"), active("procurement", dependencies={"sap": ""}),
                          active("inventory", dependencies={"sap": ">=1"}), active("mes"))

        assert dependents_at_site("sap", extensions) == ["inventory", "procurement"]


class TestManifestSiteRules:
    @pytest.mark.parametrize(
        ("manifest", "field"),
        [
            ({"exclusive_capabilities": ["erp"]}, "manifest.exclusive_capabilities.0"),
            ({"conflicts": [{"id": "x"}]}, "manifest.conflicts.0.id"),
            ({"conflicts": [{"id": "Bad Id"}]}, "manifest.conflicts.0.id"),
            ({"conflicts": [{"id": "b", "versions": "one"}]}, "manifest.conflicts.0.versions"),
            ({"dependencies": {"b": ""}, "conflicts": [{"id": "b"}]}, "manifest.conflicts.0.id"),
            ({"recommends": {"b": "not a range"}}, "manifest.recommends.b"),
            ({"compliance": {"aspects": [{"name": "a", "role": "Not A Role", "meaning": "m"}]}},
             "manifest.compliance.aspects.0.role"),
            ({"compliance": {"aspects": [{"name": "a", "role": "qa", "meaning": " "}]}},
             "manifest.compliance.aspects.0.meaning"),
            ({"compliance": {"aspects": [{"name": "a", "role": "qa", "meaning": "m"}] * 2}},
             "manifest.compliance.aspects.1.name"),
            ({"compliance": {"aspects": [{"name": "a", "role": "qa", "meaning": "m"}], "distinct_signers": [["a", "b"]]}},
             "manifest.compliance.distinct_signers.0.1"),
            ({"compliance": {"aspects": [{"name": "a", "role": "qa"}]}}, "manifest.compliance.aspects.0.meaning"),
            ({"compliance": {"aspects": [{"name": "a", "role": "qa", "meaning": "m" * 501}]}},
             "manifest.compliance.aspects.0.meaning"),
        ],
    )
    def test_refuses_at_install_naming_the_field(self, manifest: dict, field: str) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            parse_manifest({"id": "x", "name": "X", "version": "1.0", **manifest})

        assert refused.value.details["field"] == field
