"""Where plugins come from: uploaded archives (content-addressed in PostgreSQL) and installed distributions."""

from __future__ import annotations

import asyncio
import hashlib
from importlib.metadata import entry_points
from typing import Any

import asyncpg
import msgspec

from application.errors import SourceUnavailable
from application.plugins.ports import FoundPlugin
from domain.plugins.errors import ManifestInvalid
from infrastructure.plugins.archives import ArchiveLimits, open_archive, read_entry, verify_entries

MANIFEST_NAMES = ("charter-plugin.json", "plugin.json")
ENTRY_POINT_GROUP = "charter.plugins"


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def manifest_from_archive(content: bytes, limits: ArchiveLimits = ArchiveLimits()) -> dict[str, Any]:
    """Read `charter-plugin.json` from the root (or the single top folder) of a zip archive that passes
    the checks of `infrastructure.plugins.archives` (CPU-bound: call it off the event loop)."""
    with open_archive(content, limits) as archive:
        name = manifest_name(archive.namelist())
        info = archive.getinfo(name)
        if info.file_size > limits.max_manifest_bytes:
            raise ManifestInvalid(
                f"{name} is larger than {limits.max_manifest_bytes} bytes", field="archive.manifest", limit=limits.max_manifest_bytes
            )
        verify_entries(archive)
        text = read_entry(archive, info, limits.max_manifest_bytes, keep=True)
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ManifestInvalid(f"{name} is not valid JSON: {exc}", field="archive.manifest") from None
    if not isinstance(raw, dict):
        raise ManifestInvalid(f"{name} must hold a JSON object", field="archive.manifest")
    return raw


def manifest_name(names: list[str]) -> str:
    for candidate in MANIFEST_NAMES:
        matches = [n for n in names if n == candidate or (n.count("/") == 1 and n.endswith("/" + candidate))]
        if matches:
            return matches[0]
    raise ManifestInvalid(f"archive has no {MANIFEST_NAMES[0]} at its root", field="archive")


def manifest_from_entry_point(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest a distribution declares under the `charter.plugins` entry point `name`, and its source."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        available = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise SourceUnavailable(
            f"no installed distribution provides entry point {name!r} in group {ENTRY_POINT_GROUP}",
            field="entrypoint",
            available=available,
        )
    ep = found[0]
    try:
        target = ep.load()
    except Exception as exc:  # a broken plugin distribution must not take the request down
        raise SourceUnavailable(f"entry point {name!r} failed to load: {exc}", field="entrypoint") from None
    manifest = getattr(target, "MANIFEST", None) or getattr(target, "manifest", None) or target
    if callable(manifest) and not isinstance(manifest, dict):
        manifest = manifest()
    if not isinstance(manifest, dict):
        raise SourceUnavailable(f"entry point {name!r} does not provide a manifest dict", field="entrypoint")
    source = {"kind": "entrypoint", "entrypoint": name, "value": ep.value}
    if ep.dist is not None:
        source.update(distribution=ep.dist.name, distribution_version=ep.dist.version)
    return manifest, source


class LocalPluginSources:
    """`application.plugins.ports.PluginSources` on this host: archives read within `limits` (off the event
    loop: inflating is CPU-bound), entry points of the distributions installed in this environment."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits

    async def from_archive(self, content: bytes, filename: str | None = None) -> FoundPlugin:
        manifest = await asyncio.to_thread(manifest_from_archive, content, self.limits)
        return FoundPlugin(manifest, {"kind": "file", "sha256": sha256_of(content), "size": len(content), "filename": filename})

    async def from_entry_point(self, name: str) -> FoundPlugin:
        manifest, source = manifest_from_entry_point(name)
        return FoundPlugin(manifest, source)


class PostgresArchiveStore:
    """Archives kept by sha256 in PostgreSQL, so every replica can fetch what any replica received."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def put(self, content: bytes) -> str:
        digest = sha256_of(content)
        await self.pool.execute(
            "INSERT INTO plugin_archives (sha256, size, content) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            digest,
            len(content),
            content,
        )
        return digest

    async def get(self, sha256: str) -> bytes | None:
        return await self.pool.fetchval("SELECT content FROM plugin_archives WHERE sha256 = $1", sha256)
