"""Request and response bodies of the HTTP API (msgspec Structs): the shared ones and the plugin catalog's
here, a feature's own in `schemas/<feature>.py` (`schemas/tasks.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from domain.limits import Text, Url, VersionText

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T]):
    total: int
    skip: int
    limit: int
    items: list[T]
    has_more: bool


class Written(msgspec.Struct):
    """What every write answers: the stream's new version (also the ETag) and the global position."""

    id: str
    stream_id: str
    stream_version: int
    position: int | None
    duplicate: bool = False


class PluginVersion(msgspec.Struct):
    version: str
    source: dict[str, Any]
    installed_at: datetime


class DependencyRef(msgspec.Struct):
    plugin_id: str
    requirement: str


class EventsDeclared(msgspec.Struct):
    emits: list[str] = []
    subscribes: list[str] = []


class PluginSummary(msgspec.Struct):
    id: str
    name: str
    version: str
    description: str
    author: str
    category: str
    tags: list[str]
    capabilities: list[str]
    status: str
    enabled: bool
    disabled_reason: str | None
    dependents: list[str]
    installed_at: datetime
    updated_at: datetime
    stream_version: int


class Plugin(PluginSummary):
    manifest: dict[str, Any]
    dependencies: list[DependencyRef]
    versions: list[PluginVersion]
    events: EventsDeclared
    configuration: dict[str, Any]
    source: dict[str, Any]
    restarts: int
    reloads: int


class PluginInstall(msgspec.Struct, forbid_unknown_fields=True):
    """JSON body of `POST /plugins/install` (archives are uploaded as multipart/form-data instead)."""

    source: Literal["entrypoint", "file", "url", "repository"]
    entrypoint: Url | None = None
    version: VersionText | None = None
    config: dict[str, Any] = {}
    auto_enable: bool = False


class PluginUpdate(msgspec.Struct, forbid_unknown_fields=True):
    source: Literal["entrypoint", "file", "url", "repository"]
    entrypoint: Url | None = None
    version: VersionText | None = None


class Reason(msgspec.Struct, forbid_unknown_fields=True):
    reason: Text | None = None


class Rollback(msgspec.Struct, forbid_unknown_fields=True):
    to_version: VersionText | None = None


class PluginUninstall(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `DELETE /plugins/{id}` (the same options are also taken as query parameters, not both)."""

    reason: Text | None = None
    force: bool = False
    cleanup_data: bool = False


class PluginConfigUpdate(msgspec.Struct, forbid_unknown_fields=True):
    config: dict[str, Any]


class PluginConfig(msgspec.Struct):
    plugin_id: str
    config: dict[str, Any]
    schema: dict[str, Any]
    secrets: list[str]  # fields the schema marks secret (`*`: any key or index)
    stream_version: int
    sealed: list[str] = []  # fields sealed in this configuration (what `config/declassify` can name)


class PluginDeclassify(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /plugins/{id}/config/declassify`: sealed fields to store in clear from now on."""

    fields: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=500)]], msgspec.Meta(min_length=1, max_length=100)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


Filter = Annotated[str, msgspec.Meta(max_length=1024, description="comma-separated values, as the stream's query takes them")]


class StreamTicketRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/v1/events/stream-tickets`: the filters the stream will be opened with (the
    ticket opens that stream only)."""

    site_id: Filter | None = None
    stream_type: Filter | None = None
    event_type: Filter | None = None


class StreamTicket(msgspec.Struct):
    """A single-use ticket for the event stream: open `url` (or the stream with `?ticket=` and the same
    filters) before `expires_at`."""

    ticket: str
    expires_at: datetime
    expires_in: float
    url: str
