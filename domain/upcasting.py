"""Event schema versions and the upcasters that bring an old payload to the current shape.

Every event type has a current schema version: 1 unless its aggregate declares another next to the
event (an `EventSchemas` beside the aggregate class). An event is recorded at its current version; when
its shape changes, the version goes up by one and an upcaster, a pure function from the payload of
version n to the payload of version n+1, is registered for (event type, n). Reading runs the chain of
upcasters from the stored version up to the current one, so aggregates, projections and the event log
only ever see current shapes, and the log itself is never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class SchemaVersionError(Exception):
    """A stored event this code cannot bring to its current shape (a defect or a deployment error, never
    a client's mistake): a version newer than the code knows, or a missing upcaster."""

    def __init__(self, message: str, event_type: str, version: int) -> None:
        super().__init__(message)
        self.event_type = event_type
        self.version = version


class UnknownSchemaVersion(SchemaVersionError):
    """The event was recorded by a newer version of Charter than the one reading it."""


class MissingUpcaster(SchemaVersionError):
    """No step from one version of an event to the next."""


@dataclass(frozen=True)
class EventSchemas:
    """The schema versions of one aggregate's events (by event name; absent: 1) and the upcasters
    (by (event name, from version)) that bring older payloads to the next version."""

    aggregate: str
    current: Mapping[str, int] = field(default_factory=dict)
    upcasters: Mapping[tuple[str, int], Upcaster] = field(default_factory=dict)


class Upcasters:
    """The registry: current versions and upcasters of every event type (`Aggregate.Event`)."""

    def __init__(self, schemas: Iterable[EventSchemas] = ()) -> None:
        self._current: dict[str, int] = {}
        self._steps: dict[tuple[str, int], Upcaster] = {}
        for schema in schemas:
            for name, version in schema.current.items():
                self.declare(f"{schema.aggregate}.{name}", version)
            for (name, from_version), step in schema.upcasters.items():
                self.register(f"{schema.aggregate}.{name}", from_version, step)
        self.check()

    def declare(self, event_type: str, version: int) -> None:
        """`event_type` is now recorded at `version` (1 needs no declaration)."""
        if version < 1:
            raise ValueError(f"{event_type}: a schema version starts at 1, not {version}")
        self._current[event_type] = version

    def register(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """`upcaster` turns a payload of `event_type` at `from_version` into one at `from_version + 1`."""
        if (event_type, from_version) in self._steps:
            raise ValueError(f"{event_type}: a second upcaster from version {from_version}")
        self._steps[(event_type, from_version)] = upcaster

    def check(self) -> None:
        """Every declared version has the chain of steps that reaches it from version 1, and no step
        leads past it (raises MissingUpcaster / ValueError at start-up rather than at the first read)."""
        for event_type, current in self._current.items():
            for version in range(1, current):
                if (event_type, version) not in self._steps:
                    raise MissingUpcaster(
                        f"{event_type} is at schema version {current} but no upcaster goes from version {version}",
                        event_type, version,
                    )
        for event_type, version in self._steps:
            if version >= self.current(event_type):
                raise ValueError(
                    f"{event_type}: an upcaster from version {version}, but the current version is {self.current(event_type)}"
                )

    def current(self, event_type: str) -> int:
        """The version `event_type` is recorded at now."""
        return self._current.get(event_type, 1)

    def is_current(self, event_type: str, version: int) -> bool:
        return version == self._current.get(event_type, 1)

    def upcast(self, event_type: str, version: int, payload: Payload, event: str = "") -> Payload:
        """`payload` of `event_type` at `version`, brought to the current version (the same dict when it
        is current). `event` names the stored event in an error (its stream, version and position)."""
        current = self._current.get(event_type, 1)
        if version == current:
            return payload
        where = f" ({event})" if event else ""
        if version > current or version < 1:
            raise UnknownSchemaVersion(
                f"{event_type}{where} has schema version {version}; this version of Charter knows versions 1 to {current}",
                event_type, version,
            )
        for step in range(version, current):
            upcaster = self._steps.get((event_type, step))
            if upcaster is None:
                raise MissingUpcaster(f"{event_type}{where}: no upcaster from schema version {step}", event_type, step)
            payload = upcaster(dict(payload))
        return payload
