"""Pure policies of a site: can this extension be activated here, can these coexist, who depends on whom.

Each policy returns EVERY problem it finds (never the first only), each with a code, the field it is
about, a message and a severity: `error` (activation is refused), `warning` (activation proceeds; the
caller should know) or `recommendation`. `POST .../validate` shows them; the activation command runs
the same policy inside the Site aggregate and refuses with all the errors listed.

Problem codes (kind):
- CONFIGURATION_INVALID (schema): the configuration breaks the plugin version's JSON Schema.
- PLUGIN_NOT_INSTALLED, VERSION_NOT_INSTALLED, PLUGIN_DISABLED (availability): the plugin is not installed,
  not at that version, or disabled everywhere by its kill switch.
- DEPENDENCY_MISSING, DEPENDENCY_INACTIVE, DEPENDENCY_VERSION_MISMATCH (dependency): a dependency is not
  active at the site, is active but disabled everywhere (the kill switch makes it count as inactive), or is
  active in a version outside the range.
- CONFLICT (conflict): one of the two declares the other (in that version range) as a conflict.
- CAPABILITY_CLASH (conflict): two active providers of a capability that one of them declares exclusive.
- COMPLIANCE_SIGNOFF_REQUIRED (compliance, warning): an aspect that needs a signoff before activation.
- SIGNOFF_MISSING (signoff): an aspect without a valid signoff bound to this configuration hash.
- RECOMMENDED_EXTENSION (recommendation): a recommended extension is not active at the site.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from domain.sites.extensions import ActiveExtension, ExtensionRules
from domain.sites.signoff import Signoff, pending_aspects

Severity = Literal["error", "warning", "recommendation"]


@dataclass(frozen=True)
class Problem:
    code: str
    field: str
    message: str
    severity: Severity
    kind: str  # schema | availability | dependency | conflict | compliance | signoff | recommendation
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code, "field": self.field, "message": self.message, "severity": self.severity,
            "kind": self.kind, "details": dict(self.details),
        }


@dataclass(frozen=True)
class Candidate:
    """An extension proposed for a site: what the caller asks for and what the plugin's stream says."""

    plugin_id: str
    version: str  # the version asked for
    installed_version: str | None  # the plugin's current version; None when it is not installed
    enabled: bool  # False when the plugin's kill switch is on (disabled everywhere)
    rules: ExtensionRules
    configuration_hash: str = ""
    schema_errors: tuple[Mapping[str, str], ...] = ()  # {field, message} from the JSON Schema check


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def _in_range(version: str, spec: str) -> bool:
    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def availability(candidate: Candidate) -> list[Problem]:
    pid = candidate.plugin_id
    if candidate.installed_version is None:
        return [Problem("PLUGIN_NOT_INSTALLED", "plugin_id", f"plugin {pid} is not installed", "error", "availability")]
    found: list[Problem] = []
    if candidate.version != candidate.installed_version:
        found.append(Problem(
            "VERSION_NOT_INSTALLED", "version",
            f"{pid} is installed at version {candidate.installed_version}, not {candidate.version}", "error",
            "availability", {"requested": candidate.version, "installed": candidate.installed_version},
        ))
    if not candidate.enabled:
        found.append(Problem(
            "PLUGIN_DISABLED", "plugin_id", f"{pid} is disabled everywhere (kill switch): it cannot be activated",
            "error", "availability",
        ))
    return found


def schema_problems(candidate: Candidate) -> list[Problem]:
    return [
        Problem("CONFIGURATION_INVALID", v["field"], v["message"], "error", "schema") for v in candidate.schema_errors
    ]


def dependency_problems(candidate: Candidate, active: Mapping[str, ActiveExtension], disabled: Collection[str]) -> list[Problem]:
    found = []
    for dep_id, spec in sorted(candidate.rules.dependencies.items()):
        at = f"dependencies.{dep_id}"
        wanted = f"{dep_id}{spec}" if spec else dep_id
        dep = active.get(dep_id)
        details = {"dependency": dep_id, "required": spec}
        if dep is None:
            found.append(Problem("DEPENDENCY_MISSING", at, f"{candidate.plugin_id} needs {wanted} active at this site",
                                 "error", "dependency", details))
        elif dep_id in disabled:
            found.append(Problem("DEPENDENCY_INACTIVE", at, f"{candidate.plugin_id} needs {dep_id}, which is disabled"
                                 " everywhere (kill switch)", "error", "dependency", details))
        elif spec and not _in_range(dep.version, spec):
            found.append(Problem("DEPENDENCY_VERSION_MISMATCH", at, f"{candidate.plugin_id} needs {wanted}; this site"
                                 f" runs {dep_id} {dep.version}", "error", "dependency", {**details, "found": dep.version}))
    return found


def _conflict(declarer: str, declarer_rules: ExtensionRules, other: str, other_version: str) -> Problem | None:
    for declared in declarer_rules.conflicts:
        if declared.id == other and (not declared.versions or _in_range(other_version, declared.versions)):
            reason = declared.reason or f"{declarer} declares {other}{declared.versions} as a conflict"
            return Problem("CONFLICT", f"conflicts.{other}", reason, "error", "conflict", {
                "extension_id1": declarer, "extension_id2": other, "scope": "extension", "reason": reason,
            })
    return None


