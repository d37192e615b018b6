"""How long the strings a client sends may be: one place, used by the manifest and the HTTP schemas.

Every string that can reach an event is bounded, so no single field can make an event approach the
store's size limit (CHARTER_EVENT_MAX_BYTES) on its own, and lists are bounded in count as well.
Free-form JSON (plugin configuration, config schemas) is bounded by the event size limit itself.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

MAX_ID = 128  # ids and keys: plugin ids, role names, permission names, site ids, user ids, filters
MAX_NAME = 200  # display names: plugin and role names, full_name, author, license
MAX_EMAIL = 254  # the longest address SMTP can carry (RFC 5321)
MAX_TEXT = 4000  # descriptions and reasons
MAX_VERSION = 64  # versions and version ranges
MAX_URL = 2048  # homepages, entry points, sources
MAX_ITEMS = 64  # tags, capabilities, permissions: entries per list
MAX_TAG = 64  # one tag or capability
MAX_EVENT_NAMES = 256  # events a plugin declares it emits or subscribes to
MAX_PARAM = 1024  # one query parameter's value (comma-separated filters included)
MAX_HEADER_ID = 128  # X-Correlation-Id, X-Causation-Id
MAX_IDEMPOTENCY_KEY = 200

Id = Annotated[str, Meta(max_length=MAX_ID)]
Name = Annotated[str, Meta(max_length=MAX_NAME)]
Email = Annotated[str, Meta(max_length=MAX_EMAIL)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
VersionText = Annotated[str, Meta(max_length=MAX_VERSION)]
Url = Annotated[str, Meta(max_length=MAX_URL)]
Tag = Annotated[str, Meta(max_length=MAX_TAG)]
Tags = Annotated[list[Tag], Meta(max_length=MAX_ITEMS)]
Ids = Annotated[list[Id], Meta(max_length=MAX_ITEMS)]
EventNames = Annotated[list[Annotated[str, Meta(max_length=MAX_NAME)]], Meta(max_length=MAX_EVENT_NAMES)]
Requirements = Annotated[dict[Id, VersionText], Meta(max_length=MAX_ITEMS)]
