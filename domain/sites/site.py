"""The Site aggregate: one stream per site, from creation to retirement, with the extensions active
there and the signoffs given for them. Every event carries `site_id` (and is saved with the site's id,
so JetStream subjects, SSE filters, the event log and site-scoped grants apply to it)."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate, event

from domain.identity.access import check_site_id
from domain.identity.errors import InvalidSiteId
from domain.limits import MAX_TEXT
from domain.plugins.site_rules import Compliance
from domain.sites.errors import (
    ActivationRefused,
    AlreadySigned,
    ExtensionAlreadyActive,
    ExtensionNotActive,
    HasActiveDependents,
    ReasonRequired,
    SignoffHashMismatch,
    SiteHasActiveExtensions,
    SiteInvalid,
    SiteRetired,
)
from domain.sites.extensions import ActiveExtension, ExtensionRules
from domain.sites.policies import Candidate, Problem, check_activation, dependents_at_site, errors
from domain.sites.signoff import Signoff, check_aspect, check_distinct_signers

STREAM_TYPE = "site"
MAX_TIMEZONE = 64
MAX_METADATA = 32  # entries
MAX_METADATA_VALUE = 500
METADATA_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def site_uuid(site_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:site:{site_id}")


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or CONTROL.search(name):
        raise SiteInvalid("name must be 1 to 200 printable characters", field="name")
    return name


def check_timezone(timezone: str) -> None:
    try:
        if len(timezone) > MAX_TIMEZONE or not timezone or timezone != timezone.strip():
            raise ValueError(timezone)
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SiteInvalid(f"timezone {timezone[:MAX_TIMEZONE]!r} is not an IANA time zone such as Europe/Paris",
                          field="timezone") from None


def check_metadata(metadata: dict[str, Any]) -> None:
    if len(metadata) > MAX_METADATA:
        raise SiteInvalid(f"metadata holds at most {MAX_METADATA} entries", field="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not METADATA_KEY.fullmatch(key):
            raise SiteInvalid("metadata keys are 1 to 64 letters, digits, '.', '_' or '-'", field="metadata")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE or CONTROL.search(value):
            raise SiteInvalid(f"metadata.{key} must be text of at most {MAX_METADATA_VALUE} printable characters",
                              field=f"metadata.{key}")


class Site(Aggregate):
    """A place where extensions run. `extensions`: what is active; `signoffs`: valid signoffs per plugin
    (for any configuration hash: a signoff may approve a configuration before it is activated)."""

    @staticmethod
    def create_id(site_id: str) -> UUID:
        return site_uuid(site_id)

    @event("Created")
    def __init__(self, site_id: str, name: str, timezone: str, metadata: dict[str, str]) -> None:
        self.site_id = site_id
        self.name = name
        self.timezone = timezone
        self.metadata = dict(metadata)
        self.retired = False
        self.extensions: dict[str, ActiveExtension] = {}
        self.signoffs: dict[str, list[Signoff]] = {}

    @classmethod
    def create(cls, site_id: str, name: str, timezone: str = "UTC", metadata: dict[str, Any] | None = None) -> "Site":
        try:
            check_site_id(site_id)
        except InvalidSiteId as exc:
            raise SiteInvalid(exc.message, field="site_id") from None
        check_timezone(timezone)
        check_metadata(metadata or {})
        return cls(site_id=site_id, name=check_name(name), timezone=timezone, metadata=dict(metadata or {}))

    # -- checks -----------------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.retired:
            raise SiteRetired(f"site {self.site_id} is retired", site_id=self.site_id)

    def active(self, plugin_id: str) -> ActiveExtension:
        extension = self.extensions.get(plugin_id)
        if extension is None:
            raise ExtensionNotActive(f"{plugin_id} is not active at site {self.site_id}", site_id=self.site_id,
                                     plugin_id=plugin_id)
        return extension

    def signoffs_of(self, plugin_id: str, configuration_hash: str | None = None) -> list[Signoff]:
        """Valid signoffs of an extension (bound to `configuration_hash` when one is named)."""
        given = self.signoffs.get(plugin_id, [])
        return [s for s in given if configuration_hash is None or s.configuration_hash == configuration_hash]

    def validate(self, candidate: Candidate, disabled: Collection[str] = ()) -> list[Problem]:
        """Every problem with activating `candidate` here (the activation policy, nothing recorded)."""
        signoffs = self.signoffs_of(candidate.plugin_id, candidate.configuration_hash)
        return check_activation(candidate, self.extensions, signoffs, disabled)

    # -- the site itself --------------------------------------------------------------------------

    def rename(self, name: str) -> bool:
        self.check_open()
        name = check_name(name)
        if name == self.name:
            return False
        self._renamed(site_id=self.site_id, old_name=self.name, name=name)
        return True

    @event("Renamed")
    def _renamed(self, site_id: str, old_name: str, name: str) -> None:
        self.name = name

    def retire(self, reason: str | None) -> bool:
        if self.retired:
            return False
        if self.extensions:
            active = sorted(self.extensions)
            raise SiteHasActiveExtensions(
                f"site {self.site_id} still runs {', '.join(active)}: deactivate them first", active=active
            )
        self._retired(site_id=self.site_id, reason=reason or "")
        return True

    @event("Retired")
    def _retired(self, site_id: str, reason: str) -> None:
        self.retired = True

    # -- extensions -------------------------------------------------------------------------------

    def activate(self, candidate: Candidate, configuration: dict[str, Any], disabled: Collection[str] = (),
                 reason: str | None = None) -> list[Problem]:
        """Record ExtensionActivated when the activation policy finds no error (else ActivationRefused
        listing every problem); answers the warnings and recommendations. `configuration` is sealed."""
        self.check_open()
        if candidate.plugin_id in self.extensions:
            current = self.extensions[candidate.plugin_id]
            raise ExtensionAlreadyActive(
                f"{candidate.plugin_id} {current.version} is already active at site {self.site_id}; reconfigure it"
                " or deactivate it first", plugin_id=candidate.plugin_id, version=current.version,
            )
        problems = self.validate(candidate, disabled)
        refused = errors(problems)
        if refused:
            raise ActivationRefused(
                f"{candidate.plugin_id} cannot be activated at site {self.site_id}: {refused[0].message}"
                + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""),
                problems=[p.to_dict() for p in problems], configuration_hash=candidate.configuration_hash,
            )
        covering = self.signoffs_of(candidate.plugin_id, candidate.configuration_hash)
        self._extension_activated(
            site_id=self.site_id, plugin_id=candidate.plugin_id, version=candidate.version, configuration=configuration,
            configuration_hash=candidate.configuration_hash, rules=candidate.rules.to_dict(),
            signoffs=[s.signoff_id for s in covering], reason=reason or "",
        )
        return problems

    @event("ExtensionActivated")
    def _extension_activated(self, site_id: str, plugin_id: str, version: str, configuration: dict,
                             configuration_hash: str, rules: dict, signoffs: list[str], reason: str) -> None:
        self.extensions[plugin_id] = ActiveExtension(
            plugin_id, version, configuration, configuration_hash, ExtensionRules.from_dict(rules)
        )

    def reconfigure(self, plugin_id: str, configuration: dict[str, Any], configuration_hash: str,
                    changed_keys: list[str], reason: str | None = None) -> bool:
        """Record ExtensionReconfigured, then SignoffInvalidated for each signoff bound to the old hash;
        False (nothing recorded) when the hash is unchanged."""
        self.check_open()
        current = self.active(plugin_id)
        if configuration_hash == current.configuration_hash:
            return False
        self._extension_reconfigured(
            site_id=self.site_id, plugin_id=plugin_id, old_hash=current.configuration_hash, new_hash=configuration_hash,
            changed_keys=changed_keys, configuration=configuration, reason=reason or "",
        )
        for signoff in self.signoffs_of(plugin_id, current.configuration_hash):
            self._signoff_invalidated(
                site_id=self.site_id, plugin_id=plugin_id, signoff_id=signoff.signoff_id, aspect=signoff.aspect,
                configuration_hash=signoff.configuration_hash, reason="the configuration it approved was replaced",
            )
        return True

    @event("ExtensionReconfigured")
    def _extension_reconfigured(self, site_id: str, plugin_id: str, old_hash: str, new_hash: str,
                                changed_keys: list[str], configuration: dict, reason: str) -> None:
        current = self.extensions[plugin_id]
        self.extensions[plugin_id] = ActiveExtension(plugin_id, current.version, configuration, new_hash, current.rules)

    def dependents(self, plugin_id: str) -> list[str]:
        return dependents_at_site(plugin_id, self.extensions)

    def deactivate(self, plugin_id: str, reason: str | None, forced: bool = False) -> list[str]:
        """Record ExtensionDeactivated; refused while active extensions depend on it unless `forced`
        (with a reason). Answers the dependents left without it."""
        self.check_open()
        current = self.active(plugin_id)
        dependents = self.dependents(plugin_id)
        if dependents and not forced:
            raise HasActiveDependents(
                f"Cannot deactivate {plugin_id}: other extensions depend on it ({', '.join(dependents)})",
                dependents=dependents, plugin_id=plugin_id,
            )
        if forced and not (reason or "").strip():
            raise ReasonRequired("a forced deactivation needs a reason", field="reason")
        self._extension_deactivated(
            site_id=self.site_id, plugin_id=plugin_id, version=current.version,
            configuration_hash=current.configuration_hash, reason=reason or "", forced=forced, dependents=dependents,
        )
        return dependents

    @event("ExtensionDeactivated")
    def _extension_deactivated(self, site_id: str, plugin_id: str, version: str, configuration_hash: str,
                               reason: str, forced: bool, dependents: list[str]) -> None:
        del self.extensions[plugin_id]

    # -- signoffs ---------------------------------------------------------------------------------

    def compliance_of(self, plugin_id: str) -> Compliance | None:
        """The compliance aspects of the version active here (None when the extension is not active)."""
        extension = self.extensions.get(plugin_id)
        return extension.rules.compliance if extension is not None else None

    def record_signoff(self, plugin_id: str, compliance: Compliance, aspect: str, signer_id: str, signer_name: str,
                       notes: str, configuration_hash: str, signed_at: str) -> Signoff:
        """Record SignoffRecorded. The caller checked who signs (re-authenticated, holds the aspect's
        role here); `compliance` is that of the active version, or of the version to be activated."""
        self.check_open()
        check_aspect(compliance, plugin_id, aspect)
        if len(notes) > MAX_TEXT:
            raise SiteInvalid(f"notes hold at most {MAX_TEXT} characters", field="notes")
        current = self.extensions.get(plugin_id)
        if current is not None and configuration_hash != current.configuration_hash:
            raise SignoffHashMismatch(
                f"configuration_hash: {plugin_id} runs configuration {current.configuration_hash} at site {self.site_id},"
                f" not {configuration_hash}", field="configuration_hash", current=current.configuration_hash,
            )
        given = self.signoffs_of(plugin_id, configuration_hash)
        if any(s.aspect == aspect for s in given):
            raise AlreadySigned(f"aspect {aspect} of {plugin_id} is already signed for configuration {configuration_hash}",
                                aspect=aspect)
        check_distinct_signers(compliance, aspect, signer_id, given)
        declared = compliance.aspect(aspect)
        signoff = Signoff(
            signoff_id=str(uuid4()), plugin_id=plugin_id, aspect=aspect, signer_id=signer_id, signer_name=signer_name,
            role=declared.role, meaning=declared.meaning, notes=notes, configuration_hash=configuration_hash,
            signed_at=signed_at,
        )
        self._signoff_recorded(site_id=self.site_id, **signoff.to_dict())
        return signoff

    @event("SignoffRecorded")
    def _signoff_recorded(self, site_id: str, signoff_id: str, plugin_id: str, aspect: str, signer_id: str,
                          signer_name: str, role: str, meaning: str, notes: str, configuration_hash: str,
                          signed_at: str) -> None:
        record = Signoff(signoff_id, plugin_id, aspect, signer_id, signer_name, role, meaning, notes,
                         configuration_hash, signed_at)
        self.signoffs.setdefault(plugin_id, []).append(record)

    @event("SignoffInvalidated")
    def _signoff_invalidated(self, site_id: str, plugin_id: str, signoff_id: str, aspect: str,
                             configuration_hash: str, reason: str) -> None:
        self.signoffs[plugin_id] = [s for s in self.signoffs.get(plugin_id, []) if s.signoff_id != signoff_id]
