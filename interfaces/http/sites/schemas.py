"""Request and response bodies of the sites routes (msgspec Structs, every string and list bounded)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from application.sites.batch import MAX_SITES
from application.sites.validation import MAX_COMBINATION
from domain.limits import Id, Name, Text, VersionText
from domain.sites.site import MAX_METADATA, MAX_METADATA_VALUE, MAX_TIMEZONE

MAX_PASSWORD = 1024  # as at sign-in
MAX_ACCESS_TOKEN = 4096  # a JWT of ours is a few hundred characters; an external issuer's may be longer
MAX_HASH = 71  # "sha256:" and 64 hex digits

Timezone = Annotated[str, Meta(max_length=MAX_TIMEZONE)]
Metadata = Annotated[dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=MAX_METADATA_VALUE)]],
                     Meta(max_length=MAX_METADATA)]
ConfigurationHash = Annotated[str, Meta(max_length=MAX_HASH)]
SiteIds = Annotated[list[Id], Meta(min_length=1, max_length=MAX_SITES)]


# -- requests -----------------------------------------------------------------------------------------


class SiteCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /sites`."""

    site_id: Id
    name: Name
    timezone: Timezone = "UTC"
    metadata: Metadata = {}


class ExtensionProposal(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /site/{site_id}/extensions/{id}/validate`: what activation would be asked."""

    version: VersionText | None = None
    configuration: dict[str, Any] = {}


class ExtensionActivate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /site/{site_id}/extensions/{id}/activate` (the version defaults to the installed one)."""

    version: VersionText | None = None
    configuration: dict[str, Any] = {}
    reason: Text | None = None


class ExtensionReconfigure(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `PUT /site/{site_id}/extensions/{id}/configuration`; secrets sent back masked keep their value."""

    configuration: dict[str, Any]
    reason: Text | None = None


class ExtensionDeactivate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `DELETE /site/{site_id}/extensions/{id}` (optional): `force` goes past active dependents
    (needs `extensions:force` at the site and a reason)."""

    reason: Text | None = None
    force: bool = False


class ProposedExtension(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    version: VersionText | None = None


class ExtensionCombination(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /site/{site_id}/extensions/validate-combination`."""

    extensions: Annotated[list[ProposedExtension], Meta(min_length=1, max_length=MAX_COMBINATION)]


class SignoffCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /site/{site_id}/extensions/{id}/signoffs`: an electronic signature. The signer
    re-authenticates with `password` or an `access_token` issued less than five minutes ago; neither is
    ever stored, logged or answered. `configuration_hash` defaults to the active configuration's."""

    aspect: Id
    configuration_hash: ConfigurationHash | None = None
    notes: Text = ""
    password: Annotated[str, Meta(max_length=MAX_PASSWORD)] | None = None
    access_token: Annotated[str, Meta(max_length=MAX_ACCESS_TOKEN)] | None = None


class BatchActivate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /sites/extensions/{id}/activate`: one activation per site."""

    site_ids: SiteIds
    version: VersionText | None = None
    configuration: dict[str, Any] = {}
    reason: Text | None = None


class BatchDeactivate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /sites/extensions/{id}/deactivate`: one deactivation per site."""

    site_ids: SiteIds
    reason: Text | None = None
    force: bool = False


# -- responses ----------------------------------------------------------------------------------------


class ProblemOut(msgspec.Struct):
    """One finding of the site policies: `severity` error (refuses activation), warning or recommendation."""

    code: str
    field: str
    message: str
    severity: str
    kind: str
    details: dict[str, Any] = {}


class ValidationOut(msgspec.Struct):
    """Every problem at once. `configuration_hash` is what a signer approves (empty when the
    configuration broke the schema); `missing_signoffs` the aspects still to sign for it."""

    site_id: str
    plugin_id: str | None
    version: str | None
    valid: bool
    configuration_hash: str
    problems: list[ProblemOut]
    missing_signoffs: list[str]


class CombinationOut(msgspec.Struct):
    site_id: str
    valid: bool
    problems: list[ProblemOut]


class SiteResult(msgspec.Struct):
    """One site's outcome in a batch: its write, or its refusal (code, message, details)."""

    site_id: str
    ok: bool
    stream_version: int | None = None
    position: int | None = None
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = {}


class BatchOut(msgspec.Struct):
    plugin_id: str
    succeeded: int
    failed: int
    results: list[SiteResult]


class SiteOut(msgspec.Struct):
    site_id: str
    name: str
    timezone: str
    metadata: dict[str, str]
    status: str  # active | retired
    active_extensions: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int | None = None  # the site stream's version (If-Match of its writes)


class FeatureOut(msgspec.Struct):
    """An extension active at the site (configuration secrets masked)."""

    plugin_id: str
    version: str
    configuration: dict[str, Any]
    configuration_hash: str
    capabilities: list[str]
    activated_at: datetime | None
    activated_by: str | None
    is_fully_signed: bool
    pending_aspects: list[str]
    enabled: bool = True  # False while the plugin's kill switch is on (it then counts as inactive)
    dependencies: dict[str, str] = {}
    compliance_aspects: list[str] = []


class FeaturesOut(msgspec.Struct):
    site_id: str
    features: list[FeatureOut]
    count: int
    as_of: str | None = None  # with ?as_of=: the point replayed (a `position:N` the same answer can be asked at)


class ProviderOut(msgspec.Struct):
    plugin_id: str
    version: str
    exclusive: bool


class CapabilityOut(msgspec.Struct):
    site_id: str
    name: str
    enabled: bool
    providers: list[ProviderOut]


class AttentionOut(msgspec.Struct):
    plugin_id: str
    reasons: list[str]
    problems: list[ProblemOut] = []
    pending_aspects: list[str] = []


class StatusOut(msgspec.Struct):
    """Counts by the domain's policies over the active set; `unsigned_compliance` counts the extensions
    with aspects awaiting a signoff of their current configuration."""

    site_id: str
    active: int
    valid: int
    invalid: int
    conflicting: int
    unsigned_compliance: int
    requires_attention: list[AttentionOut]
    site_status: str = "active"
    last_changed_at: datetime | None = None


class SignoffOut(msgspec.Struct):
    """An electronic signature: who (printed name and id), in which role, meaning what, when (UTC), over
    which configuration; `invalidated` once the configuration it approved was replaced."""

    signoff_id: str
    aspect: str
    signer_id: str
    signer_name: str
    role: str
    meaning: str
    notes: str
    configuration_hash: str
    signed_at: datetime
    invalidated: bool
    approves_current: bool
    invalidated_at: datetime | None = None
    invalidation_reason: str | None = None


class PendingAspect(msgspec.Struct):
    aspect: str
    required_role: str
    meaning: str


class SignoffsOut(msgspec.Struct):
    """Signoffs of one extension: `given` (invalidated ones marked), `pending` aspects for the current hash."""

    site_id: str
    plugin_id: str
    active: bool
    version: str | None
    configuration_hash: str | None
    given: list[SignoffOut]
    pending: list[PendingAspect]
    is_fully_signed: bool


class PendingSignoff(msgspec.Struct):
    site_id: str
    plugin_id: str
    version: str
    aspect: str
    role: str
    meaning: str
    configuration_hash: str


class PendingOut(msgspec.Struct):
    """The calling user's pending signoffs, across the sites where they hold the aspects' roles."""

    items: list[PendingSignoff]
    total: int


class AuditEntry(msgspec.Struct):
    """One change at a site, as the event log recorded it (`kind`: site_created, site_renamed,
    site_retired, activated, reconfigured, deactivated, signoff_recorded, signoff_invalidated)."""

    id: str
    site_id: str
    position: int
    kind: str
    actor: str | None
    recorded_at: datetime
    plugin_id: str | None = None
    reason: str | None = None
    old_hash: str | None = None
    new_hash: str | None = None
    version: str | None = None
    forced: bool | None = None
    dependents: list[str] | None = None
    details: dict[str, Any] = {}


class ArchivedReportOut(msgspec.Struct):
    """A compliance report a task run kept (`reports.compliance`): the point it reflects, and its digest
    (the report's own sha256, printed in it; the document is at `.../reports/archive/{id}`)."""

    id: str
    site_id: str
    format: str
    as_of: str
    position: int
    sha256: str
    size: int
    task_id: str | None
    run_id: str | None
    created_at: datetime
