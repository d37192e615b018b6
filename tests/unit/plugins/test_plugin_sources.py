"""Install and update read the plugin from where the command names it, through the `PluginSources` port:
given events -> command (archive / entry point / manifest at hand) -> new events or error. No I/O: an
in-memory store and a fake of the port."""

from __future__ import annotations

from typing import Any

import pytest

from application.commands import InstallPlugin, UpdatePlugin
from application.context import CommandContext, CommandResult
from application.errors import SourceUnavailable
from application.plugins.handlers import HANDLERS, PluginServices
from application.plugins.ports import FoundPlugin
from domain.plugins.errors import ManifestInvalid
from infrastructure.eventlog.repository import AggregateRepository
from tests.unit.test_command_retry import InlineSandbox, MemoryStore

PID = "audit-log"
STREAM = f"plugin:{PID}"
ALICE = CommandContext(actor="alice")
ZIP_V1, ZIP_V2, ZIP_OTHER, NOT_A_ZIP = b"PK zip v1", b"PK zip v2", b"PK zip other", b"not a zip"


def manifest(version: str = "1.0.0", plugin_id: str = PID) -> dict[str, Any]:
    return {"id": plugin_id, "name": "Audit log", "version": version}


class FakeSources:
    """`PluginSources` over fixed archives and entry points; remembers what it was asked."""

    def __init__(self) -> None:
        self.archives = {ZIP_V1: manifest("1.0.0"), ZIP_V2: manifest("2.0.0"), ZIP_OTHER: manifest("2.0.0", "other")}
        self.entry_points = {"audit": manifest("1.5.0")}
        self.asked: list[tuple[str, Any]] = []

    async def from_archive(self, content: bytes, filename: str | None = None) -> FoundPlugin:
        self.asked.append(("archive", filename))
        if content not in self.archives:
            raise ManifestInvalid("archive is not a readable zip file", field="archive")
        return FoundPlugin(self.archives[content], {"kind": "file", "size": len(content), "filename": filename})

    async def from_entry_point(self, name: str) -> FoundPlugin:
        self.asked.append(("entrypoint", name))
        if name not in self.entry_points:
            raise SourceUnavailable(f"no installed distribution provides entry point {name!r}", field="entrypoint")
        return FoundPlugin(self.entry_points[name], {"kind": "entrypoint", "entrypoint": name})


class StoredArchives:
    def __init__(self) -> None:
        self.stored: list[bytes] = []

    async def put(self, content: bytes) -> str:
        self.stored.append(content)
        return "digest"

    async def get(self, sha256: str) -> bytes | None:
        return None


class World:
    def __init__(self, sources: FakeSources | None) -> None:
        self.store = MemoryStore()
        self.sources = sources
        self.archives = StoredArchives()
        self.services = PluginServices(
            repository=AggregateRepository(self.store),  # type: ignore[arg-type]
            cipher=None,  # type: ignore[arg-type]  # no secrets in these manifests
            archives=self.archives,
            host_version="1.0.0",
            sandbox=InlineSandbox(),
            sources=sources,
        )

    async def run(self, command: Any) -> CommandResult:
        return await HANDLERS[type(command)](command, ALICE, self.services)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.event_type.split(".", 1)[1], e.payload) for e in self.store.streams.get(STREAM, [])]


@pytest.fixture
def world() -> World:
    return World(FakeSources())


class TestInstallFromAnArchive:
    async def test_records_the_manifest_read_from_the_archive_and_the_source_the_port_names(self, world: World) -> None:
        await world.run(InstallPlugin(archive=ZIP_V1, filename="audit.zip"))

        [(name, payload)] = world.events()
        assert name == "Installed"
        assert (payload["manifest"]["id"], payload["manifest"]["version"]) == (PID, "1.0.0")
        assert payload["source"] == {"kind": "file", "size": len(ZIP_V1), "filename": "audit.zip"}
        assert world.sources.asked == [("archive", "audit.zip")]

    async def test_keeps_the_archive(self, world: World) -> None:
        await world.run(InstallPlugin(archive=ZIP_V1))

        assert world.archives.stored == [ZIP_V1]

    async def test_an_archive_the_port_refuses_writes_and_keeps_nothing(self, world: World) -> None:
        with pytest.raises(ManifestInvalid) as refused:
            await world.run(InstallPlugin(archive=NOT_A_ZIP))

        assert refused.value.details["field"] == "archive"
        assert world.store.streams == {} and world.archives.stored == []


