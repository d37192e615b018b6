"""Signoffs: electronic signatures (21 CFR Part 11 in spirit) approving one configuration of one
extension at one site. A signoff names the aspect, the signer (printed name and user id), the role they
signed in, the meaning of the signature, their notes and the UTC time, and is bound to the configuration
hash it approves: another configuration is not approved by it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from domain.identity.access import Grant
from domain.plugins.site_rules import Compliance
from domain.sites.errors import AspectUnknown, SameSignerRefused, SignerLacksRole


@dataclass(frozen=True)
class Signoff:
    signoff_id: str
    plugin_id: str
    aspect: str
    signer_id: str
    signer_name: str  # the printed name, as the user was registered when signing
    role: str
    meaning: str
    notes: str
    configuration_hash: str
    signed_at: str  # ISO 8601, UTC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Signoff":
        return cls(**data)


def holds_role_at(grants: Iterable[Grant], role: str, site_id: str) -> bool:
    """Does a user with `grants` hold `role` at `site_id` (granted there, or everywhere)?"""
    return any(g.role == role and g.site_id in (None, site_id) for g in grants)


def check_signer_role(grants: Iterable[Grant], role: str, site_id: str, aspect: str) -> None:
    if not holds_role_at(grants, role, site_id):
        raise SignerLacksRole(
            f"aspect {aspect} is signed by a holder of role {role} at site {site_id}; the signer does not hold it there",
            aspect=aspect,
            required_role=role,
            site_id=site_id,
        )


def check_aspect(compliance: Compliance, plugin_id: str, aspect: str) -> None:
    if compliance.aspect(aspect) is None:
        raise AspectUnknown(
            f"aspect: {plugin_id} declares no compliance aspect {aspect!r}",
            field="aspect",
            aspects=[a.name for a in compliance.aspects],
        )


def check_distinct_signers(compliance: Compliance, aspect: str, signer_id: str, given: Iterable[Signoff]) -> None:
    """One person cannot sign two aspects the manifest marks as needing different signers (for the same
    configuration: `given` are the valid signoffs bound to the hash being approved)."""
    for other in given:
        if other.signer_id == signer_id and compliance.must_differ(aspect, other.aspect):
            raise SameSignerRefused(
                f"aspects {other.aspect} and {aspect} must be signed by different people; you signed {other.aspect}",
                aspect=aspect,
                signed=other.aspect,
            )


def pending_aspects(compliance: Compliance, given: Iterable[Signoff], configuration_hash: str) -> list[str]:
    """The aspects without a valid signoff bound to `configuration_hash`, in manifest order."""
    signed = {s.aspect for s in given if s.configuration_hash == configuration_hash}
    return [a.name for a in compliance.aspects if a.name not in signed]