def conflict_problems(candidate: Candidate, active: Mapping[str, ActiveExtension]) -> list[Problem]:
    found = []
    for other in sorted(active.values(), key=lambda e: e.plugin_id):
        problem = _conflict(candidate.plugin_id, candidate.rules, other.plugin_id, other.version) or _conflict(
            other.plugin_id, other.rules, candidate.plugin_id, candidate.version
        )
        if problem is not None:
            found.append(Problem(problem.code, f"conflicts.{other.plugin_id}", problem.message, "error", "conflict",
                                 problem.details))
    return found


def capability_problems(candidate: Candidate, active: Mapping[str, ActiveExtension]) -> list[Problem]:
    found = []
    wanted = set(candidate.rules.capabilities)
    providers = sorted((e for e in active.values() if wanted.intersection(e.rules.capabilities)), key=lambda e: e.plugin_id)
    for cap in sorted(wanted):
        for other in providers:
            exclusive_by = [
                e for e, rules in ((candidate.plugin_id, candidate.rules), (other.plugin_id, other.rules))
                if cap in rules.exclusive_capabilities
            ]
            if cap in other.rules.capabilities and exclusive_by:
                found.append(Problem(
                    "CAPABILITY_CLASH", f"capabilities.{cap}",
                    f"{other.plugin_id} already provides {cap} at this site, and {exclusive_by[0]} declares it exclusive",
                    "error", "conflict",
                    {"extension_id1": candidate.plugin_id, "extension_id2": other.plugin_id, "scope": "capability",
                     "capability": cap},
                ))
    return found


def compliance_problems(candidate: Candidate, signoffs: Iterable[Signoff], require_signoffs: bool) -> list[Problem]:
    compliance = candidate.rules.compliance
    pending = set(pending_aspects(compliance, signoffs, candidate.configuration_hash))
    found = []
    for aspect in compliance.aspects:
        if aspect.name not in pending:
            continue
        details = {"aspect": aspect.name, "required_role": aspect.role, "meaning": aspect.meaning}
        found.append(Problem(
            "COMPLIANCE_SIGNOFF_REQUIRED", f"compliance.aspects.{aspect.name}",
            f"Compliance signoff required from {aspect.role} ({aspect.name})", "warning", "compliance", details,
        ))
        if require_signoffs:
            found.append(Problem(
                "SIGNOFF_MISSING", f"signoffs.{aspect.name}",
                f"aspect {aspect.name} has no signoff by a {aspect.role} for configuration {candidate.configuration_hash}",
                "error", "signoff", {**details, "configuration_hash": candidate.configuration_hash},
            ))
    return found


def recommendation_problems(candidate: Candidate, active: Mapping[str, ActiveExtension]) -> list[Problem]:
    found = []
    for other_id, spec in sorted(candidate.rules.recommends.items()):
        other = active.get(other_id)
        if other is None or (spec and not _in_range(other.version, spec)):
            found.append(Problem(
                "RECOMMENDED_EXTENSION", f"recommends.{other_id}",
                f"{candidate.plugin_id} recommends {other_id}{spec} beside it at this site", "recommendation",
                "recommendation", {"extension_id": other_id, "versions": spec},
            ))
    return found


def check_activation(
    candidate: Candidate,
    active: Mapping[str, ActiveExtension],
    signoffs: Iterable[Signoff] = (),
    disabled: Collection[str] = (),
    require_signoffs: bool = True,
) -> list[Problem]:
    """Every problem with activating `candidate` at a site where `active` runs (the candidate itself,
    if already active there, is left out: validating it checks a new configuration). `signoffs` are the
    site's valid signoffs of the candidate; `disabled` the plugin ids disabled everywhere."""
    others = {pid: ext for pid, ext in active.items() if pid != candidate.plugin_id}
    available = availability(candidate)
    if any(p.code == "PLUGIN_NOT_INSTALLED" for p in available):
        return available
    return [
        *schema_problems(candidate),
        *available,
        *dependency_problems(candidate, others, disabled),
        *conflict_problems(candidate, others),
        *capability_problems(candidate, others),
        *compliance_problems(candidate, signoffs, require_signoffs),
        *recommendation_problems(candidate, others),
    ]


def check_combination(
    candidates: list[Candidate], active: Mapping[str, ActiveExtension], disabled: Collection[str] = ()
) -> list[Problem]:
    """Every problem with running `candidates` together at a site where `active` already runs: each
    checked beside the site's extensions and the other candidates (fields prefixed `extensions.<i>.`).
    A clash between two candidates is listed once. Missing signoffs are not checked (coexistence only)."""
    as_active = {
        c.plugin_id: ActiveExtension(c.plugin_id, c.version, {}, c.configuration_hash, c.rules) for c in candidates
    }
    found: list[Problem] = []
    seen: set[tuple[str, frozenset[str], str]] = set()
    for index, candidate in enumerate(candidates):
        view = {**active, **as_active}
        for problem in check_activation(candidate, view, (), disabled, require_signoffs=False):
            if problem.kind == "conflict":
                pair = frozenset({problem.details["extension_id1"], problem.details["extension_id2"]})
                key = (problem.code, pair, str(problem.details.get("capability", "")))
                if key in seen:
                    continue
                seen.add(key)
            found.append(Problem(problem.code, f"extensions.{index}.{problem.field}", problem.message,
                                 problem.severity, problem.kind, {**problem.details, "extension_id": candidate.plugin_id}))
    return found


def dependents_at_site(plugin_id: str, active: Mapping[str, ActiveExtension]) -> list[str]:
    """Ids of the site's active extensions that depend on `plugin_id`."""
    return sorted(pid for pid, ext in active.items() if pid != plugin_id and plugin_id in ext.rules.dependencies)
