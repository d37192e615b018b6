"""The Site aggregate: given events / when command / then events (or a domain error)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

import pytest
from eventsourcing.utils import get_topic

from domain.plugins.manifest import parse_manifest
from domain.sites.errors import (
    ActivationRefused, AlreadySigned, AspectUnknown, ExtensionAlreadyActive, ExtensionNotActive, HasActiveDependents,
    ReasonRequired, SameSignerRefused, SignoffHashMismatch, SiteHasActiveExtensions, SiteInvalid, SiteRetired,
)
from domain.sites.extensions import ExtensionRules
from domain.sites.policies import Candidate
from domain.sites.site import Site, site_uuid

SITE = "plant-1"
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}
ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved for production"},
                       {"name": "audit", "role": "compliance-officer", "meaning": "Reviewed"}],
           "distinct_signers": [["esig", "audit"]]}
NOW = "2024-11-01T10:00:00+00:00"


def rules(plugin_id: str, **manifest: Any) -> dict[str, Any]:
    return ExtensionRules.of(parse_manifest({"id": plugin_id, "name": "X", "version": "1.0", **manifest})).to_dict()


# -- given -----------------------------------------------------------------------------------------


def created(name: str = "Plant 1") -> tuple[str, dict]:
    return "Created", dict(site_id=SITE, name=name, timezone="Europe/Paris", metadata={})


def activated(plugin_id: str, configuration_hash: str = "sha256:h1", **manifest: Any) -> tuple[str, dict]:
    return "ExtensionActivated", dict(
        site_id=SITE, plugin_id=plugin_id, version="1.0", configuration={"a": 1}, configuration_hash=configuration_hash,
        rules=rules(plugin_id, **manifest), signoffs=[], reason="",
    )


def signed(aspect: str, configuration_hash: str = "sha256:h1", signer: str = "u1", plugin_id: str = "sap") -> tuple[str, dict]:
    return "SignoffRecorded", dict(
        site_id=SITE, signoff_id=f"s-{aspect}-{configuration_hash}", plugin_id=plugin_id, aspect=aspect, signer_id=signer,
        signer_name="Ann Signer", role="quality-focal", meaning="Approved", notes="", configuration_hash=configuration_hash,
        signed_at=NOW,
    )


def retired() -> tuple[str, dict]:
    return "Retired", dict(site_id=SITE, reason="closed")


def given(*events: tuple[str, dict]) -> Site:
    aggregate: Site | None = None
    for version, (name, payload) in enumerate(events, start=1):
        kwargs = dict(payload, originator_id=site_uuid(SITE), originator_version=version,
                      timestamp=datetime.now(timezone.utc))
        if version == 1:
            kwargs["originator_topic"] = get_topic(Site)
        aggregate = getattr(Site, name)(**kwargs).mutate(aggregate)
    assert aggregate is not None
    return aggregate


def recorded(site: Site) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type(e).__name__, {f.name: getattr(e, f.name) for f in dataclasses.fields(e) if f.name not in ENVELOPE})
        for e in site.collect_events()
    ]


def candidate(plugin_id: str = "sap", configuration_hash: str = "sha256:h1", **manifest: Any) -> Candidate:
    return Candidate(plugin_id, "1.0", "1.0", True, ExtensionRules.from_dict(rules(plugin_id, **manifest)), configuration_hash)


def compliance():
    return parse_manifest({"id": "sap", "name": "X", "version": "1.0", "compliance": ASPECTS}).compliance


# -- when ------------------------------------------------------------------------------------------


class TestCreate:
    def test_records_created_with_every_field(self) -> None:
        site = Site.create(SITE, " Plant 1 ", "Europe/Paris", {"region": "emea"})

        assert recorded(site) == [("Created", dict(site_id=SITE, name="Plant 1", timezone="Europe/Paris",
                                                   metadata={"region": "emea"}))]
        assert site.id == site_uuid(SITE)

    @pytest.mark.parametrize(
        ("args", "field"),
        [
            ((SITE, "Plant", "Mars/Olympus"), "timezone"),
            ((SITE, "Plant", "../../etc/passwd"), "timezone"),
            ((SITE, "Plant", "x" * 65), "timezone"),
            ((SITE, "  ", "UTC"), "name"),
            ((SITE, "a\x00b", "UTC"), "name"),
            (("global", "Plant", "UTC"), "site_id"),
            (("bad site", "Plant", "UTC"), "site_id"),
        ],
    )
    def test_rejects_a_malformed_field_naming_it(self, args: tuple, field: str) -> None:
        with pytest.raises(SiteInvalid) as refused:
            Site.create(*args)

        assert refused.value.details["field"] == field

    @pytest.mark.parametrize(
        ("metadata", "field"),
        [({f"k{i}": "v" for i in range(33)}, "metadata"), ({"bad key": "v"}, "metadata"), ({"k": "v" * 501}, "metadata.k"),
         ({"k": 3}, "metadata.k")],
    )
    def test_bounds_its_metadata(self, metadata: dict, field: str) -> None:
        with pytest.raises(SiteInvalid) as refused:
            Site.create(SITE, "Plant", "UTC", metadata)

        assert refused.value.details["field"] == field


class TestRenameAndRetire:
    def test_rename_records_old_and_new_name(self) -> None:
        site = given(created())

        assert site.rename("Plant One") is True
        assert recorded(site) == [("Renamed", dict(site_id=SITE, old_name="Plant 1", name="Plant One"))]

    def test_rename_to_the_same_name_records_nothing(self) -> None:
        site = given(created())

        assert site.rename("Plant 1") is False
        assert recorded(site) == []

    def test_retire_is_refused_while_extensions_are_active(self) -> None:
        with pytest.raises(SiteHasActiveExtensions) as refused:
            given(created(), activated("sap")).retire("closed")

        assert refused.value.details["active"] == ["sap"]

    def test_a_retired_site_takes_no_activation(self) -> None:
        site = given(created(), retired())

        with pytest.raises(SiteRetired):
            site.activate(candidate(), {})


class TestActivate:
    def test_records_activation_with_hash_rules_and_covering_signoffs(self) -> None:
        site = given(created(), signed("esig"), signed("audit", signer="u2"))

        site.activate(candidate(compliance=ASPECTS), {"a": 1}, reason="go live")

        [(name, payload)] = recorded(site)
        assert name == "ExtensionActivated"
        assert payload["site_id"] == SITE and payload["configuration_hash"] == "sha256:h1"
        assert payload["signoffs"] == ["s-esig-sha256:h1", "s-audit-sha256:h1"]
        assert payload["rules"]["compliance"]["aspects"][0]["role"] == "quality-focal"
        assert site.extensions["sap"].version == "1.0"

    def test_rejects_activation_without_quality_signoff_listing_every_problem(self) -> None:
        site = given(created(), activated("oracle", capabilities=["erp"]))

        with pytest.raises(ActivationRefused) as refused:
            site.activate(candidate(compliance=ASPECTS, capabilities=["erp"], exclusive_capabilities=["erp"]), {})

        assert [p["code"] for p in refused.value.details["problems"]] == [
            "CAPABILITY_CLASH", "COMPLIANCE_SIGNOFF_REQUIRED", "SIGNOFF_MISSING", "COMPLIANCE_SIGNOFF_REQUIRED",
            "SIGNOFF_MISSING",
        ]
        assert recorded(site) == []

    def test_refuses_what_is_already_active(self) -> None:
        with pytest.raises(ExtensionAlreadyActive):
            given(created(), activated("sap")).activate(candidate(), {})

    def test_a_dependency_disabled_everywhere_refuses_the_dependent(self) -> None:
        site = given(created(), activated("base"))

        with pytest.raises(ActivationRefused) as refused:
            site.activate(candidate(dependencies={"base": ""}), {}, disabled={"base"})

        assert refused.value.details["problems"][0]["code"] == "DEPENDENCY_INACTIVE"


class TestReconfigure:
    def test_records_old_and_new_hash_then_invalidates_signoffs_of_the_old(self) -> None:
        site = given(created(), signed("esig"), activated("sap", compliance=ASPECTS), signed("audit", "sha256:h9", "u2"))

        assert site.reconfigure("sap", {"a": 2}, "sha256:h2", ["a"], "new endpoint") is True

        assert recorded(site) == [
            ("ExtensionReconfigured", dict(site_id=SITE, plugin_id="sap", old_hash="sha256:h1", new_hash="sha256:h2",
                                           changed_keys=["a"], configuration={"a": 2}, reason="new endpoint")),
            ("SignoffInvalidated", dict(site_id=SITE, plugin_id="sap", signoff_id="s-esig-sha256:h1", aspect="esig",
                                        configuration_hash="sha256:h1",
                                        reason="the configuration it approved was replaced")),
        ]
        assert [s.aspect for s in site.signoffs_of("sap")] == ["audit"]
        assert site.extensions["sap"].configuration_hash == "sha256:h2"

    def test_the_same_hash_records_nothing(self) -> None:
        site = given(created(), activated("sap"))

        assert site.reconfigure("sap", {"a": 1}, "sha256:h1", [], None) is False
        assert recorded(site) == []

    def test_refuses_an_extension_not_active(self) -> None:
        with pytest.raises(ExtensionNotActive):
            given(created()).reconfigure("sap", {}, "sha256:h2", [], None)


class TestDeactivate:
    def test_records_deactivation(self) -> None:
        site = given(created(), activated("sap"))

        site.deactivate("sap", "not needed")

        assert recorded(site) == [("ExtensionDeactivated", dict(
            site_id=SITE, plugin_id="sap", version="1.0", configuration_hash="sha256:h1", reason="not needed",
            forced=False, dependents=[]))]
        assert site.extensions == {}

    def test_refuses_while_active_dependents_exist_listing_them(self) -> None:
        site = given(created(), activated("sap"), activated("procurement", dependencies={"sap": ""}),
                     activated("inventory", dependencies={"sap": ">=1"}))

        with pytest.raises(HasActiveDependents) as refused:
            site.deactivate("sap", None)

        assert refused.value.details["dependents"] == ["inventory", "procurement"]

    def test_forced_with_a_reason_records_the_dependents_left(self) -> None:
        site = given(created(), activated("sap"), activated("procurement", dependencies={"sap": ""}))

        assert site.deactivate("sap", "ERP contract ended", forced=True) == ["procurement"]
        assert recorded(site)[0][1]["forced"] is True

    def test_forced_without_a_reason_is_refused(self) -> None:
        site = given(created(), activated("sap"), activated("procurement", dependencies={"sap": ""}))

        with pytest.raises(ReasonRequired):
            site.deactivate("sap", " ", forced=True)


class TestRecordSignoff:
    def test_records_the_signature_with_role_and_meaning_from_the_manifest(self) -> None:
        site = given(created())

        signoff = site.record_signoff("sap", compliance(), "esig", "u1", "Ann Signer", "checked", "sha256:h1", NOW)

        assert recorded(site) == [("SignoffRecorded", dict(site_id=SITE, **signoff.to_dict()))]
        assert signoff.role == "quality-focal" and signoff.meaning == "Approved for production"

    def test_refuses_an_undeclared_aspect(self) -> None:
        with pytest.raises(AspectUnknown):
            given(created()).record_signoff("sap", compliance(), "nope", "u1", "Ann", "", "sha256:h1", NOW)

    def test_refuses_a_hash_other_than_the_active_configuration(self) -> None:
        site = given(created(), activated("sap", compliance=ASPECTS))

        with pytest.raises(SignoffHashMismatch):
            site.record_signoff("sap", compliance(), "esig", "u1", "Ann", "", "sha256:old", NOW)

    def test_refuses_a_second_signoff_of_one_aspect_for_one_configuration(self) -> None:
        site = given(created(), signed("esig"))

        with pytest.raises(AlreadySigned):
            site.record_signoff("sap", compliance(), "esig", "u2", "Bob", "", "sha256:h1", NOW)

    def test_one_person_cannot_sign_two_aspects_needing_different_signers(self) -> None:
        site = given(created(), signed("esig", signer="u1"))

        with pytest.raises(SameSignerRefused):
            site.record_signoff("sap", compliance(), "audit", "u1", "Ann", "", "sha256:h1", NOW)

    def test_another_person_may_sign_the_other_aspect(self) -> None:
        site = given(created(), signed("esig", signer="u1"))

        site.record_signoff("sap", compliance(), "audit", "u2", "Bob", "", "sha256:h1", NOW)

        assert {s.aspect for s in site.signoffs_of("sap", "sha256:h1")} == {"esig", "audit"}
