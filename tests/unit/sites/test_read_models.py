"""The `sites` read model without a database: events recorded by the Site aggregate are folded into rows
(sites, active extensions with masked configurations, signoffs, kill switches, audit trail), in batches
of any size with the same result; and the site status the domain's policies give over those rows."""

from __future__ import annotations

from typing import Any

import pytest

from domain.plugins.configuration import SEALED
from domain.plugins.manifest import parse_manifest
from domain.sites.extensions import ExtensionRules
from domain.sites.policies import Candidate
from domain.sites.site import Site
from projections.sites.projection import SitesProjection
from projections.sites.status import site_status
from tests.batch_kit import Log, fold_in_batches, fold_whole, tables

SITE = "plant-1"
H1, H2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
CIPHERTEXT = "gAAAAA-the-sealed-token"
ASPECTS = {"aspects": [{"name": "esig", "role": "quality-focal", "meaning": "Approved for production"}]}
NOW = "2024-11-01T10:00:00+00:00"


def rules(plugin_id: str, **manifest: Any) -> ExtensionRules:
    return ExtensionRules.of(parse_manifest({"id": plugin_id, "name": "X", "version": "1.0", **manifest}))


def candidate(plugin_id: str, configuration_hash: str = H1, **manifest: Any) -> Candidate:
    return Candidate(plugin_id, "1.0", "1.0", True, rules(plugin_id, **manifest), configuration_hash)


def site_log() -> Log:
    log = Log()
    log.record("site", SITE, Site.create(SITE, "Plant 1", "Europe/Paris", {"region": "eu"}), actor="admin")
    return log


def act(log: Log, action: Any, actor: str = "admin") -> None:
    site = log.aggregate("site", SITE)
    action(site)
    log.record("site", SITE, actor=actor)


def lifecycle() -> Log:
    """A site through most of its life: activations, a signoff, a reconfiguration, a forced deactivation."""
    log = site_log()
    log.install("base", enabled=True)
    log.install("erp", enabled=True)
    act(log, lambda s: s.activate(candidate("base"), {"level": 1}))
    act(log, lambda s: s.record_signoff("erp", rules("erp", compliance=ASPECTS).compliance, "esig", "u-ann", "Ann",
                                        "checked", H1, NOW), actor="u-ann")
    act(log, lambda s: s.activate(candidate("erp", dependencies={"base": ">=1.0"}, compliance=ASPECTS,
                                            capabilities=["erp-integration"]),
                                  {"token": {SEALED: CIPHERTEXT}, "level": 2}))
    act(log, lambda s: s.reconfigure("erp", {"token": {SEALED: CIPHERTEXT + "2"}, "level": 3}, H2, ["level"], "tuning"))
    act(log, lambda s: s.deactivate("base", "gone", forced=True))
    act(log, lambda s: s.rename("Plant One"))
    return log


