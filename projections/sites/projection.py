"""Read model `sites`: the sites, the extensions active at each, the signoffs given for them, the kill
switch of every plugin (a disabled plugin counts as inactive for its dependents), and the audit trail of
every site event.

Written in sets (projections/batch.py): `apply` folds one event into the rows, pure; the batch's rows
are then upserted table by table. Configurations are kept masked (every sealed value shown as
`********`, as plugin configurations are shown): the sealed ciphertext never reaches these tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from application.ports import StoredEvent
from domain.plugins.configuration import MASK, map_sealed
from projections.batch import BatchProjection, Needs, Row, Rows, Table

NAME = "sites"
SCHEMA = "rm_sites"
VERSION = 1

DDL = """
CREATE TABLE sites (
    site_id         text PRIMARY KEY,
    name            text NOT NULL,
    timezone        text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL,              -- active | retired
    created_at      timestamptz NOT NULL,
    created_by      text,
    updated_at      timestamptz NOT NULL,
    updated_by      text,
    retired_at      timestamptz,
    retire_reason   text,
    stream_version  integer NOT NULL
);
CREATE INDEX sites_status ON sites (status);

CREATE TABLE site_extensions (
    site_id                 text NOT NULL,
    plugin_id               text NOT NULL,
    version                 text NOT NULL,
    configuration           jsonb NOT NULL,     -- masked
    configuration_hash      text NOT NULL,
    capabilities            text[] NOT NULL DEFAULT '{}',
    exclusive_capabilities  text[] NOT NULL DEFAULT '{}',
    rules                   jsonb NOT NULL,     -- the version's site rules (domain/sites/extensions.py)
    covering_signoffs       text[] NOT NULL DEFAULT '{}',
    activated_at            timestamptz NOT NULL,
    activated_by            text,
    activation_reason       text NOT NULL DEFAULT '',
    reconfigured_at         timestamptz,
    reconfigured_by         text,
    PRIMARY KEY (site_id, plugin_id)
);
CREATE INDEX site_extensions_plugin ON site_extensions (plugin_id);
CREATE INDEX site_extensions_capabilities ON site_extensions USING gin (capabilities);

CREATE TABLE signoffs (
    signoff_id          text PRIMARY KEY,
    site_id             text NOT NULL,
    plugin_id           text NOT NULL,
    aspect              text NOT NULL,
    signer_id           text NOT NULL,
    signer_name         text NOT NULL,
    role                text NOT NULL,
    meaning             text NOT NULL,
    notes               text NOT NULL DEFAULT '',
    configuration_hash  text NOT NULL,
    signed_at           timestamptz NOT NULL,
    position            bigint NOT NULL,
    invalidated         boolean NOT NULL DEFAULT false,
    invalidated_at      timestamptz,
    invalidated_by      text,
    invalidation_reason text
);
CREATE INDEX signoffs_extension ON signoffs (site_id, plugin_id, position);

CREATE TABLE plugin_switches (
    plugin_id   text PRIMARY KEY,
    installed   boolean NOT NULL,
    disabled    boolean NOT NULL,              -- the kill switch is on
    updated_at  timestamptz NOT NULL
);

