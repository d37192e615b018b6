"""A site as it was at a point of the log, and the compliance report built from it.

Both replay the site's own stream up to the point (application/as_of.py; from the latest snapshot the
point includes, application/sites/report_state.py), never a read model: the
site's stream holds everything a report states (the extensions, each with its version, configuration
hash and the compliance aspects of its manifest, and the signoffs with the printed name, role and meaning
of each signer); who activated an extension and when comes from the activation event itself (its
metadata's actor, its recorded time), and an activator's printed name from their user stream as of the
same point. The report is a plain dict in a fixed order of rows: rendering it (report_render.py) gives
the same bytes for the same point every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from application.as_of import AsOf, History, actor_of, timestamp
from application.ports import StoredEvent
from application.sites.report_state import Mark, Provenance, SiteState
from domain.identity.user import STREAM_TYPE as USER_STREAM
from domain.identity.user import User
from domain.plugins.configuration import MASK, map_sealed
from domain.sites.errors import SiteNotFound
from domain.sites.extensions import ActiveExtension
from domain.sites.signoff import Signoff
from domain.sites.site import STREAM_TYPE, Site, site_uuid

REPORT_VERSION = 1


@runtime_checkable
class SiteHistory(History, Protocol):
    """The log as of a point, with the site's stream folded for a report (from a snapshot where one
    serves: infrastructure/sites/snapshots.py)."""

    async def site_state(self, site_id: str, as_of: AsOf, since: AsOf | None) -> tuple[SiteState, list[StoredEvent]]:
        """The site's stream folded up to `as_of` (a prefix: application/as_of.py), and its events after
        `since` (all when None) up to `as_of`, in stream order."""
        ...


@dataclass(frozen=True)
class SiteAsOf:
    site: Site
    origins: dict[str, Provenance]  # the provenance of each extension active then
    changes: list[StoredEvent]  # the site's events after `since` up to the point
    position: int  # the highest position of the site's stream up to the point
    as_of: AsOf


async def site_as_of(history: SiteHistory, site_id: str, as_of: AsOf, since: AsOf | None = None) -> SiteAsOf:
    """The site replayed up to `as_of`; SiteNotFound when it did not exist yet."""
    state, changes = await history.site_state(site_id, as_of, since)
    if state.site is None:
        raise SiteNotFound(f"site {site_id} did not exist as of {as_of.text()}", site_id=site_id, as_of=as_of.text())
    return SiteAsOf(state.site, state.origins, changes, state.position, as_of)


def pending(extension: ActiveExtension, given: list[Signoff]) -> list[dict[str, str]]:
    """The aspects of the extension's manifest without a signoff bound to its configuration hash."""
    signed = {s.aspect for s in given if s.configuration_hash == extension.configuration_hash}
    return [{"aspect": a.name, "role": a.role, "meaning": a.meaning}
            for a in extension.rules.compliance.aspects if a.name not in signed]


def covering(given: list[Signoff], extension: ActiveExtension) -> list[Signoff]:
    """The valid signoffs (of `given`) bound to the extension's hash, in the manifest's order of aspects."""
    order = {a.name: i for i, a in enumerate(extension.rules.compliance.aspects)}
    bound = [s for s in given if s.configuration_hash == extension.configuration_hash]
    return sorted(bound, key=lambda s: (order.get(s.aspect, len(order)), s.signed_at, s.signoff_id))


async def features_as_of(history: SiteHistory, site_id: str, as_of: AsOf) -> list[dict[str, Any]]:
    """`GET /site/{id}/features?as_of=`: the extensions active then, in the item shape of the
    `site_features` read model (configuration masked), by plugin id."""
    state = await site_as_of(history, site_id, as_of, as_of)
    origins = state.origins
    items = []
    for plugin_id, extension in sorted(state.site.extensions.items()):
        origin = origins.get(plugin_id)
        missing = pending(extension, state.site.signoffs_of(plugin_id))
        items.append({
            "plugin_id": plugin_id,
            "version": extension.version,
            "configuration": map_sealed(extension.configuration, lambda _path, _value: MASK),
            "configuration_hash": extension.configuration_hash,
            "capabilities": list(extension.rules.capabilities),
            "activated_at": origin.activated.recorded_at if origin else None,
            "activated_by": origin.activated.actor if origin else None,
            "is_fully_signed": not missing,
            "pending_aspects": [p["aspect"] for p in missing],
        })  # fmt: skip
    return items


async def people_as_of(history: History, actors: set[str], as_of: AsOf) -> tuple[dict[str, str], int]:
    """The printed name of each actor that is a user (as their stream had it then), and the highest
    position read. Actors that are not users (`system`, a worker) keep their id as name."""
    names, last = {}, 0
    for actor in sorted(actors):
        try:
            user_id = UUID(actor)
        except ValueError:
            continue
        replayed = await history.replay(User, USER_STREAM, str(user_id), user_id, as_of)
        if replayed.aggregate is not None:
            names[actor] = replayed.aggregate.full_name or replayed.aggregate.email
            last = max(last, replayed.events[-1].position)
    return names, last


