"""What the plugin handlers need from the outside world to find a plugin: the `PluginSources` port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class FoundPlugin:
    """A plugin as its source declares it: the manifest (not yet checked) and where it came from (recorded
    with the version it installs)."""

    manifest: dict[str, Any]
    source: dict[str, Any]


class PluginSources(Protocol):
    """Where plugins come from. Implementations read untrusted input within fixed bounds and raise
    `ManifestInvalid` (the archive or its manifest is refused) or `SourceUnavailable` (nothing there)."""

    async def from_archive(self, content: bytes, filename: str | None = None) -> FoundPlugin:
        """The manifest inside an uploaded zip archive; the source names its sha256, size and file name."""
        ...

    async def from_entry_point(self, name: str) -> FoundPlugin:
        """The manifest an installed distribution declares under the `charter.plugins` entry point `name`."""
        ...
