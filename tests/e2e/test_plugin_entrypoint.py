"""Installing and updating plugins from an installed distribution's `charter.plugins` entry point."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.plugin_kit import (
    MASK,
    PLUGINS,
    assert_error,
    assert_written,
    current,
    event_rows,
    event_types,
    installed,
    manifest,
    nothing_written,
    unique_id,
)


@dataclass(frozen=True)
class Distribution:
    name: str
    module: str

    def entry_point(self, attr: str | None) -> str:
        return f"{self.module}:{attr}" if attr else self.module


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str | None]], Distribution]]:
    """Builds a real distribution (a `.dist-info` folder and a module) on sys.path; removes it afterwards.

    `make(module_source, {entry point name: attribute or None for the module itself})`.
    """
    roots: list[str] = []
    modules: list[str] = []

    def make(source: str, entry_points: dict[str, str | None]) -> Distribution:
        token = uuid.uuid4().hex[:10]
        dist = Distribution(name=f"charter-e2e-{token}", module=f"charter_e2e_plugin_{token}")
        root = tmp_path / token
        info = root / f"charter_e2e_{token}-1.0.dist-info"
        info.mkdir(parents=True)
        (root / f"{dist.module}.py").write_text(source)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.name}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {dist.entry_point(attr)}\n" for name, attr in entry_points.items())
        (info / "entry_points.txt").write_text(f"[charter.plugins]\n{lines}")
        sys.path.insert(0, str(root))
        roots.append(str(root))
        modules.append(dist.module)
        importlib.invalidate_caches()
        return dist

    yield make
    for root in roots:
        sys.path.remove(root)
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


def ep_name() -> str:
    return f"e2e_ep_{uuid.uuid4().hex[:10]}"


async def install_ep(client, name: str | None, **fields):
    body = {"source": "entrypoint", **({"entrypoint": name} if name is not None else {}), **fields}
    return await client.post(f"{PLUGINS}/install", json=body)


class TestInstallFromEntryPoint:
    async def test_installs_a_manifest_dict_and_records_the_distribution(self, client, database_url, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        dist = distribution(f"MANIFEST = {manifest(pid, description='from a wheel')!r}\n", {name: "MANIFEST"})

        response = await install_ep(client, name)

        assert assert_written(response, pid, 201)["stream_version"] == 1
        assert response.headers["location"] == f"{PLUGINS}/{pid}"
        plugin = await current(client, pid)
        assert (plugin["version"], plugin["description"], plugin["status"]) == ("1.0.0", "from a wheel", "installed")
        assert plugin["source"] == {
            "kind": "entrypoint",
            "entrypoint": name,
            "value": f"{dist.module}:MANIFEST",
            "distribution": dist.name,
            "distribution_version": "1.0",
        }
        assert plugin["versions"][0]["source"] == plugin["source"]
        assert await event_types(database_url, pid) == ["Plugin.Installed"]

    async def test_installs_an_object_with_a_manifest_attribute(self, client, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        distribution(f"MANIFEST = {manifest(pid)!r}\n\ndef run():\n    return 'running'\n", {name: None})

        assert_written(await install_ep(client, name), pid, 201)

    async def test_installs_the_manifest_a_callable_returns(self, client, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        distribution(f"def describe():\n    return {manifest(pid, version='3.1.4')!r}\n", {name: "describe"})

        assert_written(await install_ep(client, name), pid, 201)

        assert (await current(client, pid))["version"] == "3.1.4"

    async def test_applies_the_initial_configuration_and_auto_enable(self, client, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        schema = {"type": "object", "properties": {"region": {"type": "string"}, "key": {"type": "string", "secret": True}}}
        distribution(f"MANIFEST = {manifest(pid, config_schema=schema)!r}\n", {name: "MANIFEST"})

        response = await install_ep(client, name, config={"region": "eu", "key": "k-1"}, auto_enable=True)

        assert_written(response, pid, 201)
        plugin = await current(client, pid)
        assert (plugin["status"], plugin["configuration"]) == ("enabled", {"region": "eu", "key": MASK})

    async def test_a_secret_given_with_an_entry_point_install_is_not_stored_in_clear(
        self, client, database_url, distribution
    ) -> None:
        pid, name, secret = unique_id("ep"), ep_name(), f"s3cr3t-{uuid.uuid4().hex}"
        schema = {"type": "object", "properties": {"key": {"type": "string", "secret": True}}}
        distribution(f"MANIFEST = {manifest(pid, config_schema=schema)!r}\n", {name: "MANIFEST"})

        assert (await install_ep(client, name, config={"key": secret})).status_code == 201

        assert all(secret not in row["payload"] for row in await event_rows(database_url, pid))

    async def test_accepts_the_version_the_entry_point_provides(self, client, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        distribution(f"MANIFEST = {manifest(pid, version='2.0.0')!r}\n", {name: "MANIFEST"})

        assert_written(await install_ep(client, name, version="2.0.0"), pid, 201)

    async def test_refuses_another_version_than_the_entry_point_provides(self, client, database_url, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        distribution(f"MANIFEST = {manifest(pid, version='2.0.0')!r}\n", {name: "MANIFEST"})

        async with nothing_written(database_url, pid):
            response = await install_ep(client, name, version="1.0.0")

        error = assert_error(response, 400, "PLUGIN_SOURCE_INVALID", field="version")
        assert "2.0.0" in error["message"]

    async def test_refuses_an_unknown_entry_point(self, client) -> None:
        response = await install_ep(client, ep_name())

        assert_error(response, 400, "PLUGIN_SOURCE_INVALID", field="entrypoint")

    async def test_refuses_a_json_install_without_an_entry_point_name(self, client) -> None:
        assert_error(await install_ep(client, None), 400, "VALIDATION_FAILED", field="entrypoint")

    async def test_refuses_an_entry_point_whose_module_fails_to_import(self, client, database_url, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        distribution(f"MANIFEST = {manifest(pid)!r}\nraise ImportError('missing native library')\n", {name: "MANIFEST"})

        async with nothing_written(database_url, pid):
            response = await install_ep(client, name)

        error = assert_error(response, 400, "PLUGIN_SOURCE_INVALID", field="entrypoint")
        assert "missing native library" in error["message"]

    async def test_refuses_an_entry_point_that_provides_no_manifest(self, client, distribution) -> None:
        name = ep_name()
        distribution("NOT_A_MANIFEST = ['a', 'list']\n", {name: "NOT_A_MANIFEST"})

        assert_error(await install_ep(client, name), 400, "PLUGIN_SOURCE_INVALID", field="entrypoint")

    async def test_refuses_an_entry_point_with_an_invalid_manifest(self, client, database_url, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        distribution(f"MANIFEST = {manifest(pid, version='one point oh')!r}\n", {name: "MANIFEST"})

        async with nothing_written(database_url, pid):
            response = await install_ep(client, name)

        assert_error(response, 400, "MANIFEST_INVALID", field="manifest.version")


class TestUpdateFromEntryPoint:
    async def test_moves_to_the_version_of_another_entry_point_keeping_the_old_one(
        self, client, database_url, distribution
    ) -> None:
        pid, v1, v2 = unique_id("ep"), ep_name(), ep_name()
        source = f"V1 = {manifest(pid, '1.0.0')!r}\nV2 = {manifest(pid, '2.0.0')!r}\n"
        dist = distribution(source, {v1: "V1", v2: "V2"})
        assert (await install_ep(client, v1)).status_code == 201

        response = await client.put(f"{PLUGINS}/{pid}", json={"source": "entrypoint", "entrypoint": v2})

        assert assert_written(response, pid)["stream_version"] == 2
        plugin = await current(client, pid)
        assert plugin["version"] == "2.0.0"
        assert [(v["version"], v["source"]["value"]) for v in plugin["versions"]] == [
            ("1.0.0", f"{dist.module}:V1"),
            ("2.0.0", f"{dist.module}:V2"),
        ]
        assert await event_types(database_url, pid) == ["Plugin.Installed", "Plugin.Updated"]

    async def test_can_move_a_plugin_installed_from_an_archive_to_an_entry_point(self, client, distribution) -> None:
        pid, name = unique_id("ep"), ep_name()
        await installed(client, manifest(pid, "1.0.0"))
        distribution(f"MANIFEST = {manifest(pid, '1.5.0')!r}\n", {name: "MANIFEST"})

        response = await client.put(f"{PLUGINS}/{pid}", json={"source": "entrypoint", "entrypoint": name})

        assert_written(response, pid)
        plugin = await current(client, pid)
        assert [v["source"]["kind"] for v in plugin["versions"]] == ["file", "entrypoint"]
