"""The dependents of a plugin are kept in a stream of their own, appended with the dependents' installs,
updates and uninstalls: given commands / when an uninstall (or an install) runs / then the streams or a
domain error, with no read model to ask. No I/O: an in-memory repository."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from application.bus import Application, RetryPolicy
from application.commands import InstallPlugin, RollBackPlugin, UninstallPlugin, UpdatePlugin
from application.context import CommandContext, CommandResult
from application.plugins.handlers import PluginServices
from domain.plugins.dependents import Dependents
from domain.plugins.errors import DependencyError, HasDependents
from domain.plugins.plugin import Plugin
from tests.unit.test_command_retry import InlineSandbox
from tests.unit.interleaving import MemoryRepository


async def no_wait(_seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def app() -> Application:
    services = PluginServices(
        repository=MemoryRepository(),  # type: ignore[arg-type]
        cipher=None,  # type: ignore[arg-type]  # no secrets in these manifests
        archives=None,  # type: ignore[arg-type]  # no archives uploaded
        host_version="1.0.0",
        sandbox=InlineSandbox(),
    )
    return Application(None, services, fingerprint_key=b"k", retry=RetryPolicy(retries=5), sleep=no_wait)  # type: ignore[arg-type]


def repository(app: Application) -> MemoryRepository:
    return app.handlers[InstallPlugin][1].repository


def manifest(plugin_id: str, version: str = "1.0.0", **dependencies: str) -> dict[str, Any]:
    return {"id": plugin_id, "name": plugin_id.title(), "version": version, "dependencies": dependencies}


async def install(app: Application, plugin_id: str, version: str = "1.0.0", **dependencies: str) -> CommandResult:
    command = InstallPlugin(manifest=manifest(plugin_id, version, **dependencies), source={"kind": "test"})
    return await app.execute(command, CommandContext())


async def uninstall(app: Application, plugin_id: str, force: bool = False) -> CommandResult:
    return await app.execute(UninstallPlugin(plugin_id=plugin_id, force=force), CommandContext())


def dependents(app: Application, plugin_id: str) -> Dependents | None:
    aggregate = None
    for event in repository(app).streams.get(f"plugin-dependents:{plugin_id}", []):
        aggregate = event.mutate(aggregate)
    return aggregate


def events(app: Application, plugin_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The dependents stream's events as (type, payload)."""
    stream = repository(app).streams.get(f"plugin-dependents:{plugin_id}", [])
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if not k.startswith("originator") and k != "timestamp"})
        for e in stream
    ]


def plugin(app: Application, plugin_id: str) -> Plugin | None:
    aggregate = None
    for event in repository(app).streams.get(f"plugin:{plugin_id}", []):
        aggregate = event.mutate(aggregate)
    return aggregate


def sizes(app: Application) -> dict[str, int]:
    return {stream: len(events) for stream, events in repository(app).streams.items()}


class TestInstall:
    async def test_records_the_dependent_in_each_dependencys_stream(self, app) -> None:
        await install(app, "storage")
        await install(app, "cache")

        await install(app, "reports", storage=">=1", cache="")

        assert dependents(app, "storage").dependents == ["reports"]
        assert dependents(app, "cache").dependents == ["reports"]
        assert dependents(app, "reports") is None  # a plugin nothing depends on has no such stream

    async def test_refuses_a_dependency_that_is_not_installed_and_writes_nothing(self, app) -> None:
        await install(app, "storage")
        await uninstall(app, "storage")
        before = sizes(app)

        with pytest.raises(DependencyError):
            await install(app, "reports", storage=">=1")

        assert sizes(app) == before

    async def test_opens_the_stream_of_a_dependency_installed_before_dependents_were_kept(self, app) -> None:
        legacy = repository(app).new("plugin", "storage")
        legacy.aggregate = Plugin(plugin_id="storage", manifest=manifest("storage", "2.0.0"), source={}, config={}, enabled=True)
        await repository(app).save(legacy, {})

        await install(app, "reports", storage=">=2")

        assert dependents(app, "storage").dependents == ["reports"]
        with pytest.raises(HasDependents):
            await uninstall(app, "storage")