CREATE TABLE audit_trail (
    site_id       text NOT NULL,
    seq           integer NOT NULL,             -- the event's version in the site's stream
    position      bigint NOT NULL,
    event_id      text NOT NULL,
    plugin_id     text,                         -- NULL: an event of the site itself
    kind          text NOT NULL,
    actor         text,
    recorded_at   timestamptz NOT NULL,
    reason        text NOT NULL DEFAULT '',
    old_hash      text,
    new_hash      text,
    version       text,
    forced        boolean NOT NULL DEFAULT false,
    dependents    text[] NOT NULL DEFAULT '{}',
    details       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (site_id, seq)
);
CREATE INDEX audit_trail_extension ON audit_trail (site_id, plugin_id, seq);
"""

SITES = Table("sites", ("site_id",))
EXTENSIONS = Table("site_extensions", ("site_id", "plugin_id"))
SIGNOFFS = Table("signoffs", ("signoff_id",))
SWITCHES = Table("plugin_switches", ("plugin_id",))
AUDIT = Table("audit_trail", ("site_id", "seq"))

# The audit trail's `kind` of each site event.
KINDS = {
    "Site.Created": "site_created",
    "Site.Renamed": "site_renamed",
    "Site.Retired": "site_retired",
    "Site.ExtensionActivated": "activated",
    "Site.ExtensionReconfigured": "reconfigured",
    "Site.ExtensionDeactivated": "deactivated",
    "Site.SignoffRecorded": "signoff_recorded",
    "Site.SignoffInvalidated": "signoff_invalidated",
}


def masked(configuration: dict[str, Any]) -> dict[str, Any]:
    """A stored (sealed) configuration as readers see it: every sealed value masked."""
    return map_sealed(configuration, lambda _path, _value: MASK)


def _key(event: StoredEvent) -> str:
    return event.stream_id.split(":", 1)[1]


class SitesProjection(BatchProjection):
    name = NAME
    schema = SCHEMA
    version = VERSION
    ddl = DDL
    tables = (SITES, EXTENSIONS, SIGNOFFS, SWITCHES, AUDIT)
    stream_types = frozenset({"site", "plugin"})

    def needs(self, events: Sequence[StoredEvent]) -> Needs:
        """Every site row of the batch (each event touches it); the extensions of sites where one is
        reconfigured; the signoffs invalidated. Everything else is written without reading."""
        return {
            "sites": {_key(e) for e in events if e.stream_type == "site"},
            "site_extensions": {_key(e) for e in events if e.event_type == "Site.ExtensionReconfigured"},
            "signoffs": {e.payload["signoff_id"] for e in events if e.event_type == "Site.SignoffInvalidated"},
        }

    def apply(self, rows: Rows, e: StoredEvent) -> None:
        if e.stream_type == "plugin":
            _switch(rows, e)
            return
        site_id, p, actor = _key(e), e.payload, e.metadata.get("actor")
        touched = {"updated_at": e.recorded_at, "updated_by": actor, "stream_version": e.stream_version}
        match e.event_type:
            case "Site.Created":
                rows.put("sites", {
                    "site_id": site_id, "name": p["name"], "timezone": p["timezone"], "metadata": p["metadata"],
                    "status": "active", "created_at": e.recorded_at, "created_by": actor, "retired_at": None,
                    "retire_reason": None, **touched,
                })  # fmt: skip
            case "Site.Renamed":
                rows.update("sites", site_id, name=p["name"], **touched)
            case "Site.Retired":
                rows.update("sites", site_id, status="retired", retired_at=e.recorded_at, retire_reason=p["reason"],
                            **touched)
            case "Site.ExtensionActivated":
                rules = p["rules"]
                rows.put("site_extensions", {
                    "site_id": site_id, "plugin_id": p["plugin_id"], "version": p["version"],
                    "configuration": masked(p["configuration"]), "configuration_hash": p["configuration_hash"],
                    "capabilities": list(rules.get("capabilities", [])),
                    "exclusive_capabilities": list(rules.get("exclusive_capabilities", [])), "rules": rules,
                    "covering_signoffs": list(p["signoffs"]), "activated_at": e.recorded_at, "activated_by": actor,
                    "activation_reason": p["reason"], "reconfigured_at": None, "reconfigured_by": None,
                })  # fmt: skip
                rows.update("sites", site_id, **touched)
            case "Site.ExtensionReconfigured":
                rows.update("site_extensions", site_id, p["plugin_id"], configuration=masked(p["configuration"]),
                            configuration_hash=p["new_hash"], reconfigured_at=e.recorded_at, reconfigured_by=actor)
                rows.update("sites", site_id, **touched)
            case "Site.ExtensionDeactivated":
                rows.delete("site_extensions", site_id, p["plugin_id"])
                rows.update("sites", site_id, **touched)
            case "Site.SignoffRecorded":
                rows.put("signoffs", {
                    "signoff_id": p["signoff_id"], "site_id": site_id, "plugin_id": p["plugin_id"], "aspect": p["aspect"],
                    "signer_id": p["signer_id"], "signer_name": p["signer_name"], "role": p["role"],
                    "meaning": p["meaning"], "notes": p["notes"], "configuration_hash": p["configuration_hash"],
                    "signed_at": p["signed_at"], "position": e.position, "invalidated": False, "invalidated_at": None,
                    "invalidated_by": None, "invalidation_reason": None,
                })  # fmt: skip
                rows.update("sites", site_id, **touched)
            case "Site.SignoffInvalidated":
                rows.update("signoffs", p["signoff_id"], invalidated=True, invalidated_at=e.recorded_at,
                            invalidated_by=actor, invalidation_reason=p["reason"])
                rows.update("sites", site_id, **touched)
            case _:
                return
        rows.put("audit_trail", _audit_row(site_id, e, actor))


def _switch(rows: Rows, e: StoredEvent) -> None:
    """The kill switch of a plugin, from its own stream (written whole: no row is read). As the
    activation policy sees it: an install (enabled or not) leaves it off, `Plugin.Disabled` turns it on,
    `Plugin.Enabled` off; an uninstalled plugin counts as inactive too."""
    match e.event_type:
        case "Plugin.Installed" | "Plugin.Reinstalled" | "Plugin.Enabled":
            installed, disabled = True, False
        case "Plugin.Disabled":
            installed, disabled = True, True
        case "Plugin.Uninstalled":
            installed, disabled = False, False
        case _:
            return
    rows.put("plugin_switches", {"plugin_id": _key(e), "installed": installed, "disabled": disabled,
                                 "updated_at": e.recorded_at})


def _audit_row(site_id: str, e: StoredEvent, actor: str | None) -> Row:
    """One line of the audit trail: who did what to which extension (or to the site), when, and why."""
    p = e.payload
    kind = KINDS[e.event_type]
    row: Row = {
        "site_id": site_id, "seq": e.stream_version, "position": e.position, "event_id": str(e.event_id),
        "plugin_id": p.get("plugin_id"), "kind": kind, "actor": actor, "recorded_at": e.recorded_at,
        "reason": p.get("reason") or "", "old_hash": None, "new_hash": None, "version": p.get("version"),
        "forced": bool(p.get("forced", False)), "dependents": list(p.get("dependents", [])), "details": {},
    }  # fmt: skip
    match kind:
        case "site_created":
            row["details"] = {"name": p["name"], "timezone": p["timezone"]}
        case "site_renamed":
            row["details"] = {"old_name": p["old_name"], "name": p["name"]}
        case "activated":
            row["new_hash"] = p["configuration_hash"]
            row["details"] = {"signoffs": list(p["signoffs"])}
        case "reconfigured":
            row["old_hash"], row["new_hash"] = p["old_hash"], p["new_hash"]
            row["details"] = {"changed_keys": list(p["changed_keys"])}
        case "deactivated":
            row["old_hash"] = p["configuration_hash"]
        case "signoff_recorded":
            row["new_hash"] = p["configuration_hash"]
            row["details"] = {
                "signoff_id": p["signoff_id"], "aspect": p["aspect"], "signer_id": p["signer_id"],
                "signer_name": p["signer_name"], "role": p["role"], "meaning": p["meaning"], "notes": p["notes"],
                "signed_at": p["signed_at"],
            }  # fmt: skip
        case "signoff_invalidated":
            row["old_hash"] = p["configuration_hash"]
            row["details"] = {"signoff_id": p["signoff_id"], "aspect": p["aspect"]}
    return row