def signed_at(raw: str) -> str:
    try:
        return timestamp(datetime.fromisoformat(raw))
    except (TypeError, ValueError):
        return raw


def signoff_row(s: Signoff) -> dict[str, str]:
    return {"aspect": s.aspect, "signer_name": s.signer_name, "signer_id": s.signer_id, "role": s.role,
            "meaning": s.meaning, "signed_at": signed_at(s.signed_at), "notes": s.notes}


def extension_row(extension: ActiveExtension, valid: list[Signoff], origin: Provenance | None,
                  names: dict[str, str]) -> dict[str, Any]:
    """One extension of the report; `valid`: the extension's valid signoffs (for any hash)."""
    given = covering(valid, extension)
    missing = pending(extension, given)

    def who(mark: Mark | None) -> dict[str, Any]:
        actor = mark.actor if mark else ""
        return {"at": timestamp(mark.recorded_at) if mark else "", "by": actor, "by_name": names.get(actor, actor),
                "position": mark.position if mark else 0}

    return {
        "plugin_id": extension.plugin_id,
        "version": extension.version,
        "configuration_hash": extension.configuration_hash,
        "activated": who(origin.activated if origin else None),
        "configured": who(origin.configured if origin else None),
        "fully_signed": not missing,
        "signoffs": [signoff_row(s) for s in given],
        "pending_aspects": missing,
    }


def describe(e: StoredEvent) -> str:
    """One line saying what an event of the site's stream changed."""
    return describe_change(e.event_type, e.payload)


def describe_change(event_type: str, p: dict[str, Any]) -> str:
    """One line saying what an event of the site's stream (its type and payload) changed."""
    reason = f"; reason: {p['reason']}" if p.get("reason") else ""
    match event_type:
        case "Site.Created":
            return f"site created: {p['name']} ({p['timezone']})"
        case "Site.Renamed":
            return f"renamed from {p['old_name']} to {p['name']}"
        case "Site.Retired":
            return f"site retired{reason}"
        case "Site.ExtensionActivated":
            return f"activated version {p['version']} with configuration {p['configuration_hash']}{reason}"
        case "Site.ExtensionReconfigured":
            keys = ", ".join(p.get("changed_keys") or [])
            return f"reconfigured {p['old_hash']} -> {p['new_hash']}" + (f" (changed: {keys})" if keys else "") + reason
        case "Site.ExtensionDeactivated":
            forced = " (forced past its dependents)" if p.get("forced") else ""
            return f"deactivated version {p['version']} with configuration {p['configuration_hash']}{forced}{reason}"
        case "Site.SignoffRecorded":
            return (f"{p['aspect']} signed by {p['signer_name']} as {p['role']} ({p['meaning']})"
                    f" for {p['configuration_hash']}")
        case "Site.SignoffInvalidated":
            return f"signoff of {p['aspect']} for {p['configuration_hash']} invalidated: {p['reason']}"
    return event_type.split(".", 1)[-1]


def change_row(e: StoredEvent, names: dict[str, str]) -> dict[str, Any]:
    actor = actor_of(e)
    return {"position": e.position, "recorded_at": timestamp(e.recorded_at), "event": e.event_type.split(".", 1)[-1],
            "plugin_id": e.payload.get("plugin_id", ""), "by": actor, "by_name": names.get(actor, actor),
            "detail": describe(e)}


async def compliance_report(history: SiteHistory, site_id: str, as_of: AsOf, since: AsOf | None = None) -> dict[str, Any]:
    """Every extension active at `as_of` with its version, configuration hash, activation (who, when),
    the signoffs covering that hash and the aspects still pending; the site's changes after `since` (all
    of them when None) up to `as_of`; and the last global position the report reflects. `as_of` must be
    resolved (application.as_of.resolve): a fixed point gives the same report every time."""
    state = await site_as_of(history, site_id, as_of, since)
    origins, changes = state.origins, state.changes
    actors = {actor_of(e) for e in changes} | {m.actor for o in origins.values() for m in (o.activated, o.configured)}
    names, last_user_position = await people_as_of(history, actors, as_of)
    site = state.site
    covered = as_of.position if as_of.position is not None else max(state.position, last_user_position)
    return document(
        {"site_id": site.site_id, "name": site.name, "timezone": site.timezone, "retired": site.retired},
        as_of.text(), since.text() if since is not None else "", covered,
        [extension_row(ext, site.signoffs_of(pid), origins.get(pid), names) for pid, ext in sorted(site.extensions.items())],
        [change_row(e, names) for e in changes],
    )


def document(site: dict[str, Any], as_of: str, since: str, position: int, extensions: list[dict[str, Any]],
             changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The report in its fixed order of keys (what report_render.py renders)."""
    return {"report": "compliance", "report_version": REPORT_VERSION, "site": site, "as_of": as_of, "since": since,
            "position": position, "extensions": extensions, "changes": changes}