class TestSitesFold:
    def test_a_created_site_is_active_and_its_creation_is_audited(self) -> None:
        state = tables(fold_whole(SitesProjection(), site_log().events))

        (site,) = state["sites"]
        assert (site["site_id"], site["name"], site["timezone"], site["metadata"]) == (SITE, "Plant 1", "Europe/Paris", {"region": "eu"})
        assert (site["status"], site["created_by"], site["stream_version"]) == ("active", "admin", 1)
        assert [(a["kind"], a["actor"], a["plugin_id"]) for a in state["audit_trail"]] == [("site_created", "admin", None)]

    def test_an_activation_keeps_the_configuration_masked_never_the_ciphertext(self) -> None:
        state = tables(fold_whole(SitesProjection(), lifecycle().events))

        (erp,) = state["site_extensions"]
        assert erp["configuration"] == {"token": "********", "level": 3}
        assert (erp["configuration_hash"], erp["capabilities"], erp["activated_by"]) == (H2, ["erp-integration"], "admin")
        assert erp["rules"]["dependencies"] == {"base": ">=1.0"}
        assert CIPHERTEXT not in repr(state)

    def test_a_reconfiguration_invalidates_the_signoffs_of_the_old_hash(self) -> None:
        state = tables(fold_whole(SitesProjection(), lifecycle().events))

        (signoff,) = state["signoffs"]
        assert (signoff["aspect"], signoff["signer_id"], signoff["configuration_hash"]) == ("esig", "u-ann", H1)
        assert signoff["invalidated"] and signoff["invalidation_reason"] == "the configuration it approved was replaced"

    def test_the_audit_trail_lists_every_event_in_stream_order_with_hashes_and_actors(self) -> None:
        state = tables(fold_whole(SitesProjection(), lifecycle().events))

        trail = [(a["seq"], a["kind"], a["plugin_id"], a["old_hash"], a["new_hash"]) for a in state["audit_trail"]]
        assert trail == [
            (1, "site_created", None, None, None),
            (2, "activated", "base", None, H1),
            (3, "signoff_recorded", "erp", None, H1),
            (4, "activated", "erp", None, H1),
            (5, "reconfigured", "erp", H1, H2),
            (6, "signoff_invalidated", "erp", H1, None),
            (7, "deactivated", "base", H1, None),
            (8, "site_renamed", None, None, None),
        ]
        by_kind = {a["kind"]: a for a in state["audit_trail"]}
        assert by_kind["signoff_recorded"]["actor"] == "u-ann"
        assert by_kind["reconfigured"]["reason"] == "tuning" and by_kind["reconfigured"]["details"] == {"changed_keys": ["level"]}
        deactivated = by_kind["deactivated"]
        assert (deactivated["forced"], deactivated["dependents"], deactivated["reason"]) == (True, ["erp"], "gone")

    def test_a_retired_site_keeps_its_row(self) -> None:
        log = site_log()
        act(log, lambda s: s.retire("closed"))

        (site,) = tables(fold_whole(SitesProjection(), log.events))["sites"]

        assert (site["status"], site["retire_reason"]) == ("retired", "closed")

    def test_the_kill_switch_follows_the_plugins_stream(self) -> None:
        log = Log()
        log.install("erp", enabled=True)
        log.act("plugin", "erp", lambda p: p.disable("incident"))
        log.install("mes")  # installed, not enabled: its kill switch is off
        log.install("old", enabled=True)
        log.act("plugin", "old", lambda p: p.uninstall("bye", forced=True, cleanup_data=False))

        switches = tables(fold_whole(SitesProjection(), log.events))["plugin_switches"]

        assert [(s["plugin_id"], s["installed"], s["disabled"]) for s in switches] == [
            ("erp", True, True), ("mes", True, False), ("old", False, False),
        ]

    @pytest.mark.parametrize("size", [1, 2, 3, 5])
    @pytest.mark.parametrize("cache", [False, True])
    def test_folding_in_batches_gives_the_rows_of_one_fold(self, size: int, cache: bool) -> None:
        events = lifecycle().events
        whole = tables(fold_whole(SitesProjection(), events))

        assert tables(fold_in_batches(SitesProjection(), events, size, cache)) == whole

    def test_plugin_events_other_than_the_switches_read_nothing_and_change_nothing(self) -> None:
        log = Log()
        log.install("erp")
        log.act("plugin", "erp", lambda p: p.restart(None))
        projection = SitesProjection()

        assert projection.needs(log.events[1:]) == {"sites": set(), "site_extensions": set(), "signoffs": set()}
        assert set(tables(fold_whole(projection, log.events))) == {"plugin_switches"}


def row(plugin_id: str, configuration_hash: str = H1, **manifest: Any) -> dict[str, Any]:
    return {"plugin_id": plugin_id, "version": "1.0", "configuration_hash": configuration_hash,
            "rules": rules(plugin_id, **manifest).to_dict()}


class TestSiteStatus:
    def test_a_clean_site_is_all_valid(self) -> None:
        status = site_status(SITE, [row("base"), row("erp", dependencies={"base": ">=1.0"})], [], set())

        assert (status["active"], status["valid"], status["invalid"], status["conflicting"]) == (2, 2, 0, 0)
        assert status["requires_attention"] == [] and status["unsigned_compliance"] == 0

    def test_a_disabled_dependency_makes_its_dependent_invalid(self) -> None:
        status = site_status(SITE, [row("base"), row("erp", dependencies={"base": ">=1.0"})], [], {"base"})

        assert (status["valid"], status["invalid"], status["conflicting"]) == (0, 2, 0)
        codes = {a["plugin_id"]: [p["code"] for p in a["problems"]] for a in status["requires_attention"]}
        assert codes == {"base": ["PLUGIN_DISABLED"], "erp": ["DEPENDENCY_INACTIVE"]}

    def test_two_providers_of_an_exclusive_capability_are_conflicting(self) -> None:
        sap = row("sap", capabilities=["erp"], exclusive_capabilities=["erp"])
        oracle = row("oracle", capabilities=["erp"])

        status = site_status(SITE, [sap, oracle], [], set())

        assert (status["valid"], status["invalid"], status["conflicting"]) == (0, 0, 2)

    def test_pending_aspects_count_as_unsigned_compliance_until_signed_for_the_current_hash(self) -> None:
        extensions = [row("erp", H2, compliance=ASPECTS)]
        stale = [{"plugin_id": "erp", "aspect": "esig", "configuration_hash": H1}]
        fresh = [{"plugin_id": "erp", "aspect": "esig", "configuration_hash": H2}]

        unsigned = site_status(SITE, extensions, stale, set())
        signed = site_status(SITE, extensions, fresh, set())

        assert unsigned["valid"] == 1 and unsigned["unsigned_compliance"] == 1
        assert unsigned["unsigned"][0]["pending"] == [
            {"aspect": "esig", "required_role": "quality-focal", "meaning": "Approved for production"}
        ]
        assert [a["pending_aspects"] for a in unsigned["requires_attention"]] == [["esig"]]
        assert signed["unsigned_compliance"] == 0 and signed["requires_attention"] == []