class TestInstallFromAnEntryPoint:
    async def test_records_the_entry_points_manifest_and_source(self, world: World) -> None:
        await world.run(InstallPlugin(entrypoint="audit", auto_enable=True))

        [(name, payload)] = world.events()
        assert (name, payload["manifest"]["version"], payload["enabled"]) == ("Installed", "1.5.0", True)
        assert payload["source"] == {"kind": "entrypoint", "entrypoint": "audit"}

    async def test_the_version_asked_for_must_be_the_one_installed(self, world: World) -> None:
        with pytest.raises(SourceUnavailable) as refused:
            await world.run(InstallPlugin(entrypoint="audit", version="2.0.0"))

        assert refused.value.details["field"] == "version"
        assert "provides version 1.5.0, not 2.0.0" in refused.value.message
        assert world.events() == []

    async def test_the_version_installed_is_accepted_when_named(self, world: World) -> None:
        await world.run(InstallPlugin(entrypoint="audit", version="1.5.0"))

        assert [name for name, _ in world.events()] == ["Installed"]

    async def test_an_unknown_entry_point_is_refused(self, world: World) -> None:
        with pytest.raises(SourceUnavailable) as refused:
            await world.run(InstallPlugin(entrypoint="nowhere"))

        assert refused.value.details["field"] == "entrypoint"
        assert world.events() == []


class TestInstallNamesExactlyOneSource:
    @pytest.mark.parametrize(
        "command",
        [
            InstallPlugin(),
            InstallPlugin(archive=ZIP_V1, entrypoint="audit"),
            InstallPlugin(archive=ZIP_V1, manifest=manifest()),
            InstallPlugin(entrypoint="audit", manifest=manifest()),
        ],
        ids=["none", "archive-and-entrypoint", "archive-and-manifest", "entrypoint-and-manifest"],
    )
    async def test_refuses_no_source_or_two(self, world: World, command: InstallPlugin) -> None:
        with pytest.raises(SourceUnavailable) as refused:
            await world.run(command)

        assert refused.value.details["field"] == "source"
        assert world.store.streams == {} and world.sources.asked == []

    async def test_a_manifest_at_hand_is_recorded_with_its_source_without_asking_the_port(self, world: World) -> None:
        await world.run(InstallPlugin(manifest=manifest(), source={"kind": "bench"}))

        [(_, payload)] = world.events()
        assert payload["source"] == {"kind": "bench"} and world.sources.asked == []

    async def test_a_process_without_sources_installs_only_manifests_at_hand(self) -> None:
        world = World(sources=None)

        with pytest.raises(SourceUnavailable) as refused:
            await world.run(InstallPlugin(archive=ZIP_V1))

        assert refused.value.details["field"] == "archive"
        await world.run(InstallPlugin(manifest=manifest()))
        assert [name for name, _ in world.events()] == ["Installed"]


class TestUpdateFromAnArchive:
    async def test_records_the_archives_version_and_source(self, world: World) -> None:
        await world.run(InstallPlugin(archive=ZIP_V1))

        result = await world.run(UpdatePlugin(plugin_id=PID, archive=ZIP_V2, filename="v2.zip"))

        (_, _), (name, payload) = world.events()
        assert (name, payload["manifest"]["version"], result.version) == ("Updated", "2.0.0", 2)
        assert payload["source"] == {"kind": "file", "size": len(ZIP_V2), "filename": "v2.zip"}
        assert world.archives.stored == [ZIP_V1, ZIP_V2]

    async def test_an_archive_of_another_plugin_is_refused(self, world: World) -> None:
        await world.run(InstallPlugin(archive=ZIP_V1))

        with pytest.raises(ManifestInvalid) as refused:
            await world.run(UpdatePlugin(plugin_id=PID, archive=ZIP_OTHER))

        assert refused.value.details["field"] == "manifest.id"
        assert len(world.events()) == 1 and world.archives.stored == [ZIP_V1]

    async def test_an_archive_the_port_refuses_leaves_the_plugin_as_it_was(self, world: World) -> None:
        await world.run(InstallPlugin(archive=ZIP_V1))

        with pytest.raises(ManifestInvalid):
            await world.run(UpdatePlugin(plugin_id=PID, archive=NOT_A_ZIP))

        assert len(world.events()) == 1


class TestUpdateFromAnEntryPoint:
    async def test_records_the_entry_points_version(self, world: World) -> None:
        await world.run(InstallPlugin(archive=ZIP_V1))

        await world.run(UpdatePlugin(plugin_id=PID, entrypoint="audit"))

        (_, _), (name, payload) = world.events()
        assert (name, payload["manifest"]["version"], payload["source"]["kind"]) == ("Updated", "1.5.0", "entrypoint")

    async def test_two_sources_are_refused(self, world: World) -> None:
        await world.run(InstallPlugin(archive=ZIP_V1))

        with pytest.raises(SourceUnavailable):
            await world.run(UpdatePlugin(plugin_id=PID, archive=ZIP_V2, entrypoint="audit"))

        assert len(world.events()) == 1
