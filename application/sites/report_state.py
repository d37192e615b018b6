"""What a compliance report folds out of a site's stream, as a value a snapshot can hold.

A report needs the Site aggregate as it was (extensions, signoffs) and, for each active extension, where
it came from: the activation and the event that last set its configuration (who, when, at which global
position). `SiteState` is that fold at one stream version, with what decides whether a snapshot of it
may serve a point of the log: the highest global position and the latest recorded time among the
events folded (a snapshot serves `as_of` only when every event it folded is included in `as_of`, so it
is exactly the prefix a replay would have read), and the hash of its last event (so a snapshot taken of
another log, or of a log later restored, is noticed and ignored).

`STATE_VERSION` names the shape of the fold: change the Site aggregate, the provenance or this encoding
and bump it; snapshots of another version are ignored and taken again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from application.as_of import AsOf, actor_of
from application.ports import StoredEvent
from domain.sites.extensions import ActiveExtension
from domain.sites.signoff import Signoff
from domain.sites.site import Site

STATE_VERSION = 1


@dataclass(frozen=True)
class Mark:
    """One event as a report cites it: its global position, recorded time and actor."""

    position: int
    recorded_at: datetime
    actor: str

    @classmethod
    def of(cls, event: StoredEvent) -> "Mark":
        return cls(event.position, event.recorded_at, actor_of(event))


@dataclass(frozen=True)
class Provenance:
    """Where an active extension came from: its activation, and the event that set its configuration
    (the activation, or the last reconfiguration since)."""

    activated: Mark
    configured: Mark


@dataclass
class SiteState:
    """A site's stream folded up to `version` (0: nothing yet)."""

    site: Site | None = None
    origins: dict[str, Provenance] = field(default_factory=dict)
    version: int = 0
    position: int = 0  # the highest global position folded
    recorded_at: datetime | None = None  # the latest recorded time folded
    hash: bytes = b""  # the hash of the event at `version`

    def serves(self, as_of: AsOf) -> bool:
        """Is every folded event included in `as_of` (so the state is a prefix of its replay)?"""
        if as_of.position is not None:
            return self.position <= as_of.position
        return as_of.instant is not None and self.recorded_at is not None and self.recorded_at <= as_of.instant

    def fold(self, events: Iterable[StoredEvent], replay: Callable[[Site | None, list[StoredEvent]], Site | None]) -> None:
        """Fold the events that follow `version` (already at their current schema): the aggregate through
        `replay` (the event store's reconstruct), the provenance and the bookkeeping here."""
        batch = list(events)
        if not batch:
            return
        self.site = replay(self.site, batch)
        for e in batch:
            plugin_id = e.payload.get("plugin_id")
            if e.event_type == "Site.ExtensionActivated":
                mark = Mark.of(e)
                self.origins[plugin_id] = Provenance(mark, mark)
            elif e.event_type == "Site.ExtensionReconfigured" and plugin_id in self.origins:
                self.origins[plugin_id] = Provenance(self.origins[plugin_id].activated, Mark.of(e))
            elif e.event_type == "Site.ExtensionDeactivated":
                self.origins.pop(plugin_id, None)
            self.position = max(self.position, e.position)
            self.recorded_at = e.recorded_at if self.recorded_at is None else max(self.recorded_at, e.recorded_at)
        self.version, self.hash = batch[-1].stream_version, batch[-1].hash


# -- the snapshot encoding ----------------------------------------------------------------------------


class _Site(msgspec.Struct, array_like=True):
    id: UUID
    version: int
    created_on: datetime
    modified_on: datetime
    site_id: str
    name: str
    timezone: str
    metadata: dict[str, str]
    retired: bool
    extensions: dict[str, ActiveExtension]
    signoffs: dict[str, list[Signoff]]


class _Mark(msgspec.Struct, array_like=True):
    position: int
    recorded_at: datetime
    actor: str


class _State(msgspec.Struct, array_like=True):
    site: _Site
    origins: dict[str, tuple[_Mark, _Mark]]


_decoder = msgspec.json.Decoder(_State)
_encoder = msgspec.json.Encoder()


def encode(state: SiteState) -> bytes:
    """The folded state as snapshot bytes (the bookkeeping is kept in the snapshot's own columns)."""
    site: Any = state.site
    body = _State(
        _Site(site.id, site.version, site.created_on, site.modified_on, site.site_id, site.name, site.timezone,
              site.metadata, site.retired, site.extensions, site.signoffs),
        {pid: (_Mark(o.activated.position, o.activated.recorded_at, o.activated.actor),
               _Mark(o.configured.position, o.configured.recorded_at, o.configured.actor))
         for pid, o in state.origins.items()},
    )  # fmt: skip
    return _encoder.encode(body)


def decode(data: bytes, version: int, position: int, recorded_at: datetime, hash: bytes) -> SiteState:
    """A snapshot's bytes and bookkeeping back into a state (a fresh aggregate: folding onto it is safe)."""
    body = _decoder.decode(data)
    s = body.site
    site = object.__new__(Site)
    site.__dict__.update(
        _id=s.id, _version=s.version, _created_on=s.created_on, _modified_on=s.modified_on, _pending_events=[],
        site_id=s.site_id, name=s.name, timezone=s.timezone, metadata=s.metadata, retired=s.retired,
        extensions=s.extensions, signoffs=s.signoffs,
    )  # fmt: skip
    origins = {pid: Provenance(Mark(a.position, a.recorded_at, a.actor), Mark(c.position, c.recorded_at, c.actor))
               for pid, (a, c) in body.origins.items()}
    return SiteState(site, origins, version, position, recorded_at, hash)
