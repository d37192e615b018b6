"""How a site's active set stands, decided by the domain's own policies (domain/sites/policies.py) over
the rows of the `sites` read model: pure, no database.

Each active extension is checked as if it were activated again beside the others, at the version it
runs, with the kill switches as they are now (a plugin disabled everywhere is invalid itself and counts
as inactive for its dependents). Missing signoffs are not errors here: they are counted apart
(`unsigned_compliance`), since a reconfiguration leaves an extension running while its signoffs are
pending again. Each extension falls in exactly one of: conflicting (a conflict or an exclusive-capability
clash), invalid (any other error), valid."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from domain.sites.extensions import ActiveExtension, ExtensionRules
from domain.sites.policies import Candidate, Problem, check_activation, errors


def active_set(extensions: Iterable[Mapping[str, Any]]) -> dict[str, ActiveExtension]:
    """The site's extensions as the domain knows them, from `site_extensions` rows."""
    return {
        row["plugin_id"]: ActiveExtension(
            row["plugin_id"], row["version"], {}, row["configuration_hash"], ExtensionRules.from_dict(row["rules"])
        )
        for row in extensions
    }


def pending(rules: ExtensionRules, valid_signoffs: Iterable[Mapping[str, Any]], configuration_hash: str) -> list[dict[str, Any]]:
    """The compliance aspects without a valid signoff bound to `configuration_hash`, in manifest order."""
    signed = {s["aspect"] for s in valid_signoffs if s["configuration_hash"] == configuration_hash}
    return [
        {"aspect": a.name, "required_role": a.role, "meaning": a.meaning}
        for a in rules.compliance.aspects
        if a.name not in signed
    ]


def problems_of(extension: ActiveExtension, active: Mapping[str, ActiveExtension], disabled: Collection[str]) -> list[Problem]:
    """What the activation policy says of `extension` now (signoffs left out: counted apart)."""
    candidate = Candidate(
        plugin_id=extension.plugin_id, version=extension.version, installed_version=extension.version,
        enabled=extension.plugin_id not in disabled, rules=extension.rules,
        configuration_hash=extension.configuration_hash,
    )
    return check_activation(candidate, active, (), disabled, require_signoffs=False)


def site_status(
    site_id: str,
    extensions: Iterable[Mapping[str, Any]],
    valid_signoffs: Iterable[Mapping[str, Any]],
    disabled: Collection[str],
) -> dict[str, Any]:
    """Counts of valid / invalid / conflicting extensions, those with compliance aspects unsigned, and
    what requires attention (each extension with its reasons and problems)."""
    active = active_set(extensions)
    by_plugin: dict[str, list[Mapping[str, Any]]] = {}
    for signoff in valid_signoffs:
        by_plugin.setdefault(signoff["plugin_id"], []).append(signoff)
    valid = invalid = conflicting = 0
    unsigned: list[dict[str, Any]] = []
    attention: list[dict[str, Any]] = []
    for plugin_id in sorted(active):
        extension = active[plugin_id]
        refused = errors(problems_of(extension, active, disabled))
        if any(p.kind == "conflict" for p in refused):
            conflicting += 1
        elif refused:
            invalid += 1
        else:
            valid += 1
        waiting = pending(extension.rules, by_plugin.get(plugin_id, []), extension.configuration_hash)
        if waiting:
            unsigned.append({"plugin_id": plugin_id, "configuration_hash": extension.configuration_hash,
                             "pending": waiting})
        if refused or waiting:
            reasons = [p.message for p in refused] + [
                f"aspect {w['aspect']} awaits a signoff by a {w['required_role']}" for w in waiting
            ]
            attention.append({"plugin_id": plugin_id, "reasons": reasons, "problems": [p.to_dict() for p in refused],
                              "pending_aspects": [w["aspect"] for w in waiting]})
    return {
        "site_id": site_id,
        "active": len(active),
        "valid": valid,
        "invalid": invalid,
        "conflicting": conflicting,
        "unsigned_compliance": len(unsigned),
        "unsigned": unsigned,
        "requires_attention": attention,
    }