class TestUninstall:
    async def test_refuses_while_an_installed_plugin_depends_on_it_naming_them(self, app) -> None:
        await install(app, "storage")
        await install(app, "reports", storage=">=1")
        await install(app, "audit", storage="")
        before = sizes(app)

        with pytest.raises(HasDependents) as refused:
            await uninstall(app, "storage")

        assert refused.value.details == {"dependents": ["audit", "reports"]}
        assert sizes(app) == before
        assert plugin(app, "storage").installed

    async def test_passes_once_the_dependents_are_uninstalled(self, app) -> None:
        await install(app, "storage")
        await install(app, "reports", storage=">=1")
        await uninstall(app, "reports")

        await uninstall(app, "storage")

        assert not plugin(app, "storage").installed
        assert dependents(app, "storage").dependents == []
        assert events(app, "storage")[-1] == ("Uninstalled", {"remaining": []})

    async def test_forced_it_goes_and_the_dependents_stay_listed(self, app) -> None:
        await install(app, "storage")
        await install(app, "reports", storage=">=1")

        await uninstall(app, "storage", force=True)

        assert not plugin(app, "storage").installed
        assert dependents(app, "storage").dependents == ["reports"]
        assert events(app, "storage")[-1] == ("Uninstalled", {"remaining": ["reports"]})
        await install(app, "storage")
        with pytest.raises(HasDependents):
            await uninstall(app, "storage")

    async def test_an_uninstall_and_an_install_that_needs_it_at_once_never_both_pass(self, app) -> None:
        for round_ in range(10):
            base, child = f"base-{round_}", f"child-{round_}"
            await install(app, base)

            outcomes = await asyncio.gather(uninstall(app, base), install(app, child, **{base: ""}), return_exceptions=True)

            errors = [type(o).__name__ for o in outcomes if isinstance(o, Exception)]
            assert errors in (["HasDependents"], ["DependencyError"]), outcomes
            assert plugin(app, base).installed or plugin(app, child) is None


class TestUpdateAndRollBack:
    async def test_an_update_that_drops_a_dependency_leaves_its_stream_and_a_rollback_joins_again(self, app) -> None:
        await install(app, "storage")
        await install(app, "cache")
        await install(app, "reports", storage=">=1")
        ctx = CommandContext()

        await app.execute(UpdatePlugin(plugin_id="reports", manifest=manifest("reports", "2.0.0", cache=""), source={}), ctx)

        assert (dependents(app, "storage").dependents, dependents(app, "cache").dependents) == ([], ["reports"])
        await uninstall(app, "storage")

        with pytest.raises(DependencyError):
            await app.execute(RollBackPlugin(plugin_id="reports"), ctx)

        await install(app, "storage")
        await app.execute(RollBackPlugin(plugin_id="reports"), ctx)
        assert (dependents(app, "storage").dependents, dependents(app, "cache").dependents) == (["reports"], [])


class TestDependentsAggregate:
    def test_refuses_to_let_the_plugin_go_while_dependents_remain(self) -> None:
        stream = Dependents(plugin_id="storage")
        stream.add("reports")

        with pytest.raises(HasDependents) as refused:
            stream.uninstall(force=False)

        assert refused.value.details == {"dependents": ["reports"]}
        stream.uninstall(force=True)
        assert stream.dependents == ["reports"]

    def test_adds_and_removes_each_dependent_once(self) -> None:
        stream = Dependents(plugin_id="storage")

        assert [stream.add("reports"), stream.add("reports"), stream.add("audit")] == [True, False, True]
        assert stream.dependents == ["audit", "reports"]
        assert [stream.remove("reports"), stream.remove("reports")] == [True, False]
        assert stream.dependents == ["audit"]
